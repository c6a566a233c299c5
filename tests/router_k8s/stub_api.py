"""A stub Kubernetes API server: EndpointSlices (list + watch), deployments/scale, Leases.

It keeps just enough state to behave like the real one for the kubernetes backend
(resourceVersions, watch resumption, 410 Gone, optimistic concurrency on Leases) and records
every request's verb, path, query and body so tests assert exactly what the backend sent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router_image.backends.kubernetes import ApiAccess

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
SCALE = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
TOKEN = "stub-token"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


def endpoint_slice(name: str, service: str, endpoints: list[tuple[str, bool, str]], address_type: str = "IPv4") -> dict:
    """An EndpointSlice of `service` with (ip, ready, pod name) endpoints."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": pod}}
                          for ip, ready, pod in endpoints]}


@dataclass
class StubApi:
    namespace: str = "models"
    calls: list[Call] = field(default_factory=list)
    slices: dict[str, dict] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)
    leases: dict[str, dict] = field(default_factory=dict)
    version: int = 100
    lease_writes_fail: bool = False  # an API server the leader cannot reach for writes
    lease_delay_s: float = 0.0  # an overloaded API server: Lease calls answered, but this late
    scale_delay_s: float = 0.0  # and scale patches held this long before they are applied
    scale_read_delay_s: float = 0.0  # and scale reads answered this late
    scale_answer_delay_s: float = 0.0  # and scale reads answered with the count when asked, this late
    scale_patch_status: int | None = None  # scale patches refused with this status (403: a Role without patch)
    refuse_lists: int = 0  # this many EndpointSlice lists answered 429, as API Priority and Fairness does under load
    refuse_watches: int = 0  # and this many EndpointSlice watches
    refuse_leases: int = 0  # and this many Lease reads
    refuse_scales: int = 0  # and this many scale reads or patches
    retry_after: str | None = None  # the Retry-After header of those 429s
    # Each Deployment's resourceVersion: bumped when its count changes (a patch, or a test setting `scales`)
    # and by `touch` (its status changing), checked against a patch's as the API server checks it.
    scale_versions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (count, resourceVersion)
    _events: list[tuple[int, str, dict]] = field(default_factory=list)
    _watchers: list[asyncio.Queue] = field(default_factory=list)

    # ------------------------------------------------------------ what tests do

    def _bump(self, obj: dict) -> dict:
        self.version += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    def put_slice(self, obj: dict, *, silently: bool = False) -> None:
        """ADDED or MODIFIED to every watcher (`silently`: a change the watch missed)."""
        kind = "MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED"
        obj = self._bump(obj)
        self.slices[obj["metadata"]["name"]] = obj
        if not silently:
            self._emit(kind, obj)

    def delete_slice(self, name: str) -> None:
        obj = self._bump(self.slices.pop(name))
        self._emit("DELETED", obj)

    def expire_watches(self) -> None:
        """What the API server says when a watch's resourceVersion was compacted away."""
        self._events.clear()
        for q in self._watchers:
            q.put_nowait({"type": "ERROR", "object": {"kind": "Status", "status": "Failure", "code": 410,
                                                       "reason": "Expired", "message": "too old resource version"}})

    def end_watches(self) -> None:
        """What the API server does when a watch's timeoutSeconds is up: close the stream."""
        for q in self._watchers:
            q.put_nowait(None)

    def stall_watches(self) -> None:
        """A connection dropped on the way without a reset (an idle flow an Azure load balancer let go):
        the open watches deliver nothing more; a new watch replays what they missed."""
        for q in self._watchers:
            q.put_nowait("stall")

    def _emit(self, kind: str, obj: dict) -> None:
        self._events.append((self.version, kind, obj))
        for q in self._watchers:
            q.put_nowait({"type": kind, "object": obj})

    def requests(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path == path]

    # ------------------------------------------------------------ the API

    def app(self) -> web.Application:
        ns = "{ns}"
        app = web.Application(middlewares=[self._record])
        app.router.add_get(SLICES.format(ns=ns), self._slices)
        app.router.add_get(SCALE.format(ns=ns, name="{name}"), self._get_scale)
        app.router.add_patch(SCALE.format(ns=ns, name="{name}"), self._patch_scale)
        app.router.add_get(LEASES.format(ns=ns) + "/{name}", self._get_lease)
        app.router.add_post(LEASES.format(ns=ns), self._create_lease)
        app.router.add_put(LEASES.format(ns=ns) + "/{name}", self._update_lease)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler):
        raw = await request.read()
        self.calls.append(Call(request.method, request.path, dict(request.query), json.loads(raw) if raw else None,
                               request.content_type))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"code": 401}, status=401)
        if request.match_info.get("ns") != self.namespace:
            return web.json_response({"code": 403, "message": "forbidden outside the namespace"}, status=403)
        return await handler(request)

    def _selected(self, request: web.Request) -> list[dict]:
        key, _, value = request.query["labelSelector"].partition("=")
        return [s for s in self.slices.values() if s["metadata"]["labels"].get(key) == value]

    def _too_many_requests(self) -> web.Response:
        return web.json_response({"kind": "Status", "code": 429, "reason": "TooManyRequests"}, status=429,
                                 headers={"Retry-After": self.retry_after} if self.retry_after is not None else None)

    async def _slices(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true" and self.refuse_lists > 0:
            self.refuse_lists -= 1
            return self._too_many_requests()
        if request.query.get("watch") == "true" and self.refuse_watches > 0:
            self.refuse_watches -= 1
            return self._too_many_requests()
        if request.query.get("watch") != "true":
            return web.json_response({"kind": "EndpointSliceList", "metadata": {"resourceVersion": str(self.version)},
                                      "items": self._selected(request)})
        key, _, value = request.query["labelSelector"].partition("=")
        since = int(request.query["resourceVersion"])
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        for version, kind, obj in self._events:
            if version > since:
                queue.put_nowait({"type": kind, "object": obj})
        self._watchers.append(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return response
                if event == "stall":
                    await asyncio.Event().wait()  # until the client goes away
                obj = event["object"]
                if event["type"] != "ERROR" and obj["metadata"]["labels"].get(key) != value:
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
                if event["type"] == "ERROR":
                    return response
        finally:
            self._watchers.remove(queue)

    def touch(self, name: str) -> None:
        """The Deployment's status changed (a pod got ready): a new resourceVersion, the same count."""
        self.version += 1
        self.scale_versions[name] = (self.scales[name], self.version)

    def scale_version(self, name: str) -> int:
        count, version = self.scale_versions.get(name, (None, 0))
        if count != self.scales[name]:
            self.version += 1
            self.scale_versions[name] = (self.scales[name], self.version)
            return self.version
        return version

    def _scale(self, name: str) -> web.Response:
        if name not in self.scales:
            return web.json_response({"code": 404}, status=404)
        replicas = self.scales[name]
        return web.json_response({"apiVersion": "autoscaling/v1", "kind": "Scale",
                                  "metadata": {"name": name, "namespace": self.namespace,
                                               "resourceVersion": str(self.scale_version(name))},
                                  "spec": {"replicas": replicas}, "status": {"replicas": replicas}})

    def _refused_scale(self) -> web.Response | None:
        if self.refuse_scales > 0:
            self.refuse_scales -= 1
            return self._too_many_requests()
        return None

    async def _get_scale(self, request: web.Request) -> web.Response:
        if refused := self._refused_scale():
            return refused
        answer = self._scale(request.match_info["name"])
        await asyncio.sleep(self.scale_answer_delay_s)
        if not self.scale_read_delay_s:
            return answer
        await asyncio.sleep(self.scale_read_delay_s)
        return self._scale(request.match_info["name"])

    async def _patch_scale(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if refused := self._refused_scale():
            return refused
        if request.content_type != "application/merge-patch+json":
            return web.json_response({"code": 415}, status=415)
        body = await request.json()
        await asyncio.sleep(self.scale_delay_s)  # cancelled, as a request handler is, when the client leaves
        if self.scale_patch_status is not None:
            return web.json_response({"kind": "Status", "code": self.scale_patch_status}, status=self.scale_patch_status)
        if name in self.scales:
            given = (body.get("metadata") or {}).get("resourceVersion")
            if given is not None and given != str(self.scale_version(name)):
                return web.json_response({"kind": "Status", "code": 409, "reason": "Conflict", "message":
                                          "the object has been modified; please apply your changes to the latest version"},
                                         status=409)
            self.scales[name] = body["spec"]["replicas"]
        return self._scale(name)

    async def _get_lease(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.lease_delay_s)
        if self.refuse_leases > 0:
            self.refuse_leases -= 1
            return self._too_many_requests()
        lease = self.leases.get(request.match_info["name"])
        return web.json_response(lease) if lease else web.json_response({"code": 404}, status=404)

    async def _create_lease(self, request: web.Request) -> web.Response:
        lease = await request.json()
        name = lease["metadata"]["name"]
        if name in self.leases:
            return web.json_response({"code": 409, "reason": "AlreadyExists"}, status=409)
        self.leases[name] = self._bump(lease)
        return web.json_response(self.leases[name], status=201)

    async def _update_lease(self, request: web.Request) -> web.Response:
        lease = await request.json()
        name = request.match_info["name"]
        await asyncio.sleep(self.lease_delay_s)
        current = self.leases.get(name)
        if self.lease_writes_fail:
            return web.json_response({"code": 503}, status=503)
        if current is None:
            return web.json_response({"code": 404}, status=404)
        if lease["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return web.json_response({"code": 409, "reason": "Conflict"}, status=409)
        self.leases[name] = self._bump(lease)
        return web.json_response(self.leases[name])


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0,
                tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0: a free one), over TLS with `tls`; returns the runner (cleanup() stops it)
    and the port."""
    runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def access(port: int, tmp_path) -> ApiAccess:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return ApiAccess(f"http://127.0.0.1:{port}", token_file=str(token))


async def until(check, timeout: float = 3.0) -> None:
    """Wait for `check()` to hold (a TimeoutError fails the test)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
