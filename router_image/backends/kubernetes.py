"""The `kubernetes` backend: replicas are a Deployment's pods, seen through EndpointSlices.

- Ready addresses: each version's headless Service (named like its Deployment) has EndpointSlices
  labelled `kubernetes.io/service-name=<deployment>`. They are listed, then watched from the
  list's resourceVersion, each watch resumed from the last one seen (listed again only when the API
  says 410 Gone, or fails otherwise than by throttling or connection), and every change is pushed to
  the router as `<ip>:<scorer_port>` of the endpoints whose `ready` condition holds.
- Scaling: a merge patch of `deployments/<name>/scale`, nothing more (the Role allows no more),
  made on the resourceVersion the count was read at, as the HPA updates a scale: one that changed
  the count since (kubectl scale, a newer leader) is not overwritten by a decision made without it.
- Several router pods find each other in the EndpointSlices of the peers' headless Service. The
  holder of a coordination.k8s.io Lease is the only one that scales; it adds the in-flight +
  queued counts every other pod serves at `/internal/load` to its own demand, and sizes the
  router Deployment itself (`router_scale`) on the CPU and routing latency they report there. A
  ready pod that does not answer within PEER_TIMEOUT_S counts as saturated. Over TLS, a peer must
  present the router's own certificate (tls.PeerTrust) before the peers' secret is sent.

The API is called with aiohttp, the router's own HTTP client: no blocking call, no thread, and
tests point `ApiAccess` at a stub server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from router_image import metrics
from router_image.autoscale import PodLoad
from router_image.backends import ReadyCallback
from router_image.config import RouterConfig, VersionConfig
from router_image.tls import PeerTrust
from router_image.upstream import is_ready

log = logging.getLogger("router.kubernetes")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_LABEL = "kubernetes.io/service-name"
MERGE_PATCH = "application/merge-patch+json"
TOKEN_REREAD_S = 60  # projected service account tokens rotate; the kubelet rewrites the file
# The API server ends each watch after WATCH_S to twice that (drawn per watch, as client-go does: watches opened
# together, at start or after an API server restart, were reopened together every 5 minutes by every router pod);
# it is resumed from the last resourceVersion.
WATCH_S = 300
# The API server sends a watch that allows bookmarks one about every minute. A watch silent this long has
# lost its connection on the way (an Azure load balancer drops an idle flow without a reset): it is
# resumed then, not when the socket gives up or WATCH_S is up, while pods came and went unseen.
WATCH_SILENT_S = 90.0
RETRY_S = 1.0
RETRY_MAX_S = 30.0  # a watch failing (or ending at once) again and again backs off to this
# While leading, every Deployment's count is read again this often: one set outside the router
# (kubectl scale, a GitOps apply) is then what the autoscaler scales from.
SCALE_RESYNC_S = 30.0
# A peer that refuses the peers' secret, or presents a certificate this pod does not trust yet, is
# mid-rotation (the kubelet updates each pod's Secret volume in its own time, a minute or two apart):
# its last load counts for this long.
REFUSING_PEER_HOLD_S = 180.0
# A peer that does not answer in PEER_TIMEOUT_S is most often one saturated by a burst, its demand at its
# highest: its last demand counts for this long (gone from the EndpointSlice, it counts no more).
SILENT_PEER_HOLD_S = 10.0
CALL_TIMEOUT_S = 10.0
# Releasing the Lease at shutdown only spares the next leader the wait for its expiry: it may take no more
# than this of the pod's grace period (the drain's margin, components.router.STOP_MARGIN_S, is 5 s).
RELEASE_S = 2.0
PEER_TIMEOUT_S = 0.5


class ApiError(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.retry_after_s = retry_after_s


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """The seconds a 429 or 503 asks the client to wait (API Priority and Fairness sends them), at most
    RETRY_MAX_S: a value that is not a number of seconds is no request."""
    try:
        seconds = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(seconds, RETRY_MAX_S) if math.isfinite(seconds) and seconds >= 0 else None


def _pause_s(pause: float, exc: BaseException | None = None) -> float:
    """A retry's pause: the backoff's, jittered, or longer where the API server said how long to wait (retrying
    sooner added load to an API server that had said it was overloaded)."""
    jittered = pause * random.uniform(0.5, 1.0)
    retry_after = exc.retry_after_s if isinstance(exc, ApiError) else None
    return jittered if retry_after is None else max(jittered, retry_after)


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class _HeldBack(Exception):
    """A scale call not sent: the API server asked (Retry-After) to wait longer."""


def _why(exc: BaseException) -> str:
    """An error's text for a log line: a timeout's is empty, which left 'failed: ' naming no reason."""
    return str(exc) or type(exc).__name__


def _reason(exc: BaseException) -> str:
    """A failed call's reason as a metric label: one of a few values, never an error's text."""
    if isinstance(exc, ApiError):
        return str(exc.status)
    return "timeout" if isinstance(exc, TimeoutError) else "connection"


@dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and how to authenticate: in-cluster by default, a stub in tests."""

    base_url: str
    token_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls) -> ApiAccess:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", str(SERVICE_ACCOUNT / "token"), str(SERVICE_ACCOUNT / "ca.crt"))


