"""The router: authenticate, pick a version, pick a replica (or queue), forward, and scale.

A plain ASGI app: the scoring path is the hot path and carries no framework middleware; a
whole-body score POST does not even go through ASGI (`Router.claim` and `answer`, relay.py).
Routes:
  POST /api/v1/service/<name>/score      GET (HEAD) /api/v1/service/<name>/swagger.json
  POST /api/v1/endpoint/<name>/score     GET (HEAD) /api/v1/endpoint/<name>/swagger.json
  GET /healthz (process up, its loops running)   GET /readyz (JSON status; 200 locally once every version has a ready
  replica, on kubernetes once every version's replicas have been listed)
  GET /metrics (Prometheus)   GET /internal/load (for the scaling leader: in-flight + queued per
  deployment, and the pod's own CPU and routing latency; with the peers' secret when one is set)
Version pinning: request header `azureml-model-deployment: <version>` (Azure ML's online
endpoint header); every answer from a replica carries the same header naming the version.
The config file is re-read when it changes (see RouteTable for why that drops nothing).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router_image import cors, metrics
from router_image.auth import KEY_RELOAD_S, AuthError, Authenticator, stamp_of
from router_image.autoscale import SAMPLE_S, Autoscaler, Decision, OwnLoad, PodLoad, RouterScaler
from router_image.backends import Backend, backend_for
from router_image.config import RESTART_FIELDS, RouterConfig
from router_image.pool import ReplicaPool
from router_image.proxy import REPEATED_AUTHORIZATION, REPEATED_PIN, forward, request_lines
from router_image.relay import CLIENT_GONE, Deadlines, Relay
from router_image.responses import HttpError, error_answer, respond, respond_error, respond_json
from router_image.routes import RouteState, RouteTable, VersionState
from router_image.tls import ServingCertificate
from http_server import Request
from router_image.traffic import PIN_HEADER

log = logging.getLogger("router")
CONFIG_POLL_S = 1.0
READMIT_EVERY_S = 0.5
SCALE_RETRY_S = 5.0  # after a scale the backend did not apply (API error, count unknown)
LOAD_PATH = "/internal/load"
_GET_ONLY = frozenset(("/healthz", "/readyz", "/metrics", LOAD_PATH))  # read, never changed: a 405 for other methods
# A score route takes GET as Azure ML's raw (rawhttp) scripts do, its query passed on, and OPTIONS: browsers' CORS
# preflights, which the router answers (cors.py), or a call with credentials as any other.
SCORE_METHODS = ("POST", "GET", "OPTIONS")


class Router:
    def __init__(self, config: RouterConfig, config_path: str | None = None, backend: Backend | None = None):
        self.config_path = config_path
        self.backend = backend or backend_for(config)
        self.auth = Authenticator(config.keys_dir, config.token)
        self.table = RouteTable.build(config)
        self.table.take_effect()
        self._ready: dict[str, list[str]] = {}  # the backend's latest ready addresses per deployment
        self.deadlines = Deadlines()
        self.own_load = OwnLoad()
        self.router_scaler = RouterScaler(config.router_scale, 0) if config.router_scale else None
        self._tasks: list[asyncio.Task] = []
        self._retry_at: dict[str, float] = {}  # deployment -> when scaling it is tried again
        self._scaling: dict[str, asyncio.Task] = {}  # deployment -> its latest scale, applied aside (_start_scale)
        self._unapplied: dict[str, tuple[int, int]] = {}  # deployment -> the change (from, to) its backend did not make
        self._config_stamp = self._stamp()
        self.certificate = ServingCertificate(config.tls) if config.tls else None
        self._peers_secret_unusable = False  # its warning logged, until it is usable again
        self.config_error: str | None = None  # why the file's latest content is not applied (in /readyz)
        self.config_digest = config.digest()  # which config is applied (in /readyz)

    @property
    def config(self) -> RouterConfig:
        return self.table.config

    @property
    def routes(self) -> dict[tuple[str, str], RouteState]:
        return self.table.routes

    @property
    def pools(self) -> dict[str, ReplicaPool]:
        return self.table.pools

    # ------------------------------------------------------------ configuration

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            return stamp_of(os.stat(self.config_path)) if self.config_path else None
        except OSError:
            return None

    async def reload(self, *, quiet: bool = False) -> bool:
        """Re-read the config file and apply all of it or nothing: the authenticator, route table and
        router scaler are built, the backend takes the versions, and only then are they swapped in.
        Any failure (an invalid file, a key file not mounted yet, the backend refusing) keeps the
        running config and is logged (`quiet`: not again, for a retry of the same file)."""
        try:
            config = RouterConfig.load(self.config_path)  # type: ignore[arg-type]
            restart = [f for f in RESTART_FIELDS if getattr(config, f) != getattr(self.config, f)]
            if (config.tls is None) != (self.config.tls is None):
                restart.append("tls")
            if restart:
                raise ValueError(f"{', '.join(restart)} changed, which takes effect only when the router restarts")
            if config.tls is not None and config.tls != self.config.tls:
                ServingCertificate(config.tls)  # the new pair loads, or the reload stops here
            auth = self.auth
            if (config.keys_dir, config.token) != (self.config.keys_dir, self.config.token):
                auth = Authenticator(config.keys_dir, config.token)
            table = RouteTable.build(config, self.table)
            router_scaler = self.router_scaler
            if config.router_scale is None:
                router_scaler = None
            elif router_scaler is None or router_scaler.config != config.router_scale:
                current = router_scaler.current if router_scaler else self.backend.replicas(config.router_scale.deployment)
                router_scaler = RouterScaler(config.router_scale, current)
            await self.backend.apply(table.versions())
        except Exception as exc:  # a bad file, or one landing before what it names, must not stop the router
            self.config_error = str(exc)
            if not quiet:
                log.error("config %s not applied: %s", self.config_path, exc)
            return False
        self.config_error = None
        self.config_digest = config.digest()
        for deployment, scaler in table.autoscalers.items():
            if deployment not in self.table.autoscalers:  # starts from what the backend now runs
                scaler.resume(self.backend.replicas(deployment))
        if self.certificate is not None and config.tls is not None:
            self.certificate.use(config.tls)
        if router_scaler is not self.router_scaler:  # the leader sets it again for the new one, if any
            metrics.ROUTER_DESIRED.clear()
        gone = _deployments(self.table, self.router_scaler) - _deployments(table, router_scaler)
        old, self.table, self.auth, self.router_scaler = self.table, table, auth, router_scaler
        table.take_effect()
        metrics.forget(old.labels() - table.labels(), old.labels(scaled_only=True) - table.labels(scaled_only=True),
                       old.routes.keys() - table.routes.keys())
        metrics.forget_deployments(gone)
        for deployment in gone:  # kept, every deploy's renamed Deployments stayed until a restart
            self._ready.pop(deployment, None)
            self._retry_at.pop(deployment, None)
            self._unapplied.pop(deployment, None)
            if (task := self._scaling.pop(deployment, None)) is not None:
                task.cancel()  # one on its way: a count for a Deployment no longer scaled, its end not recorded (_scale)
        for deployment, pool in old.pools.items():
            if deployment not in table.pools:
                pool.retire()  # its queued requests go where the new config sends them
        for deployment, pool in table.pools.items():  # what the backend said of them while not yet routed
            if deployment not in old.pools:
                pool.set_addresses(self._ready.get(deployment, []))
        log.info("config reloaded: %d routes", len(config.routes))
        return True

    async def _watch_config(self) -> None:
        """Apply each change of the config file. One that did not apply is tried again at every poll
        until it does or the file changes (a ConfigMap update may land before the Secret holding a
        file it names), its error logged once."""
        pending = False  # the file at _config_stamp has not applied
        while True:
            await asyncio.sleep(CONFIG_POLL_S)
            stamp = self._stamp()
            if stamp is None or (stamp == self._config_stamp and not pending):
                continue
            retry = stamp == self._config_stamp
            self._config_stamp = stamp
            pending = not await self.reload(quiet=retry)

    async def _watch_credentials(self) -> None:
        """Re-read the key files and token keys that changed, in a thread: inside a request, once a second, listing
        the key folder held that request (and the loop) 0.5 ms with 100 routes, 5 ms with 1000."""
        told = None
        while True:
            await asyncio.sleep(KEY_RELOAD_S)
            try:
                await asyncio.to_thread(self.auth.refresh)
                told = None
            except Exception as exc:  # a file that does not load: ending the loop fails /healthz, and a restart refuses it
                if str(exc) != told:
                    log.error("credentials not re-read, the last ones read stay in use until the files change: %s", exc)
                    told = str(exc)

    async def _watch_certificate(self) -> None:
        assert self.certificate is not None
        while True:
            await asyncio.sleep(CONFIG_POLL_S)
            self.certificate.refresh()

    # ------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        await self.backend.start(self._on_ready)
        await self.backend.apply(self.table.versions())
        for deployment, scaler in self.table.autoscalers.items():
            scaler.current = self.backend.replicas(deployment)
        if self.router_scaler is not None:
            self.router_scaler.resume(self.backend.replicas(self.router_scaler.config.deployment))
        loops = {"autoscale": self._autoscale(), "readmit": self._readmit(), "scoring timeouts": self.deadlines.run(),
                 "credentials watch": self._watch_credentials()}
        if self.config_path:
            loops["config watch"] = self._watch_config()
        if self.certificate is not None:
            loops["certificate watch"] = self._watch_certificate()
        self._tasks = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
        for task in self._tasks:
            task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """Each loop runs until shutdown, so one that ends has raised: a router that goes on routing but
        no longer scales (or times out requests, or reloads) fails /healthz and is restarted, and the
        error is logged now rather than when the task is collected."""
        if not task.cancelled() and task.exception() is not None:
            log.error("the router's %s loop stopped; /healthz now fails", task.get_name(), exc_info=task.exception())

    def stopped_loops(self) -> list[str]:
        return [task.get_name() for task in self._tasks if task.done() and not task.cancelled()]

    async def shutdown(self) -> None:
        for task in [*self._tasks, *self._scaling.values()]:
            task.cancel()
        await self.backend.stop()
        metrics.LEADER.set(0)  # the backend handed the lead over
        for pool in self.table.pools.values():
            pool.set_addresses([])

    def _on_ready(self, deployment: str, addresses: list[str]) -> None:
        self._ready[deployment] = addresses  # a reload's new pools start from it (reload)
        pool = self.table.pools.get(deployment)
        if pool is not None:
            pool.set_addresses(addresses)

    async def _autoscale(self) -> None:
        """Sample every version's demand; only the backend's leader (always, locally) scales, on
        the demand of every router pod, and a new leader starts from the Deployments' counts."""
        was_leader = False
        while True:
            due = time.monotonic() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            now = time.monotonic()
            self.own_load.sample(now - due, now)  # how late the loop ran this timer: routing latency
            own = self.own_load.figures()
            metrics.ROUTER_CPU.set(own.cpu_cores)
            metrics.ROUTING_LATENCY.set(own.routing_latency_ms / 1000)
            table = self.table
            leader = self.backend.is_leader
            if leader and not was_leader:
                for deployment, scaler in table.autoscalers.items():
                    scaler.resume(self.backend.replicas(deployment))
                if self.router_scaler is not None:
                    self.router_scaler.resume(self.backend.replicas(self.router_scaler.config.deployment))
            elif was_leader and not leader:  # its last figures would stand beside the new leader's for ever
                metrics.forget(set(), table.labels(scaled_only=True), set())
                metrics.ROUTER_DESIRED.clear()
            if leader != was_leader:
                metrics.LEADER.set(leader)
            was_leader = leader
            if leader and self.router_scaler is not None:
                await self._scale_routers(self.router_scaler, own, now)
            for route in table.routes.values():
                for v in route.versions.values():
                    pool, version_scaler = v.pool, table.autoscalers.get(v.config.deployment)
                    metrics.QUEUED.labels(*v.labels).set(pool.queued)
                    metrics.IN_FLIGHT.labels(*v.labels).set(pool.busy_slots)
                    metrics.REPLICAS.labels(*v.labels).set(pool.ready)
                    if version_scaler is not None and leader:  # a follower's scalers do not sample
                        metrics.UTILIZATION.labels(*v.labels).set(version_scaler.utilization)
                        metrics.DESIRED.labels(*v.labels).set(version_scaler.current)
            for deployment, scaler in table.autoscalers.items():
                pool = table.pools[deployment]
                if not leader or self._held(deployment, now):
                    continue
                self._follow_count(scaler, deployment)
                demand = pool.busy_slots + pool.queued + self.backend.remote_demand(deployment)
                decision = scaler.observe(demand, now, starting=max(scaler.current - pool.ready, 0))
                if decision is None:
                    continue
                if self._decided_anew(deployment, decision):
                    for route in table.routes.values():
                        for v in route.versions.values():
                            if v.config.deployment == deployment:
                                metrics.SCALINGS.labels(*v.labels, decision.direction).inc()
                    log.info("scale %s %s: %d -> %d replicas (%s)", deployment, decision.direction,
                             decision.current, decision.desired, decision.reason)
                self._start_scale(scaler, deployment, decision.desired)

    async def _scale_routers(self, scaler: RouterScaler, own: PodLoad, now: float) -> None:
        """The leader sizes the router Deployment on every pod's CPU and routing latency."""
        if self._held(scaler.config.deployment, now):
            return
        self._follow_count(scaler, scaler.config.deployment)
        decision = scaler.observe([own, *self.backend.router_pods()], now)
        metrics.ROUTER_DESIRED.labels(scaler.config.deployment).set(scaler.current)
        if decision is None:
            return
        if self._decided_anew(scaler.config.deployment, decision):
            metrics.ROUTER_SCALINGS.labels(decision.direction).inc()
            log.info("scale router %s: %d -> %d pods (%s)", decision.direction, decision.current, decision.desired,
                     decision.reason)
        self._start_scale(scaler, scaler.config.deployment, decision.desired)

    def _follow_count(self, scaler: Autoscaler | RouterScaler, deployment: str) -> None:
        """A count set outside the router (kubectl scale, a GitOps apply), as the backend last read it: the
        scaler goes on from there, so the count comes back within its bounds as its policy says (a version
        scaled to 0 is back at once, one scaled out comes in after the scale-down delay)."""
        actual = self.backend.replicas(deployment)
        if actual != scaler.current:
            log.info("deployment %s: %d replicas, set outside the router (it counted %d); scaling from there",
                     deployment, actual, scaler.current)
            scaler.resume(actual)

    def _decided_anew(self, deployment: str, decision: Decision) -> bool:
        """Whether a decision is a change to count and log, not the one the backend did not make (see its log, and
        router_scale_failures_total), decided again from the same count: every SCALE_RETRY_S while its API failed or
        its count could not be read (read as 0), it was logged and counted as a new one."""
        return self._unapplied.get(deployment) != (decision.current, decision.desired)

    def _held(self, deployment: str, now: float) -> bool:
        """No decision for a Deployment while its last scale is being applied (its scaler counts the new
        count, the backend still the old one), nor for SCALE_RETRY_S after one that was not."""
        task = self._scaling.get(deployment)
        return (task is not None and not task.done()) or now < self._retry_at.get(deployment, 0.0)

    def _start_scale(self, scaler: Autoscaler | RouterScaler, deployment: str, replicas: int) -> None:
        """Applied aside from the sampling loop: a scale call may take the API's timeout, twice on a conflict,
        and awaited in the loop it held back every other Deployment's decision (and the router's own)."""
        task = asyncio.create_task(self._scale(scaler, deployment, replicas), name=f"scaling {deployment}")
        task.add_done_callback(self._scale_ended)
        self._scaling[deployment] = task

    def _scale_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def _scale(self, scaler: Autoscaler | RouterScaler, deployment: str, replicas: int) -> None:
        """A count the backend did not apply (see its log, or the error) is not believed: the scaler starts
        again from the real count, after SCALE_RETRY_S (not every sample against a failing API)."""
        try:
            await self.backend.scale(deployment, replicas)
        finally:
            if self._scaling.get(deployment) is asyncio.current_task():  # else a reload dropped the Deployment meanwhile
                actual = self.backend.replicas(deployment)
                if actual != replicas:
                    scaler.resume(actual)
                    self._retry_at[deployment] = time.monotonic() + SCALE_RETRY_S
                    self._unapplied[deployment] = (actual, replicas)
                else:
                    self._unapplied.pop(deployment, None)

    async def _readmit(self) -> None:
        """Ejected replicas come back once their readiness check passes."""
        while True:
            await asyncio.sleep(READMIT_EVERY_S)
            for pool in list(self.table.pools.values()):
                for replica in [r for r in pool.replicas.values() if r.ejected]:
                    if await self.backend.probe(replica.address):
                        log.info("replica %s ready again; readmitted", replica.address)
                        pool.readmit(replica.address)

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except HttpError as exc:
                await respond_error(send, exc, scope)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict, receive, send) -> None:
        path: str = scope["path"]
        if path.startswith("/api/v1/"):
            route, action = self._route(path)
            try:
                await self._api(scope, receive, send, route, action)
            except HttpError as exc:  # counted under its route (one a path names none of, in __call__)
                await respond_error(send, exc, scope, route.labels)
        elif path in _GET_ONLY and scope["method"] not in ("GET", "HEAD"):
            raise HttpError(405, "MethodNotAllowed", f"{scope['method']} is not allowed on {path}",
                            [(b"allow", b"GET, HEAD")])
        elif path == "/healthz":
            stopped = self.stopped_loops()
            await respond_json(send, 503 if stopped else 200, {"status": "failing", "stopped": stopped} if stopped
                               else {"status": "ok"})
        # On a cluster these share the public port: its routes, replica addresses and load are told only
        # to holders of the peers' secret (Prometheus: a bearer credentials file); a probe needs the status.
        elif path == "/readyz":
            # A probe's answer is made without the status: anyone may ask, and it grows with the routes.
            status = self.status() if self._peer_allowed(scope["headers"]) else {"ready": self.ready()}
            await respond_json(send, 200 if status["ready"] else 503, status)
        elif path == "/metrics" and self._peer_allowed(scope["headers"]):
            await respond(send, 200, generate_latest(metrics.REGISTRY), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
        elif path == LOAD_PATH and self._peer_allowed(scope["headers"]):
            own = self.own_load.figures()
            await respond_json(send, 200, {"demand": self.table.demand(), "cpu_cores": own.cpu_cores,
                                           "routing_latency_ms": own.routing_latency_ms})
        else:
            raise HttpError(404, "NotFound", f"no route {path}")

    def _peer_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Only peers read the load when the config names their secret (compared in constant time); a
        secret file that is missing or empty admits nobody."""
        peers = self.config.peers
        sent = [v for k, v in headers if k == b"authorization"]
        if peers is not None and peers.secret_file and not sent:  # no file read for anonymous callers
            return False
        try:
            secret = peers.secret() if peers is not None else None
        except (OSError, ValueError) as exc:
            if not self._peers_secret_unusable:  # once, not at each request: anyone may ask, and flood the log
                log.warning("peers' secret not usable: %s", exc)
            self._peers_secret_unusable = True
            return False
        if self._peers_secret_unusable:
            self._peers_secret_unusable = False
            log.info("peers' secret usable again")
        if secret is None:
            return True
        return len(sent) == 1 and hmac.compare_digest(sent[0], b"Bearer " + secret)

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

    def ready(self) -> bool:
        """Locally, every version can answer (what `local up` waits for). A router pod is ready once it
        knows the replicas there are: one model without any must not take every route off the load balancer."""
        return self.backend.synced() and (self.config.backend == "kubernetes" or all(
            v.pool.ready > 0 for r in self.table.routes.values() for v in r.versions.values()))

    def status(self) -> dict[str, Any]:
        routes: list[dict[str, Any]] = []
        for (kind, name), r in self.table.routes.items():
            versions = []
            for v in r.versions.values():
                scaler = self.table.autoscalers.get(v.config.deployment)
                versions.append({
                    "name": v.config.name, "deployment": v.config.deployment, "ready": v.pool.ready,
                    "replicas": self.backend.replicas(v.config.deployment), "in_flight": v.pool.busy_slots,
                    "addresses": [r.address for r in v.pool.replicas.values() if not r.ejected],
                    "slots": v.pool.total_slots, "queued": v.pool.queued,
                    "utilization": round(scaler.utilization, 4) if scaler else None,
                    "traffic_percentile": v.config.traffic_percentile, "is_default": v.config.is_default,
                    "problem": self.backend.problem(v.config.deployment),
                    "rolling": self.backend.rolling(v.config.deployment)})
            routes.append({"kind": kind, "name": name, "versions": versions})
        return {"ready": self.ready(), "leader": self.backend.is_leader, "routes": routes, "config": self.config_digest,
                "config_error": self.config_error}

    async def _api(self, scope: dict, receive, send, route: RouteState, action: str) -> None:
        methods, upstream_path = (("GET", "HEAD"), b"/swagger.json") if action == "swagger.json" else (SCORE_METHODS, b"/score")
        if scope["method"] not in methods:
            allowed = ", ".join(methods)
            raise HttpError(405, "MethodNotAllowed", f"{action} takes {allowed}", [(b"allow", allowed.encode())])
        origins = route.config.cors_origins
        if scope["method"] == "OPTIONS" and origins and (asked := cors.preflight(scope["headers"])) is not None:
            if refused := cors.refusal(origins, asked):
                raise HttpError(400, "CorsPreflightRefused", refused)
            await respond(send, 200, b"OK", [(b"content-type", b"text/plain; charset=utf-8"),
                                             *cors.answer_headers(origins, asked)])
            return
        version, pinned = self._version(route, action, scope["headers"])
        if scope["method"] == "HEAD":  # the replica is asked GET (upstream.py reads an answer's body by its framing),
            scope = {**scope, "method": "GET"}  # and http_server sends the client the head alone
        chosen = [version]  # what the stats count: the version a reload's reroute picked, if one did

        def reroute() -> VersionState:
            chosen[0] = self.repick(route, pinned)
            return chosen[0]

        started = time.perf_counter()
        status = 500
        try:
            status = await forward(scope, receive, send, version, upstream_path, reroute)
        except HttpError as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            if action == "score":  # the scoring requests' counts and latency: not swagger's
                chosen[0].stats.observe(status, time.perf_counter() - started)

    # ------------------------------------------------------------ http_server.FastPath: the hot path

    def claim(self, path: bytes) -> RouteState | None:
        """A POST to a score route is relayed from callbacks (relay.py), not through ASGI."""
        return self.table.by_score_path.get(path)

    def answer(self, request: Request) -> None:
        try:
            lines, pinned, authorization = request_lines(request.headers)
            version = self._pick(request.claim, "score", pinned, authorization)
        except HttpError as exc:
            route = request.claim
            headers, body = error_answer(exc, request.headers, f"{route.config.kind} {route.config.name}", route.labels)
            request.respond(exc.status, headers, body)
            return
        Relay(request, version, self.deadlines, lines, pinned, self).start()

    def _route(self, path: str) -> tuple[RouteState, str]:
        """The route and action (score, swagger.json) of an /api/v1/ path."""
        parts = path.split("/")  # ['', 'api', 'v1', kind, name, action]
        if len(parts) != 6 or parts[3] not in ("service", "endpoint") or parts[5] not in ("score", "swagger.json"):
            raise HttpError(404, "NotFound", f"no route {path}")
        kind, name, action = parts[3], parts[4], parts[5]
        route = self.table.routes.get((kind, name))
        if route is None:
            raise HttpError(404, "NotFound", f"no {kind} named {name!r}")
        return route, action

    def _version(self, route: RouteState, action: str, headers: list[tuple[bytes, bytes]]) -> tuple[VersionState, str | None]:
        """The version (see _pick) and the pinned version's name, if any."""
        pin = authorization = None
        for header, value in headers:
            if header == PIN_HEADER:  # as request_lines reads it
                if pin is not None:
                    raise HttpError(400, "BadRequest", REPEATED_PIN)
                pin = value
            elif header == b"authorization":
                if authorization is not None:
                    raise HttpError(400, "BadRequest", REPEATED_AUTHORIZATION)
                authorization = value
        pinned = pin.decode("latin-1") if pin else None
        return self._pick(route, action, pinned, authorization), pinned

    def repick(self, route: RouteState, pinned: str | None) -> VersionState:
        """The version for a score request whose own a reload removed while it waited (it was admitted:
        no auth again), from the routes now in force, where its route may be gone, or its pin."""
        current = self.table.routes.get((route.config.kind, route.config.name))
        if current is None:
            raise HttpError(404, "NotFound", f"the {route.config.kind} {route.config.name!r} was removed")
        return self._choose(current, "score", pinned)

    def _pick(self, route: RouteState, action: str, pinned: str | None, authorization: bytes | None) -> VersionState:
        """Who may call (score needs auth; swagger is public, as Azure ML's swagger_uri is) and which
        version answers (_choose)."""
        if action == "score":
            try:
                self.auth.check(route.config, route.key_id, authorization)
            except AuthError as exc:
                raise HttpError(401, "Unauthorized", str(exc), [(b"www-authenticate", exc.challenge.encode())]) from None
        return self._choose(route, action, pinned)

    def _choose(self, route: RouteState, action: str, pinned: str | None) -> VersionState:
        """Pinned by header, else scoring follows the split and swagger the default."""
        version = route.versions.get(route.split.pick(pinned) if action == "score" else pinned or route.split.default)
        if version is None:
            raise HttpError(404, "UnknownVersion", f"{route.config.kind} {route.config.name} has no version {pinned!r}")
        if pinned is None and not version.pool.any_ready():
            # A version just added or just made the default (or whose replicas all went) takes its share
            # once it has a ready replica; until then a ready one serves it instead of queueing it to a 503.
            version = route.stand_in(version)
        return version


def _deployments(table: RouteTable, router_scaler: RouterScaler | None) -> set[str]:
    """Every Deployment the router routes to or scales: its versions', and its own when it sizes it."""
    return {*table.pools, *([router_scaler.config.deployment] if router_scaler else [])}


def load(path: str) -> Router:
    return Router(RouterConfig.load(path), path)
