"""The router: authenticate, pick a version, pick a replica (or queue), forward, and scale.

A plain ASGI app: the scoring path is the hot path and carries no framework middleware.
Routes:
  POST /api/v1/service/<name>/score      GET /api/v1/service/<name>/swagger.json
  POST /api/v1/endpoint/<name>/score     GET /api/v1/endpoint/<name>/swagger.json
  GET /healthz (process up)  GET /readyz (every version has a ready replica; JSON status)
  GET /metrics (Prometheus)  GET /internal/load (in-flight + queued per deployment, for the scaling leader)
The configuration file is re-read when it changes: routes are swapped whole, pools are kept by
deployment, so a new version or a new split drops no request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router_image import metrics
from router_image.auth import AuthError, Authenticator
from router_image.autoscale import SAMPLE_S, Autoscaler
from router_image.backends import Backend, backend_for
from router_image.config import RouteConfig, RouterConfig, VersionConfig
from router_image.pool import NoReplicas, QueueTimeout, ReplicaPool
from router_image.traffic import PIN_HEADER, TrafficSplit

log = logging.getLogger("router")
MAX_BODY_BYTES = 100 * 1024 * 1024  # Azure ML's payload limit
CONFIG_POLL_S = 1.0
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-authorization", b"proxy-authenticate", b"host", b"content-length", b"authorization"}
VERSION_HEADER = PIN_HEADER.encode()


@dataclass
class VersionState:
    config: VersionConfig
    pool: ReplicaPool
    labels: tuple[str, str, str, str]
    autoscaler: Autoscaler | None = None


@dataclass
class RouteState:
    config: RouteConfig
    split: TrafficSplit
    versions: dict[str, VersionState]


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or []


def _role(route: RouteConfig, v: VersionConfig) -> str:
    if route.kind == "service":
        return "service"
    return "control" if v.is_control else "treatment"


class Router:
    def __init__(self, config: RouterConfig, config_path: str | None = None, backend: Backend | None = None):
        self.config = config
        self.config_path = config_path
        self.backend = backend or backend_for(config)
        self.auth = Authenticator(config.keys_dir, config.token)
        self.pools: dict[str, ReplicaPool] = {}
        self.routes: dict[tuple[str, str], RouteState] = {}
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._config_stamp = self._stamp()
        self._build(config)

    # ------------------------------------------------------------ configuration

    def _stamp(self) -> float | None:
        try:
            return os.stat(self.config_path).st_mtime if self.config_path else None
        except OSError:
            return None

    def _build(self, config: RouterConfig) -> None:
        """Route states for `config`, reusing each deployment's pool (and its in-flight counts)."""
        routes: dict[tuple[str, str], RouteState] = {}
        pools: dict[str, ReplicaPool] = {}
        old_scalers = {v.config.deployment: v.autoscaler for r in self.routes.values() for v in r.versions.values()}
        for route in config.routes:
            versions = {}
            for v in route.versions:
                pool = self.pools.get(v.deployment) or ReplicaPool()
                pool.slots_per_replica = v.replica_max_concurrent_requests
                pool.max_wait_s = v.max_request_wait_time_ms / 1000
                pools[v.deployment] = pool
                scaler = None
                if config.autoscale_enabled and v.autoscale.enabled:
                    scaler = old_scalers.get(v.deployment) or Autoscaler(v.autoscale, pool, self.backend.replicas(v.deployment)
                                                                         or v.autoscale.min_replicas)
                    scaler.config = v.autoscale
                versions[v.name] = VersionState(v, pool, (route.kind, route.name, v.name, _role(route, v)), scaler)
            split = TrafficSplit.of([(v.name, v.traffic_percentile, v.is_default) for v in route.versions])
            routes[(route.kind, route.name)] = RouteState(route, split, versions)
        self.config, self.pools, self.routes = config, pools, routes

    async def reload(self) -> bool:
        """Re-read the config file; keep the running config when the new one is not valid."""
        try:
            config = RouterConfig.load(self.config_path)  # type: ignore[arg-type]
        except Exception as exc:  # a half-written or invalid file must not stop the router
            log.error("config %s not applied: %s", self.config_path, exc)
            return False
        self._build(config)
        await self.backend.apply([v for r in config.routes for v in r.versions])
        log.info("config reloaded: %d routes", len(config.routes))
        return True

    # ------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        await self.backend.start(self._on_ready)
        await self.backend.apply([v for r in self.config.routes for v in r.versions])
        for r in self.routes.values():
            for v in r.versions.values():
                if v.autoscaler is not None:
                    v.autoscaler.current = self.backend.replicas(v.config.deployment) or v.autoscaler.current
        self._tasks = [asyncio.create_task(self._autoscale()), asyncio.create_task(self._readmit())]
        if self.config_path:
            self._tasks.append(asyncio.create_task(self._watch_config()))

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.backend.stop()
        if self.session:
            await self.session.close()

    def _on_ready(self, deployment: str, addresses: list[str]) -> None:
        pool = self.pools.get(deployment)
        if pool is not None:
            pool.set_addresses(addresses)

    async def _autoscale(self) -> None:
        """Only the backend's leader scales, on the demand of every router pod; a new leader
        starts from the Deployments' counts."""
        last: dict[int, float] = {}
        was_leader = False
        while True:
            await asyncio.sleep(SAMPLE_S)
            now = time.monotonic()
            leader = self.backend.is_leader
            if leader and not was_leader:
                for r in list(self.routes.values()):
                    for v in r.versions.values():
                        if v.autoscaler is not None:
                            v.autoscaler.resume(self.backend.replicas(v.config.deployment) or v.autoscaler.current)
            was_leader = leader
            for r in list(self.routes.values()):
                for v in r.versions.values():
                    metrics.QUEUED.labels(*v.labels).set(v.pool.queued)
                    metrics.REPLICAS.labels(*v.labels).set(v.pool.ready)
                    s = v.autoscaler
                    if s is None or not leader:
                        continue
                    s.sample(self.backend.remote_demand(v.config.deployment))
                    if now - last.get(id(s), 0) < s.config.refresh_seconds:
                        continue
                    last[id(s)] = now
                    decision = s.decide(now)
                    metrics.UTILIZATION.labels(*v.labels).set(s.utilization)
                    metrics.DESIRED.labels(*v.labels).set(s.current)
                    if decision is not None:
                        direction = "up" if decision.desired > decision.current else "down"
                        metrics.SCALINGS.labels(*v.labels, direction).inc()
                        log.info("scale %s %s: %d -> %d replicas (%s)", r.config.name, v.config.name,
                                 decision.current, decision.desired, decision.reason)
                        await self.backend.scale(v.config.deployment, decision.desired)

    async def _readmit(self) -> None:
        """Ejected replicas come back once their readiness check passes."""
        while True:
            await asyncio.sleep(0.5)
            for pool in list(self.pools.values()):
                for replica in [r for r in pool.replicas.values() if r.ejected]:
                    if await self.backend.probe(replica.address):
                        pool.readmit(replica.address)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_S)
            stamp = self._stamp()
            if stamp is not None and stamp != self._config_stamp:
                self._config_stamp = stamp
                await self.reload()

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        try:
            if path.startswith("/api/v1/"):
                await self._api(scope, receive, send, path)
            elif path == "/healthz":
                await _json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                status = self.status()
                await _json(send, 200 if status["ready"] else 503, status)
            elif path == "/internal/load":
                await _json(send, 200, self.load())
            elif path == "/metrics":
                await _respond(send, 200, generate_latest(metrics.REGISTRY), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
            else:
                raise HttpError(404, "NotFound", f"no route {path}")
        except HttpError as exc:
            await _json(send, exc.status, {"error": {"code": exc.code, "message": str(exc)}}, exc.headers)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def load(self) -> dict[str, int]:
        """In-flight + queued requests per deployment: what the scaling leader adds to its own demand."""
        return {d: p.busy_slots + p.queued for d, p in self.pools.items()}

    def status(self) -> dict[str, Any]:
        routes = []
        for (kind, name), r in self.routes.items():
            versions = [{"name": v.config.name, "deployment": v.config.deployment, "ready": v.pool.ready,
                         "replicas": self.backend.replicas(v.config.deployment), "in_flight": v.pool.busy_slots,
                         "queued": v.pool.queued, "traffic_percentile": v.config.traffic_percentile,
                         "is_default": v.config.is_default} for v in r.versions.values()]
            routes.append({"kind": kind, "name": name, "versions": versions})
        ready = all(v["ready"] > 0 for r in routes for v in r["versions"])
        return {"ready": ready, "routes": routes}

    async def _api(self, scope: dict, receive, send, path: str) -> None:
        parts = path.split("/")  # ['', 'api', 'v1', kind, name, action]
        if len(parts) != 6 or parts[3] not in ("service", "endpoint"):
            raise HttpError(404, "NotFound", f"no route {path}")
        kind, name, action = parts[3], parts[4], parts[5]
        route = self.routes.get((kind, name))
        if route is None:
            raise HttpError(404, "NotFound", f"no {kind} named {name!r}")
        headers = dict(scope["headers"])
        if action == "swagger.json":
            version = route.versions[route.split.default]
            await self._forward(scope, receive, send, route, version, "/swagger.json")
            return
        if action != "score":
            raise HttpError(404, "NotFound", f"no route {path}")
        try:
            self.auth.check(route.config, headers.get(b"authorization"))
        except AuthError as exc:
            raise HttpError(401, "Unauthorized", str(exc), [(b"www-authenticate", exc.challenge.encode())]) from None
        pinned = headers.get(VERSION_HEADER)
        version_name = route.split.pick(pinned.decode() if pinned else None)
        version = route.versions.get(version_name)
        if version is None:
            raise HttpError(404, "UnknownVersion", f"{kind} {name} has no version {version_name!r}")
        await self._forward(scope, receive, send, route, version, "/score")

    async def _forward(self, scope: dict, receive, send, route: RouteState, v: VersionState, upstream_path: str) -> None:
        started = time.perf_counter()
        status = 500
        body = await _read_body(receive)
        pool = v.pool
        try:
            try:
                replica = await pool.acquire()
            except QueueTimeout:
                status = 503
                raise HttpError(503, "TooManyRequests", f"all replicas of {v.config.name} busy for "
                                f"{v.config.max_request_wait_time_ms} ms", [(b"retry-after", b"1")]) from None
            except NoReplicas:
                status = 503
                raise HttpError(503, "NoReadyReplicas", f"no ready replica of {v.config.name}", [(b"retry-after", b"5")]) from None
            metrics.IN_FLIGHT.labels(*v.labels).inc()
            try:
                status = await self._proxy(scope, send, v, replica, body, upstream_path)
            finally:
                metrics.IN_FLIGHT.labels(*v.labels).dec()
        except HttpError as exc:
            status = exc.status
            raise
        finally:
            metrics.REQUESTS.labels(*v.labels, str(status)).inc()
            metrics.LATENCY.labels(*v.labels).observe(time.perf_counter() - started)

    async def _proxy(self, scope: dict, send, v: VersionState, replica, body: bytes, upstream_path: str) -> int:
        """One request to a replica; a replica that refuses the connection is ejected and the
        request goes to another (nothing was sent, so the retry is safe)."""
        assert self.session is not None
        pool = v.pool
        headers = [(k.decode("latin-1"), val.decode("latin-1")) for k, val in scope["headers"] if k not in HOP_BY_HOP]
        query = scope.get("query_string", b"")
        timeout = v.config.scoring_timeout_ms / 1000
        response_started = False
        tries = 0
        try:
            while True:
                url = replica.url + upstream_path + (("?" + query.decode("latin-1")) if query else "")
                try:
                    async with asyncio.timeout(timeout):
                        async with self.session.request(scope["method"], url, data=body, headers=headers,
                                                        allow_redirects=False) as resp:
                            out = [(k.lower(), val) for k, val in resp.raw_headers if k.lower() not in HOP_BY_HOP]
                            out.append((VERSION_HEADER, v.config.name.encode()))
                            length = resp.headers.get("Content-Length")
                            if length is not None:
                                out.append((b"content-length", length.encode()))
                            await send({"type": "http.response.start", "status": resp.status, "headers": out})
                            response_started = True
                            async for chunk in resp.content.iter_any():
                                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                            await send({"type": "http.response.body", "body": b""})
                            return resp.status
                except aiohttp.ClientConnectorError:
                    tries += 1
                    pool.eject(replica)
                    pool.release(replica)
                    replica = None
                    log.warning("replica refused the connection; ejected it and retrying")
                    if tries > 2:
                        raise HttpError(502, "ReplicaUnavailable", "replicas refused the connection") from None
                    try:
                        replica = await pool.acquire()
                    except (QueueTimeout, NoReplicas):
                        raise HttpError(503, "NoReadyReplicas", f"no ready replica of {v.config.name}",
                                        [(b"retry-after", b"1")]) from None
                except TimeoutError:
                    if response_started:
                        raise
                    raise HttpError(504, "ScoringTimeout", f"the replica took longer than {v.config.scoring_timeout_ms} ms") from None
                except aiohttp.ClientError as exc:
                    if response_started:
                        raise
                    raise HttpError(502, "ReplicaClosedConnection", f"the replica broke the connection: {type(exc).__name__}") from None
        finally:
            if replica is not None:
                pool.release(replica)


async def _read_body(receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json"), *(headers or [])])


def load(path: str | Path) -> Router:
    return Router(RouterConfig.load(path), str(path))