class Api:
    """JSON over HTTP to the API server with the service account's bearer token."""

    def __init__(self, access: ApiAccess):
        self._access = access
        context = ssl.create_default_context(cafile=access.ca_file) if access.ca_file else None
        # Each watch holds a connection for its 5 minutes: with aiohttp's default cap of 100, a hundred
        # versions left none for the Lease and scale calls (nor the next watch), so no pod could lead.
        # Watch events carry whole EndpointSlices (up to 100 endpoints): allow long lines.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=context or True),
                                              read_bufsize=1 << 20)
        self._token = ""
        self._token_read = float("-inf")
        self._token_unread = False  # warned of once (it is tried at every call), until it is read

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        if self._access.token_file and time.monotonic() - self._token_read > TOKEN_REREAD_S:
            try:
                self._token = Path(self._access.token_file).read_text().strip()
                self._token_read = time.monotonic()
            except OSError as exc:  # mid-rotation, say: the last token serves until the next read works
                if not self._token_unread:
                    log.warning("service account token not read, %s: %s",
                                "the last one is used" if self._token else "none is sent", exc)
                self._token_unread = True
            else:
                if self._token_unread:
                    log.info("service account token read again")
                self._token_unread = False
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                   params: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201),
                   timeout_s: float = CALL_TIMEOUT_S) -> tuple[int, Any]:
        """(status, JSON body); a status outside `ok` raises ApiError, no answer within `timeout_s` TimeoutError."""
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self._access.base_url + path, data=data, params=params,
                                         headers=self._headers(content_type if data else None),
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            text = await resp.text()
            if resp.status not in ok:
                raise ApiError(resp.status, text[:300], _retry_after(resp))
            return resp.status, json.loads(text) if text else {}

    async def watch(self, path: str, params: dict[str, str]):
        """The events of a watch, one dict per line, until the server ends the stream."""
        params = {**params, "watch": "true", "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(round(WATCH_S * random.uniform(1, 2)))}
        # Connecting is bounded as any call is: unbounded, a black-holed API server address (a SYN or a TLS
        # handshake left unanswered) held the watch for the kernel's retries and the 60 s handshake timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S, sock_read=WATCH_SILENT_S)
        async with self._session.get(self._access.base_url + path, params=params, headers=self._headers(),
                                     timeout=timeout) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise ApiError(resp.status, (await resp.text())[:300], _retry_after(resp))
            try:
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
            except asyncio.TimeoutError:
                log.info("watch %s silent for %g s; resuming it", path, WATCH_SILENT_S)

    async def close(self) -> None:
        await self._session.close()


class SliceWatch:
    """One Service's EndpointSlices, kept current by list + watch; `on_change` after every change."""

    def __init__(self, api: Api, namespace: str, service: str, on_change: Callable[[], None]):
        self.slices: dict[str, dict] = {}
        self.listed = False  # once: what a failing list or watch leaves is the last known state
        self._version = ""  # the resourceVersion of the list, then of each event: where a watch resumes
        self._api, self._on_change = api, on_change
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        self._selector = {"labelSelector": f"{SERVICE_LABEL}={service}"}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """List, then watch from there, for ever, after a pause that doubles while failures repeat (or the
        Retry-After the API server asked for); a watch that ended at once counts as one. A watch refused with
        429, or cut or refused by the connection (an API server restarting, a reset on the way), is opened again
        from the last resourceVersion seen, as client-go's reflector does: a list is the heaviest call there is,
        on an API server that just said it is overloaded or is just back. Any other failure (a 410 too) lists again."""
        pause = RETRY_S
        failing = 0  # failures in a row: the first is warned of, the rest logged at debug until a list works
        while True:
            failure: BaseException | None = None
            try:
                _, listing = await self._api.call("GET", self._path, params=self._selector)
                if failing:
                    log.info("endpointslices %s: listed again, after %d failures", self._selector["labelSelector"], failing)
                    failing = 0
                self.slices = {s["metadata"]["name"]: s for s in listing.get("items") or []}
                self.listed = True
                self._on_change()
                self._version = listing["metadata"]["resourceVersion"]
                while True:
                    started = time.monotonic()
                    interrupted: BaseException | None = None
                    try:
                        await self._follow()
                    except (ApiError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                        if isinstance(exc, ApiError) and exc.status != 429:
                            raise
                        if not isinstance(exc, ApiError):
                            log.info("endpointslices %s: watch cut (%s); resuming it from resourceVersion %s",
                                     self._selector["labelSelector"], _why(exc), self._version)
                        interrupted = exc
                    if time.monotonic() - started >= RETRY_S:
                        pause = RETRY_S  # a watch that ran a while: the API server was well
                        if interrupted is None:
                            continue
                    # Refused, cut, or ended at once (an API server draining, a proxy): not again at once.
                    await asyncio.sleep(_pause_s(pause, interrupted))
                    pause = min(pause * 2, RETRY_MAX_S)
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("endpointslices %s: watch expired (410), listing again", self._selector["labelSelector"])
            except Exception as exc:  # never the end of the watch: its endpoints would freeze
                # Once, not at every retry: a Role without list (an API server down) warned for every version every 30 s.
                (log.debug if failing else log.warning)("endpointslices %s: %s; retrying", self._selector["labelSelector"],
                                                        _why(exc))
                failing += 1
                failure = exc
            await asyncio.sleep(_pause_s(pause, failure))
            pause = min(pause * 2, RETRY_MAX_S)

    async def _follow(self) -> None:
        """One watch from `_version`, which follows every event's, so that the next resumes from the last seen."""
        # aclosing: leaving the loop early (410) closes the stream now, not when collected.
        params = {**self._selector, "resourceVersion": self._version}
        async with contextlib.aclosing(self._api.watch(self._path, params)) as events:
            async for event in events:
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiError(obj.get("code", 500), obj.get("message", ""))
                self._version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.slices.pop(obj["metadata"]["name"], None)
                else:
                    self.slices[obj["metadata"]["name"]] = obj
                self._on_change()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def addresses(slices: list[dict], port: int, *, ready_only: bool = True, exclude_pod: str | None = None) -> list[str]:
    """`<ip>:<port>` of each pod in `slices`, once (a dual-stack pod appears in an IPv4 and an IPv6
    slice; IPv4 wins). An absent `ready` condition means unknown, which the API says to treat as ready."""
    found: dict[str, str] = {}
    for s in sorted(slices, key=lambda s: (s.get("addressType") != "IPv4", s["metadata"]["name"])):
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for endpoint in s.get("endpoints") or []:
            ips = endpoint.get("addresses") or []
            if not ips or (ready_only and (endpoint.get("conditions") or {}).get("ready") is False):
                continue
            pod = (endpoint.get("targetRef") or {}).get("name") or ips[0]
            if pod != exclude_pod:
                found.setdefault(pod, f"[{ips[0]}]:{port}" if ":" in ips[0] else f"{ips[0]}:{port}")
    return sorted(found.values())


_PeerLoad = tuple[dict[str, float], PodLoad]  # a peer's demand per deployment, and its own load


def _figure(value: object) -> float:
    """A number a peer reports: finite and not negative, or ValueError (its answer counts as none). Python's JSON
    reads NaN and Infinity, which would reach the autoscaler's sums and math.ceil."""
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not a count")
    return number


def _now() -> str:
    """A MicroTime, as Lease times are written."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesBackend:
    """Replicas, scaling and leadership through the Kubernetes API of `config.namespace`."""

    def __init__(self, config: RouterConfig, access: ApiAccess | None = None, identity: str | None = None, *,
                 lease_duration_s: int = 15, renew_every_s: float = 2.0, peer_poll_s: float = 0.5):
        self._leading = False  # won the Lease at the last renewal (is_leader also asks how long ago)
        self.identity = identity or os.environ.get("POD_NAME") or socket.gethostname()
        self._config = config
        self._access = access or ApiAccess.in_cluster()
        self._ns = config.namespace
        self._lease_s, self._renew_s, self._peer_poll_s = lease_duration_s, renew_every_s, peer_poll_s
        self._on_ready: ReadyCallback = lambda d, a: None
        self._versions: dict[str, VersionConfig] = {}
        self._watches: dict[str, SliceWatch] = {}
        self._published: dict[str, list[str]] = {}
        self._replicas: dict[str, int] = {}
        self._read_at: dict[str, str] = {}  # the resourceVersion each count was read at
        self._sent = 0  # numbers the scale calls (reads and patches) in the order they are sent
        self._counted: dict[str, int] = {}  # the number of the call each count is the answer to
        self._unread: set[str] = set()  # Deployments whose last count read failed (warned of once, until read)
        self._scale_calm_until = float("-inf")  # no scale call before then (a refusal's Retry-After)
        self._synced = False
        self._remote: dict[str, float] = {}
        self._pods: list[PodLoad] = []
        # Scaled besides the versions' Deployments: the router's own.
        self._own = config.router_scale.deployment if config.router_scale else None
        self._peers: SliceWatch | None = None
        self._tasks: list[asyncio.Task] = []
        self._observed: tuple | None = None  # the Lease record last seen, and when (local clock: no skew)
        self._observed_at = 0.0
        self._renewed_at = 0.0  # when the last renewal that won was sent
        self._held: dict | None = None  # the Lease as this pod's last winning write returned it
        self._secret_unusable = False  # logged once, until the peers' secret is usable again
        self._answered: dict[str, tuple[float, _PeerLoad]] = {}  # each peer's last load, and when
        self._refusing: set[str] = set()  # peers refusing the secret or not trusted (logged once each)
        self._trust = PeerTrust(config.tls.cert_file) if config.tls else None

    @property
    def is_leader(self) -> bool:
        """Leadership expires on this pod's own clock, 2/3 of the Lease after the renewal that won it was
        sent, however long the next renewal hangs: another pod may take the Lease over only after a full
        duration without renewals, so two pods never both scale."""
        return self._leading and (self._config.peers is None or time.monotonic() - self._renewed_at < self._valid_s)

    @property
    def _valid_s(self) -> float:
        return self._lease_s * 2 / 3

    # ------------------------------------------------------------ lifecycle

    async def start(self, on_ready: ReadyCallback) -> None:
        self._on_ready = on_ready
        self._api = Api(self._access)
        # Peers get a session of their own: the API token never leaves for a pod.
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S))
        if self._config.peers is None:
            self._leading = True  # a lone router
            return
        self._peers = SliceWatch(self._api, self._ns, self._config.peers.service, lambda: None)
        if self._own is not None:
            await self._read_scale(self._own)
        self._tasks = [asyncio.create_task(self._lead()), asyncio.create_task(self._poll_peers()),
                       asyncio.create_task(self._resync_scales())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for watch in [*self._watches.values(), *([self._peers] if self._peers else [])]:
            await watch.stop()
        self._watches.clear()
        if self._held is not None and self._config.peers is not None:
            await self._release(self._held)
        self._leading = False
        await self._http.close()
        await self._api.close()

    # ------------------------------------------------------------ replicas

    async def apply(self, versions: list[VersionConfig]) -> None:
        """New versions are watched and their counts read before the versions leaving are dropped: the running
        table still scales those until this returns, and a count gone meanwhile read as a Deployment scaled to 0
        outside the router (a decision to scale it up, an error for the scale refused)."""
        wanted = {v.deployment: v for v in versions}
        added = []
        for name, v in wanted.items():
            self._versions[name] = v
            if name in self._watches:
                self._publish(name)  # the scorer port may have changed
                continue
            self._watches[name] = SliceWatch(self._api, self._ns, name, lambda name=name: self._publish(name))
            added.append(name)
        # All at once: the router listens only after this, and one read after another outlasted the startup
        # probe with many versions and a slow API server (the pod was restarted in a loop).
        await asyncio.gather(*(self._read_scale(name) for name in added))
        for name in [n for n in self._watches if n not in wanted]:
            await self._watches.pop(name).stop()
            self._versions.pop(name, None)
            self._replicas.pop(name, None)
            self._read_at.pop(name, None)
            self._counted.pop(name, None)
            self._published.pop(name, None)
            self._unread.discard(name)
            self._on_ready(name, [])

    def _publish(self, deployment: str) -> None:
        watch, version = self._watches.get(deployment), self._versions.get(deployment)
        if watch is None or version is None:
            return
        ready = addresses(list(watch.slices.values()), version.scorer_port)
        if ready != self._published.get(deployment):
            self._published[deployment] = ready
            self._on_ready(deployment, ready)

    def _scale_path(self, deployment: str) -> str:
        return f"/apis/apps/v1/namespaces/{self._ns}/deployments/{deployment}/scale"

    def _send(self) -> int:
        self._sent += 1
        return self._sent

    async def _scale_call(self, deployment: str, patch: dict | None = None, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """A read (or merge patch) of the Deployment's scale, its answer counted (_count): every scale call goes
        through here. None is sent before the time a 429 or 503 of one of them asked for (API Priority and Fairness
        throttles this service account's calls as one flow): the app's retry every SCALE_RETRY_S, a resync's read
        and another Deployment's came as soon as they were due, adding load to an API server that had said it
        was overloaded."""
        if (wait_s := self._scale_calm_until - time.monotonic()) > 0:
            raise _HeldBack(f"held back {wait_s:.1f} s more, as a refusal's Retry-After asked")
        sent = self._send()
        try:
            _, scale = await self._api.call("PATCH" if patch else "GET", self._scale_path(deployment), patch,
                                            content_type=MERGE_PATCH, timeout_s=timeout_s)
        except ApiError as exc:
            if exc.retry_after_s is not None:
                self._scale_calm_until = max(self._scale_calm_until, time.monotonic() + exc.retry_after_s)
            raise
        self._count(deployment, scale, sent)

    async def _read_scale(self, deployment: str) -> None:
        try:
            await self._scale_call(deployment)
        except (aiohttp.ClientError, ApiError, _HeldBack, TimeoutError, ValueError, TypeError, AttributeError) as exc:
            # An answer that is no scale (no number of replicas) too: raised, it ended the resync loop for good.
            # Once, not at every resync: a Deployment deleted before the config dropped it would warn every 5 s.
            (log.debug if deployment in self._unread else log.warning)("deployment %s: scale not read: %s", deployment, _why(exc))
            self._unread.add(deployment)
            return
        if deployment in self._unread:
            self._unread.discard(deployment)
            log.info("deployment %s: scale read again (%d replicas)", deployment, self._replicas[deployment])

    def _count(self, deployment: str, scale: dict, sent: int) -> None:
        """The count an answer gives, unless a call sent after it answered first: a resync's read sent before a
        patch and answered after it gave the count from before the patch, which the autoscaler took for one set
        outside the router and scaled from again (and the next patch, on its resourceVersion, was refused)."""
        replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        if sent < self._counted.get(deployment, 0):
            return
        self._replicas[deployment], self._counted[deployment] = replicas, sent
        self._read_at[deployment] = str((scale.get("metadata") or {}).get("resourceVersion") or "")

    async def scale(self, deployment: str, replicas: int) -> None:
        """A failed patch is logged, not raised: the autoscaler decides again from `replicas()`."""
        if not self.is_leader:
            log.warning("deployment %s: not the scaling leader, %d replicas not applied", deployment, replicas)
            return
        if deployment not in self._replicas:
            # Decided from an unknown count (replicas() said 0): applied to the real one, it could shrink a busy
            # Deployment at once. The count is read; the autoscaler decides again from it. One still unreadable was
            # warned of by the read, once: said at every retry, it was an error every SCALE_RETRY_S for ever.
            await self._read_scale(deployment)
            if deployment not in self._replicas:
                metrics.SCALE_FAILURES.labels(deployment, "count unreadable").inc()
            (log.warning if deployment in self._replicas else log.debug)(
                "deployment %s: %d replicas not applied, decided while its count was unknown (%s)", deployment,
                replicas, f"{self._replicas[deployment]} now" if deployment in self._replicas else "not readable")
            return
        base = self._replicas[deployment]
        for attempt in range(2):
            # Bounded by the leadership that sends it: a patch still unanswered when that lapses is abandoned,
            # not left to land after a newer leader's; none is sent once it lapsed (during the read before a retry).
            time_left = CALL_TIMEOUT_S if self._config.peers is None else min(CALL_TIMEOUT_S, self._leadership_left())
            if time_left <= 0:
                log.warning("deployment %s: leadership lapsed, %d replicas not applied", deployment, replicas)
                return
            try:
                await self._scale_call(deployment, {"metadata": {"resourceVersion": self._read_at[deployment]},
                                                    "spec": {"replicas": replicas}}, time_left)
                return
            except _HeldBack as exc:  # not sent, so not counted: the refusal that asked for the wait was
                log.info("deployment %s: %d replicas not applied, %s", deployment, replicas, exc)
                return
            except (aiohttp.ClientError, ApiError, TimeoutError) as exc:
                if not isinstance(exc, ApiError) or exc.status != 409 or attempt:
                    log.error("deployment %s: scaling to %d failed: %s", deployment, replicas, _why(exc))
                    metrics.SCALE_FAILURES.labels(deployment, _reason(exc)).inc()
                    return
            # 409: the Deployment changed since its count was read. Its status alone (pods getting ready) changes
            # the resourceVersion too, so the patch is made again when the count is still the one decided from.
            await self._read_scale(deployment)
            if self._replicas.get(deployment) != base:
                log.warning("deployment %s: scaled to %s meanwhile (kubectl scale, another router); %d replicas "
                            "not applied, the autoscaler decides again from that count",
                            deployment, self._replicas.get(deployment, "?"), replicas)
                return

    def replicas(self, deployment: str) -> int:
        return self._replicas.get(deployment, 0)

    async def _resync_scales(self) -> None:
        """While leading, the counts are read again (SCALE_RESYNC_S): the app resumes its autoscalers
        from a count someone else set."""
        while True:
            await asyncio.sleep(SCALE_RESYNC_S)
            if self.is_leader:
                for deployment in self._scaled():
                    await self._read_scale(deployment)

    def _scaled(self) -> list[str]:
        """Every Deployment this backend scales: the versions', and the router's own."""
        return [*self._versions, *([self._own] if self._own else [])]

    def synced(self) -> bool:
        # Once: a version added later must not take every router pod off the load balancer while its
        # first list is slow (until it has replicas, the default version takes its share).
        self._synced = self._synced or all(w.listed for w in self._watches.values())
        return self._synced

    def problem(self, deployment: str) -> str | None:
        return None

    def rolling(self, deployment: str) -> bool:
        return False

    async def probe(self, address: str) -> bool:
        host, _, port = address.rpartition(":")
        return await is_ready(host.strip("[]"), int(port))

    # ------------------------------------------------------------ peers

    def remote_demand(self, deployment: str) -> float:
        return self._remote.get(deployment, 0.0)

    def router_pods(self) -> list[PodLoad]:
        return self._pods

    def peer_addresses(self, ready_only: bool = False) -> list[str]:
        """Every other router pod, ready or not: one that is not ready may still hold queued requests."""
        assert self._config.peers is not None and self._peers is not None
        return addresses(list(self._peers.slices.values()), self._config.peers.port, ready_only=ready_only,
                         exclude_pod=self.identity)

    async def _poll_peers(self) -> None:
        """The leader's view of the other pods: their demand (one that does not answer adds its last, for
        SILENT_PEER_HOLD_S) and their own load (one that is ready and does not answer counts as saturated). One that
        refuses the secret, or whose certificate is not trusted, is mid-rotation, not saturated: its
        last load stands in for a while."""
        while True:
            try:
                await self._poll_peers_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never the end of the polling: the leader would scale on its own load alone
                log.exception("polling the peers failed; polling again")
            await asyncio.sleep(self._peer_poll_s)

    async def _poll_peers_once(self) -> None:
        if not self.is_leader or (headers := self._peer_headers()) is None:
            self._remote, self._pods = {}, []
            return
        await self._gather_peer_loads(headers)

    async def _gather_peer_loads(self, headers: dict[str, str]) -> None:
        ready = set(self.peer_addresses(ready_only=True))
        every = self.peer_addresses()
        loads = await asyncio.gather(*(self._peer_load(a, headers) for a in every))
        now = time.monotonic()
        total: dict[str, float] = {}
        pods = []
        for address, load in zip(every, loads):
            if isinstance(load, str):
                if address not in self._refusing:
                    self._refusing.add(address)
                    log.warning("peer %s %s (a rotation one of the pods has not seen yet?); its last load counts "
                                "for up to %.0f s", address, load, REFUSING_PEER_HOLD_S)
                held = self._answered.get(address)
                if held is None or now - held[0] > REFUSING_PEER_HOLD_S:
                    continue  # nothing it said recently: neither demand nor saturation
                load = held[1]
            elif load is not None:
                self._refusing.discard(address)
                self._answered[address] = (now, load)
            demand: dict[str, float] = {}
            if load is not None:
                demand, pod = load
                pods.append(dataclasses.replace(pod, ready=address in ready))
            else:
                if (held := self._answered.get(address)) is not None and now - held[0] <= SILENT_PEER_HOLD_S:
                    demand = held[1][0]  # its last, while its pod counts as saturated
                if address in ready and self._config.router_scale is not None:
                    pods.append(PodLoad(self._config.router_scale.cpu_cores, PEER_TIMEOUT_S * 1000))
            for deployment, n in demand.items():
                total[deployment] = total.get(deployment, 0.0) + n
        for gone in self._answered.keys() - set(every):
            del self._answered[gone]
        self._refusing &= set(every)
        self._remote, self._pods = total, pods

    def _peer_headers(self) -> dict[str, str] | None:
        """The peers' secret, read once per polling round (a replaced Secret needs no restart). None
        when it is set but missing or empty: every peer would refuse, so the round is skipped (a ready
        peer that refuses would count as saturated), logged once until the secret is usable again."""
        try:
            secret = self._config.peers.secret()  # type: ignore[union-attr]
            if secret is not None and not (secret.isascii() and secret.decode().isprintable()):
                raise ValueError("it is not printable ASCII, as a header value must be (generate it as text)")
        except (OSError, ValueError) as exc:
            if not self._secret_unusable:
                log.warning("peers' secret not usable, their load is not polled: %s", exc)
            self._secret_unusable = True
            return None
        self._secret_unusable = False
        return {"Authorization": f"Bearer {secret.decode()}"} if secret else {}

    async def _peer_load(self, address: str, headers: dict[str, str]) -> _PeerLoad | str | None:
        """The peer's demand and load; why, when it refuses the secret or is not trusted; None when it does not answer."""
        scheme, trust = ("https", self._trust.current()) if self._trust else ("http", True)
        try:
            async with self._http.get(f"{scheme}://{address}/internal/load", ssl=trust, headers=headers) as resp:
                if resp.status in (401, 403, 404):  # /internal/load hides itself from a wrong secret
                    return "refuses the peers' secret"
                if resp.status != 200:
                    log.warning("peer %s: load answered %d", address, resp.status)
                    return None
                load = await resp.json()
                demand = {str(k): _figure(v) for k, v in load["demand"].items()}
                return demand, PodLoad(_figure(load["cpu_cores"]), _figure(load["routing_latency_ms"]))
        except aiohttp.ClientConnectorCertificateError as exc:  # the reason tells a rotation from an expiry
            error = exc.certificate_error
            reason = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else str(error)
            return f"presents a certificate this pod does not trust ({reason})"
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.debug("peer %s: no load: %s", address, exc)
            return None

    # ------------------------------------------------------------ leadership

    def _lease_path(self, name: str = "") -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self._ns}/leases" + (f"/{name}" if name else "")

    async def _lead(self) -> None:
        """Acquire or renew the Lease every `renew_every_s` from the start of the attempt before, at once after a
        longer one: a pause after it, the win, the counts read after it and the first renewal outlasted the
        leadership on an API server answering each call in a third of it. A refusal's Retry-After is waited
        out. Leadership lapses on its own (is_leader); a lapse is logged here, once the renewal that could not
        keep it has ended."""
        failing = 0  # attempts in a row that failed: the first is warned of, the rest counted until one works
        while True:
            started, retry_after = time.monotonic(), 0.0
            try:
                await self._try_lead()
                if failing:
                    log.info("lease calls answer again, after %d that failed", failing)
                    failing = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never the end of the loop: this pod could not lead again
                (log.debug if failing else log.warning)("lease: %s", _why(exc))
                failing += 1
                retry_after = (exc.retry_after_s or 0.0) if isinstance(exc, ApiError) else 0.0
            if self._leading and not self.is_leader:
                log.warning("lease not renewed for %.1f s: no longer the scaling leader", time.monotonic() - self._renewed_at)
                self._leading = False
            await asyncio.sleep(max(retry_after, started + self._renew_s - time.monotonic()))

    def _leadership_left(self) -> float:
        """Seconds of leadership left on this pod's own clock; 0 once it lapsed or was lost."""
        return max(0.0, self._renewed_at + self._valid_s - time.monotonic()) if self.is_leader else 0.0

    def _time_left(self) -> float:
        """How long the next Lease call may take: a leader's, what is left of its leadership (an answer
        after that comes too late to keep it); a candidate's, 2/3 of the Lease (one that took longer
        would win a leadership already spent)."""
        return self._leadership_left() if self.is_leader else self._valid_s

    async def _try_lead(self) -> None:
        assert self._config.peers is not None and self._peers is not None
        if not self._peers.listed:
            return  # a leader that knows no peer decides on its own load alone: another pod may lead meanwhile
        name = self._config.peers.lease_name
        if self.is_leader and self._held is not None and await self._renew(name, self._held):
            return
        status, lease = await self._api.call("GET", self._lease_path(name), ok=(200, 404), timeout_s=self._time_left())
        if status == 404:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": self._ns},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self._lease_s,
                             "acquireTime": _now(), "renewTime": _now(), "leaseTransitions": 0}}
            sent, timeout_s = time.monotonic(), self._time_left()
            status, written = await self._api.call("POST", self._lease_path(), body, ok=(200, 201, 409), timeout_s=timeout_s)
            await self._settle(written if status != 409 else None, sent)
            return
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        expired = time.monotonic() - self._observed_at > (spec.get("leaseDurationSeconds") or self._lease_s)
        if holder and holder != self.identity and not expired:
            self._lost()
            return
        renewed = {**spec, "holderIdentity": self.identity, "leaseDurationSeconds": self._lease_s, "renewTime": _now()}
        if holder != self.identity:
            renewed.update(acquireTime=_now(), leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
        # The GET's resourceVersion rides along: a concurrent writer makes this a 409.
        sent, timeout_s = time.monotonic(), self._time_left()
        status, written = await self._api.call("PUT", self._lease_path(name), {**lease, "spec": renewed}, ok=(200, 409),
                                               timeout_s=timeout_s)
        await self._settle(written if status == 200 else None, sent)

    async def _renew(self, name: str, lease: dict) -> bool:
        """The leader renews with one PUT on the Lease its last write returned (client-go's fast path): a GET before
        it doubled the calls that must land within what is left of the leadership, so an API server answering
        each in a third of it (API Priority and Fairness queueing under load) ended every leadership. False when
        refused (another pod wrote the Lease since, or it is gone): the caller reads it then."""
        renewed = {**lease, "spec": {**lease["spec"], "renewTime": _now()}}
        sent, timeout_s = time.monotonic(), self._time_left()
        status, written = await self._api.call("PUT", self._lease_path(name), renewed, ok=(200, 404, 409), timeout_s=timeout_s)
        if status != 200:
            self._held = None
            return False
        await self._settle(written, sent)
        return True

    async def _settle(self, written: dict | None, sent: float) -> None:
        """`written`: the Lease as the write that won returned it (None: refused); `sent`: when that write was sent,
        the Lease runs from no earlier than that."""
        self._held = written
        if written is not None:
            await self._won(sent)
        else:
            self._lost()

    async def _won(self, sent: float) -> None:
        self._renewed_at = sent
        if not self._leading:
            # The actual counts, all at once: read one after another, many versions outlasted the leadership
            # they are read for (the Lease is not renewed meanwhile), which then never began. The peers' load
            # too: the first decisions were made on this pod's demand alone, until the next polling round.
            headers = self._peer_headers()
            await asyncio.gather(*(self._read_scale(d) for d in self._scaled()),
                                 *([self._gather_peer_loads(headers)] if headers is not None else []))
            self._leading = True
            log.info("%s holds lease %s: scaling leader", self.identity, self._config.peers.lease_name)  # type: ignore[union-attr]

    def _lost(self) -> None:
        if self._leading:
            log.info("%s lost the lease: follower", self.identity)
        self._leading = False

    async def _release(self, lease: dict) -> None:
        """Hand the Lease over at once on shutdown (a rolling update) instead of letting it expire: one PUT on the
        Lease this pod's last winning write returned (a GET before it, on an API server answering each in over a
        second, outlasted RELEASE_S); a conflict means another pod wrote it since and holds it."""
        spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _now()}
        try:
            async with asyncio.timeout(RELEASE_S):
                await self._api.call("PUT", self._lease_path(lease["metadata"]["name"]), {**lease, "spec": spec},
                                     ok=(200, 409))
        except (aiohttp.ClientError, ApiError, TimeoutError) as exc:
            log.warning("lease not released (it expires on its own): %s", _why(exc))
