"""KubernetesBackend against the stub API server: the exact requests it makes and what it learns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router_image import auth, metrics
from router_image.backends import kubernetes
from router_image.backends.kubernetes import KubernetesBackend
from router_image.autoscale import PodLoad
from router_image.config import AutoscaleConfig, PeersConfig, RouterConfig, RouterScaleConfig, TlsConfig, VersionConfig
from stub_api import StubApi, access, endpoint_slice, serve, until

sys.path.insert(0, str(Path(__file__).parents[1] / "router"))
from keys import certificate, write_pair  # noqa: E402

pytestmark = pytest.mark.anyio
SLICES = "/apis/discovery.k8s.io/v1/namespaces/models/endpointslices"
SCALE = "/apis/apps/v1/namespaces/models/deployments/iris/scale"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/models/leases/model-router-autoscaler"
IRIS = VersionConfig(name="v1", deployment="iris", scorer_port=5001)


class Ready:
    """The on_ready callback: the latest addresses per deployment."""

    def __init__(self) -> None:
        self.addresses: dict[str, list[str]] = {}

    def __call__(self, deployment: str, addresses: list[str]) -> None:
        self.addresses[deployment] = addresses


def _backend(api, identity: str = "router-0", peers: bool = False, **timing) -> KubernetesBackend:
    peers_config = PeersConfig(service="model-router-peers", port=timing.pop("peer_port", 8080),
                               secret_file=timing.pop("secret_file", None)) if peers else None
    config = RouterConfig(backend="kubernetes", namespace="models", peers=peers_config,
                          router_scale=timing.pop("router_scale", None), tls=timing.pop("tls", None))
    timing = {"lease_duration_s": 1, "renew_every_s": 0.1, "peer_poll_s": 0.1, **timing}
    return KubernetesBackend(config, api.access, identity, **timing)


async def test_ready_addresses_are_listed_then_watched(api) -> None:
    api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1"), ("10.0.0.2", False, "iris-2")]))
    api.put_slice(endpoint_slice("other-a", "other", [("10.9.9.9", True, "other-1")]))
    ready, backend = Ready(), _backend(api)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        await until(lambda: ready.addresses.get("iris") == ["10.0.0.1:5001"] and len(api.requests("GET", SLICES)) >= 2)
        listing, watch = api.requests("GET", SLICES)[:2]
        assert listing.query == {"labelSelector": "kubernetes.io/service-name=iris"}
        assert watch.query["watch"] == "true" and watch.query["resourceVersion"] == "102"
        assert watch.query["labelSelector"] == "kubernetes.io/service-name=iris"

        await until(lambda: api._watchers)
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1"), ("10.0.0.2", True, "iris-2")]))
        await until(lambda: ready.addresses["iris"] == ["10.0.0.1:5001", "10.0.0.2:5001"])  # MODIFIED
        api.put_slice(endpoint_slice("iris-b", "iris", [("10.0.1.1", True, "iris-3")]))
        await until(lambda: len(ready.addresses["iris"]) == 3)  # ADDED
        api.delete_slice("iris-a")
        await until(lambda: ready.addresses["iris"] == ["10.0.1.1:5001"])  # DELETED
        api.put_slice(endpoint_slice("other-a", "other", [("10.9.9.8", True, "other-2")]))
        await asyncio.sleep(0.1)
        assert ready.addresses == {"iris": ["10.0.1.1:5001"]}  # another Service's slices never show
    finally:
        await backend.stop()


@contextlib.asynccontextmanager
async def watching_iris(api) -> AsyncIterator[Ready]:
    """A backend watching the iris Service's slices (one address, 10.0.0.1), stopped after."""
    api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1")]))
    ready, backend = Ready(), _backend(api)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        await until(lambda: api._watchers)
        yield ready
    finally:
        await backend.stop()


def lists(api) -> list:
    """The slices' list requests (not watches) the backend made."""
    return [c for c in api.requests("GET", SLICES) if "watch" not in c.query]


async def test_410_gone_lists_again(api) -> None:
    async with watching_iris(api) as ready:
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.7", True, "iris-7")]), silently=True)
        api.expire_watches()
        await until(lambda: ready.addresses["iris"] == ["10.0.0.7:5001"])
        assert len(lists(api)) == 2
        await until(lambda: api._watchers)  # and it watches again, from the new list
        assert api.requests("GET", SLICES)[-1].query["resourceVersion"] == str(api.version)


async def test_a_watch_that_ends_resumes_from_its_last_resource_version(api) -> None:
    async with watching_iris(api) as ready:
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.2", True, "iris-2")]))
        await until(lambda: ready.addresses["iris"] == ["10.0.0.2:5001"])
        api.end_watches()
        await until(lambda: len(api.requests("GET", SLICES)) == 3)
        assert len(lists(api)) == 1  # no re-list: the watch picks up where it was
        assert api.requests("GET", SLICES)[-1].query["resourceVersion"] == str(api.version)


async def test_a_watch_cut_by_an_api_server_restart_resumes_from_its_last_resource_version(tmp_path, monkeypatch) -> None:
    """An API server restarting ends every watch mid-stream and refuses connections a moment: each watch was listed
    again, every version's at once, the heaviest call there is, on an API server just back. client-go resumes."""
    monkeypatch.setattr(kubernetes, "RETRY_S", 0.05)
    api = StubApi()
    runner, port = await serve(api.app())
    api.access = access(port, tmp_path)
    try:
        async with watching_iris(api) as ready:
            api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.2", True, "iris-2")]))
            await until(lambda: ready.addresses["iris"] == ["10.0.0.2:5001"])
            seen, watches = str(api.version), len(api.requests("GET", SLICES))
            await runner.cleanup()  # the open watch cut mid-stream, then connections refused
            api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.3", True, "iris-3")]))  # while it was down
            await asyncio.sleep(0.1)
            runner, _ = await serve(api.app(), port=port)
            await until(lambda: ready.addresses["iris"] == ["10.0.0.3:5001"])
            assert len(lists(api)) == 1  # resumed, not listed again
            assert api.requests("GET", SLICES)[watches].query["resourceVersion"] == seen
    finally:
        await runner.cleanup()


async def test_a_silent_watch_is_resumed_and_replays_what_it_missed(api, monkeypatch) -> None:
    """A connection an Azure load balancer dropped without a reset delivers nothing: pods came and went
    unseen until the socket or the watch's timeoutSeconds (5 min) gave up."""
    monkeypatch.setattr(kubernetes, "WATCH_SILENT_S", 0.5)
    async with watching_iris(api) as ready:
        api.stall_watches()
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.2", True, "iris-2")]))
        started = time.monotonic()
        await until(lambda: ready.addresses["iris"] == ["10.0.0.2:5001"])
        assert 0.4 < time.monotonic() - started < 3
        assert len(lists(api)) == 1  # resumed, not listed again


async def test_a_list_refused_with_retry_after_is_retried_no_sooner(api, monkeypatch) -> None:
    """API Priority and Fairness answers 429 with how long to wait: the list was retried at the backoff's own
    pace, adding load to the API server that had said it was overloaded."""
    monkeypatch.setattr(kubernetes, "RETRY_S", 0.05)
    api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1")]))
    api.refuse_lists, api.retry_after = 1, "1"
    ready, backend = Ready(), _backend(api)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        started = time.monotonic()
        await until(lambda: ready.addresses.get("iris") == ["10.0.0.1:5001"])
        assert time.monotonic() - started >= 0.9 and len(lists(api)) == 2
    finally:
        await backend.stop()


async def test_a_lasting_list_refusal_is_warned_of_once_and_its_end_told(api, monkeypatch, caplog) -> None:
    """A Role without list on endpointslices (or an API server down for minutes): every version's watch warned at
    each retry, a line every 30 s per version for as long as it lasted, burying the one that said why."""
    monkeypatch.setattr(kubernetes, "RETRY_S", 0.01)
    caplog.set_level(logging.INFO, logger="router.kubernetes")
    api.namespace = "elsewhere"  # the stub answers 403 outside its namespace
    api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1")]))
    ready, backend = Ready(), _backend(api)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        await until(lambda: len(lists(api)) >= 4)
        told = [r.getMessage() for r in caplog.records if "endpointslices" in r.getMessage() and r.levelno >= logging.INFO]
        assert len(told) == 1 and told[0].startswith("endpointslices kubernetes.io/service-name=iris: 403")
        api.namespace = "models"
        await until(lambda: ready.addresses.get("iris") == ["10.0.0.1:5001"])
        assert "endpointslices kubernetes.io/service-name=iris: listed again, after " in caplog.text
    finally:
        await backend.stop()


async def test_a_watch_refused_with_429_is_opened_again_without_a_list(api, monkeypatch) -> None:
    """A list is the heaviest call on an API server: a watch it throttled was answered with one more list."""
    monkeypatch.setattr(kubernetes, "RETRY_S", 0.05)
    api.refuse_watches = 2
    async with watching_iris(api) as ready:
        watches = [c for c in api.requests("GET", SLICES) if "watch" in c.query]
        assert len(watches) == 3 and len(lists(api)) == 1
        assert {c.query["resourceVersion"] for c in watches} == {str(api.version)}
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.2", True, "iris-2")]))
        await until(lambda: ready.addresses["iris"] == ["10.0.0.2:5001"])


async def test_a_lease_read_refused_with_retry_after_is_tried_again_no_sooner(api) -> None:
    api.refuse_leases, api.retry_after = 1, "1"
    backend = _backend(api, peers=True)  # renewing every 0.1 s
    await backend.start(Ready())
    try:
        await until(lambda: api.requests("GET", LEASE))
        refused = time.monotonic()
        await until(lambda: backend.is_leader)
        assert time.monotonic() - refused >= 0.9 and len(api.requests("GET", LEASE)) == 2
    finally:
        await backend.stop()


async def test_a_watch_whose_connection_is_never_answered_gives_up_within_a_calls_timeout(tmp_path, monkeypatch) -> None:
    """An API server address that takes the connection and never answers the TLS handshake held the watch for
    asyncio's 60 s handshake timeout (a dropped SYN, for the kernel's 2 minutes of retries)."""
    monkeypatch.setattr(kubernetes, "CALL_TIMEOUT_S", 0.2)
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    api = kubernetes.Api(kubernetes.ApiAccess(f"https://127.0.0.1:{port}"))
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                async for _ in api.watch(SLICES, {"resourceVersion": "1"}):
                    pass
        assert accepted and time.monotonic() - started < 1
    finally:
        await api.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_dual_stack_pods_count_once_and_removed_versions_empty(api) -> None:
    api.put_slice(endpoint_slice("iris-4", "iris", [("10.0.0.1", True, "iris-1")]))
    api.put_slice(endpoint_slice("iris-6", "iris", [("fd00::1", True, "iris-1"), ("fd00::2", True, "iris-2")], "IPv6"))
    ready, backend = Ready(), _backend(api)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        await until(lambda: ready.addresses.get("iris") == ["10.0.0.1:5001", "[fd00::2]:5001"])
        await backend.apply([])
        assert ready.addresses["iris"] == []
    finally:
        await backend.stop()


async def test_a_hundred_versions_leave_connections_for_the_lease_and_their_watches(api) -> None:
    """Every watch holds a connection: at aiohttp's default cap of 100, the 100 versions' watches left the
    peers' watch and the Lease renewals waiting for one, and the leader lost its Lease for good."""
    backend = _backend(api, peers=True)
    await backend.start(Ready())
    try:
        await until(lambda: backend.is_leader)
        await backend.apply([VersionConfig(name=f"v{i}", deployment=f"model-{i}") for i in range(100)])
        await until(lambda: len(api._watchers) == 101, timeout=5)  # and the peers' own
        await asyncio.sleep(1.0)  # the whole 1 s Lease
        assert backend.is_leader
    finally:
        await backend.stop()


async def test_watches_end_at_times_spread_over_twice_their_minimum(api) -> None:
    """Every watch asked the API server to end it after exactly 5 minutes: watches opened together (at start, or
    resumed together after an API server restart) were reopened together every 5 minutes, by every router pod, for
    ever. client-go spreads them over 5 to 10 minutes."""
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([VersionConfig(name=f"v{i}", deployment=f"model-{i}") for i in range(20)])
        await until(lambda: len(api._watchers) == 20)
        timeouts = [int(c.query["timeoutSeconds"]) for c in api.requests("GET", SLICES) if "watch" in c.query]
        assert all(kubernetes.WATCH_S <= t <= 2 * kubernetes.WATCH_S for t in timeouts) and len(set(timeouts)) > 5
    finally:
        await backend.stop()


async def test_many_versions_counts_are_read_at_once(api) -> None:
    """The router listens only once apply() has read every version's count: one after another, 120 versions
    at 1 s each (an API server throttling under load) outlasted the startup probe's 120 s, and the pod was
    restarted in a loop. Here 30 reads of 200 ms: 6 s one after another, with room for a busy machine (the suite
    runs four files at once) at a third of that."""
    versions = [VersionConfig(name=f"v{i}", deployment=f"model-{i}") for i in range(30)]
    api.scales.update({v.deployment: 2 for v in versions})
    api.scale_read_delay_s = 0.2
    backend = _backend(api)
    await backend.start(Ready())
    try:
        started = time.monotonic()
        await backend.apply(versions)
        assert time.monotonic() - started < 2.0  # not 30 x 200 ms
        assert all(backend.replicas(v.deployment) == 2 for v in versions)
    finally:
        await backend.stop()


async def test_scale_reads_then_merge_patches(api) -> None:
    api.scales["iris"] = 2
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        assert api.requests("GET", SCALE) and backend.replicas("iris") == 2
        read_at = str(api.scale_version("iris"))
        await backend.scale("iris", 3)
        (patch,) = api.requests("PATCH", SCALE)
        # On the count it read: the API server refuses the patch (409) when the Deployment changed since.
        assert patch.body == {"metadata": {"resourceVersion": read_at}, "spec": {"replicas": 3}}
        assert patch.content_type == "application/merge-patch+json"
        assert backend.replicas("iris") == 3 and api.scales["iris"] == 3
        # Only the Role's verbs: endpointslices get/list/watch, deployments/scale get/patch.
        assert {(c.method, c.path) for c in api.calls} == {("GET", SLICES), ("GET", SCALE), ("PATCH", SCALE)}
    finally:
        await backend.stop()


async def test_a_count_changed_since_it_was_read_is_not_overwritten(api, caplog) -> None:
    """kubectl scale (or a newer leader) between the read and the patch: the patch is refused, and
    the count it set is what the autoscaler decides from next."""
    api.scales["iris"] = 2
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        api.scales["iris"] = 7  # kubectl scale --replicas=7
        await backend.scale("iris", 3)
        assert api.scales["iris"] == 7 and backend.replicas("iris") == 7
        assert len(api.requests("PATCH", SCALE)) == 1 and len(api.requests("GET", SCALE)) == 2  # read again
        assert "scaled to 7 meanwhile" in caplog.text and "3 replicas not applied" in caplog.text
    finally:
        await backend.stop()


async def test_a_status_change_since_the_read_does_not_stop_the_patch(api) -> None:
    """Pods getting ready change the Deployment's resourceVersion, not its count: the patch is made
    again on the new one."""
    api.scales["iris"] = 2
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        api.touch("iris")
        await backend.scale("iris", 3)
        first, second = api.requests("PATCH", SCALE)
        assert first.body["metadata"] != second.body["metadata"]
        assert api.scales["iris"] == 3 and backend.replicas("iris") == 3
    finally:
        await backend.stop()


@contextlib.asynccontextmanager
async def scaling_iris(api) -> AsyncIterator[KubernetesBackend]:
    """A lone backend (the leader) scaling iris, read at 2 replicas; stopped after, the stub's delays undone."""
    api.scales["iris"] = 2
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        yield backend
    finally:
        api.scale_delay_s = api.scale_answer_delay_s = 0.0
        await backend.stop()


async def test_a_read_sent_before_a_patch_and_answered_after_it_leaves_the_patched_count(api) -> None:
    """The leader's resync read the count just before a decision's patch and its answer came after the patch's:
    the count from before the patch was taken for one set outside the router, and the autoscaler scaled from it."""
    async with scaling_iris(api) as backend:
        api.scale_answer_delay_s = 0.3
        read = asyncio.create_task(backend._read_scale("iris"))  # as the resync does
        await until(lambda: len(api.requests("GET", SCALE)) == 2)  # answered with 2, on its way back
        api.scale_answer_delay_s = 0.0
        await backend.scale("iris", 3)
        await read
        assert api.scales["iris"] == 3 and backend.replicas("iris") == 3
        await backend.scale("iris", 4)  # on the patch's resourceVersion, not the late read's: no conflict
        assert len(api.requests("PATCH", SCALE)) == 2 and api.scales["iris"] == 4


async def test_a_scale_call_that_times_out_says_so(api, monkeypatch, caplog) -> None:
    """An API server that takes the patch and does not answer in time (API Priority and Fairness queueing it): the
    error says it timed out. A timeout's text is empty, so it read 'scaling to 3 failed: ', naming no reason."""
    monkeypatch.setattr(kubernetes, "CALL_TIMEOUT_S", 0.2)
    async with scaling_iris(api) as backend:
        api.scale_delay_s = 1.0
        await backend.scale("iris", 3)
        assert [r.getMessage() for r in caplog.records if r.name == "router.kubernetes"] == [
            "deployment iris: scaling to 3 failed: TimeoutError"]


def scale_failures(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("router_scale_failures_total", {"deployment": "iris", "reason": reason}) or 0.0


async def test_scale_calls_that_fail_are_counted_by_reason(api, monkeypatch) -> None:
    """An operator alerts on the router not being able to scale: each failure only went to the log."""
    monkeypatch.setattr(kubernetes, "CALL_TIMEOUT_S", 0.2)
    before = {reason: scale_failures(reason) for reason in ("403", "timeout", "count unreadable")}
    backend = _backend(api)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])  # deployments/iris/scale answers 404: its count unknown
        await backend.scale("iris", 3)
        assert scale_failures("count unreadable") == before["count unreadable"] + 1
        api.scales["iris"] = 2
        await backend.scale("iris", 2)  # read now, not applied: no failure
        api.scale_patch_status = 403  # a Role without patch on deployments/scale
        await backend.scale("iris", 3)
        assert scale_failures("403") == before["403"] + 1
        api.scale_patch_status, api.scale_delay_s = None, 1.0
        await backend.scale("iris", 3)
        assert scale_failures("timeout") == before["timeout"] + 1
        api.scale_delay_s = 0.0
        await backend.scale("iris", 3)
        assert api.scales["iris"] == 3
        assert {reason: scale_failures(reason) - before[reason] for reason in before} == {
            "403": 1, "timeout": 1, "count unreadable": 1}
    finally:
        api.scale_delay_s = 0.0
        await backend.stop()


async def test_no_scale_call_is_sent_before_a_refusals_retry_after(api) -> None:
    """API Priority and Fairness answers 429 with how long to wait: a refused patch or read was followed by the
    next scale call (the app's retry every SCALE_RETRY_S, a resync's read, another version's) as soon as one was
    due, adding load to an API server that had said it was overloaded."""
    other = VersionConfig(name="v2", deployment="other", scorer_port=5001)
    api.scales["other"] = 4
    async with scaling_iris(api) as backend:
        api.refuse_scales, api.retry_after = 1, "0.4"
        await backend.scale("iris", 3)  # refused: 429
        refused, sent = time.monotonic(), len(api.calls)
        await backend.scale("iris", 3)  # the patch, and another Deployment's read, are held back
        await backend.apply([IRIS, other])
        assert len([c for c in api.calls[sent:] if "/deployments/" in c.path]) == 0
        assert api.scales["iris"] == 2 and backend.replicas("iris") == 2 and backend.replicas("other") == 0
        await asyncio.sleep(0.4 - (time.monotonic() - refused))
        await backend.scale("iris", 3)
        assert api.scales["iris"] == 3 and backend.replicas("iris") == 3
        api.refuse_scales = 1  # a read refused holds back a patch too
        await backend.scale("other", 5)  # its count unknown: read first, refused
        refused = time.monotonic()
        await backend.scale("iris", 4)
        assert api.scales["iris"] == 3
        await asyncio.sleep(0.4 - (time.monotonic() - refused))
        await backend.scale("iris", 4)
        assert api.scales["iris"] == 4


async def test_a_deployment_whose_count_cannot_be_read_is_not_scaled(api) -> None:
    backend = _backend(api)  # no peers: a lone leader
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])  # deployments/iris/scale answers 404
        await backend.scale("iris", 1)  # from an unknown count this could shrink a busy Deployment
        assert api.requests("PATCH", SCALE) == [] and len(api.requests("GET", SCALE)) == 2  # read again first
        assert backend.replicas("iris") == 0
        api.scales["iris"] = 5  # readable now
        await backend.scale("iris", 6)  # decided while the count was unknown: read, not applied
        assert api.requests("PATCH", SCALE) == [] and backend.replicas("iris") == 5
        await backend.scale("iris", 6)
        (patch,) = api.requests("PATCH", SCALE)
        assert patch.body["spec"] == {"replicas": 6} and backend.replicas("iris") == 6
    finally:
        await backend.stop()


async def test_only_the_lease_holder_scales_and_hands_over_on_stop(api) -> None:
    api.scales["iris"] = 1
    a, b = _backend(api, "router-a", peers=True), _backend(api, "router-b", peers=True)
    await a.start(Ready())
    await a.apply([IRIS])
    await until(lambda: a.is_leader)
    (create,) = api.requests("POST", "/apis/coordination.k8s.io/v1/namespaces/models/leases")
    assert create.body["metadata"] == {"name": "model-router-autoscaler", "namespace": "models"}
    assert create.body["spec"]["holderIdentity"] == "router-a" and create.body["spec"]["leaseDurationSeconds"] == 1
    await b.start(Ready())
    await b.apply([IRIS])
    await until(lambda: len(api.requests("PUT", LEASE)) >= 3)  # renewals, resourceVersion included
    assert all(c.body["metadata"]["resourceVersion"] for c in api.requests("PUT", LEASE))
    assert a.is_leader and not b.is_leader
    assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == "router-a"

    await b.scale("iris", 5)
    assert api.requests("PATCH", SCALE) == []
    await a.scale("iris", 4)
    assert [c.body["spec"] for c in api.requests("PATCH", SCALE)] == [{"replicas": 4}]

    await a.stop()  # releases the Lease: b takes over without waiting for it to expire
    assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == ""
    await until(lambda: b.is_leader, timeout=0.8)
    assert b.replicas("iris") == 4  # a new leader reads the Deployment's count
    await b.stop()


async def test_releasing_the_lease_on_stop_takes_no_more_than_its_bound_of_the_grace_period(api, caplog) -> None:
    """An API server that answers late (or not at all) held the stop for two 10 s calls, past the 5 s the
    pod's grace period leaves after the drain: the kubelet killed the router mid-release."""
    api.scales["iris"] = 1
    a = _backend(api, "router-a", peers=True)
    await a.start(Ready())
    await a.apply([IRIS])
    await until(lambda: a.is_leader)
    api.lease_delay_s = 30
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await a.stop()
    assert time.monotonic() - started < 3  # RELEASE_S (2 s) and the rest of the stop
    assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == "router-a"  # it expires on its own
    assert "lease not released (it expires on its own): TimeoutError" in caplog.text


async def test_a_leader_stopping_on_a_slow_api_server_still_hands_the_lease_over(api) -> None:
    """Each call answered in 1.2 s: the release's GET and PUT together outlasted its 2 s bound, so at every
    rolling update on a loaded API server the next leader waited out the whole Lease. One PUT on the Lease the
    last renewal returned fits."""
    a = _backend(api, "router-a", peers=True, lease_duration_s=6, renew_every_s=0.8)
    await a.start(Ready())
    try:
        await until(lambda: a.is_leader)
    finally:
        api.lease_delay_s = 1.2
        await a.stop()
        api.lease_delay_s = 0.0
    assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == ""


async def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires(api) -> None:
    a = _backend(api, "router-a", peers=True, lease_duration_s=1, renew_every_s=0.1)
    await a.start(Ready())
    try:
        await until(lambda: a.is_leader)
        api.lease_writes_fail = True
        await until(lambda: not a.is_leader, timeout=1.0)  # within 2/3 of the 1 s lease
        await a.scale("iris", 9)
        assert api.requests("PATCH", SCALE) == []
    finally:
        api.lease_writes_fail = False
        await a.stop()


async def test_a_leader_whose_lease_calls_hang_steps_down_on_its_own_clock(api) -> None:
    """An overloaded API server answers, but late (here 5 s, under the 10 s any other call may take):
    leadership ends 2/3 of the Lease after the last renewal won, while the renewal still hangs,
    and the hung call is given up then, not at its own timeout."""
    a = _backend(api, "router-a", peers=True, lease_duration_s=1, renew_every_s=0.1)
    await a.start(Ready())
    try:
        await until(lambda: a.is_leader)
        api.lease_delay_s = 5.0
        gets = len(api.requests("GET", LEASE))
        slowed = time.monotonic()
        await until(lambda: not a.is_leader, timeout=1.0)
        assert time.monotonic() - slowed < 0.9  # 2/3 s at most after a renewal sent before the slow-down
        await a.scale("iris", 9)
        assert api.requests("PATCH", SCALE) == []
        await until(lambda: len(api.requests("GET", LEASE)) >= gets + 2, timeout=2.0)  # tried again meanwhile
        api.lease_delay_s = 0.0
        await until(lambda: a.is_leader, timeout=2.0)  # and leads again once the API answers in time
    finally:
        api.lease_delay_s = 0.0
        await a.stop()


async def test_a_leader_keeps_the_lease_when_each_call_takes_a_third_of_its_leadership(api) -> None:
    """An API server queueing the router's requests (API Priority and Fairness under load) answers each Lease
    call in 0.8 s here, out of 2 s of leadership (a 3 s Lease): a renewal was a GET and then a PUT, which
    together no longer landed within what was left, so leadership lapsed at every renewal and came back,
    each time restarting every autoscaler's history. The leader renews with one PUT on the Lease its last
    write returned (client-go's fast path), a GET only when that PUT is refused."""
    a = _backend(api, "router-a", peers=True, lease_duration_s=3, renew_every_s=0.1)
    await a.start(Ready())
    try:
        await until(lambda: a.is_leader)
        api.lease_delay_s = 0.8
        calls = len(api.calls)
        watched = time.monotonic()
        while time.monotonic() - watched < 4:
            assert a.is_leader, f"leadership lapsed {time.monotonic() - watched:.1f} s into the slow answers"
            await asyncio.sleep(0.02)
        renewals = api.calls[calls:]
        assert renewals and all(c.method == "PUT" for c in renewals)  # no GET while it holds the Lease
        assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == "router-a"
    finally:
        api.lease_delay_s = 0.0
        await a.stop()


async def test_a_pod_winning_the_lease_on_a_slow_api_server_renews_before_its_leadership_runs_out(api) -> None:
    """Every call answered in 1.2 s, out of 4 s of leadership (a 6 s Lease, renewed every 0.8 s as 2 s of 15):
    the win (1.2 s), the counts read after it (1.2 s), then the pause before the first renewal (0.8 s) and the
    renewal itself (1.2 s) outlasted the leadership, which lapsed at every first renewal and was won again.
    Renewals start every renew_every_s from the start of the attempt before, at once after a longer one."""
    api.scales["iris"] = 2
    api.leases["model-router-autoscaler"] = api._bump({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "model-router-autoscaler", "namespace": "models"},
        "spec": {"holderIdentity": "router-a", "leaseDurationSeconds": 6, "leaseTransitions": 0,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}})  # this pod's, before its container restarted
    api.lease_delay_s = api.scale_read_delay_s = 1.2
    a = _backend(api, "router-a", peers=True, lease_duration_s=6, renew_every_s=0.8)
    await a.start(Ready())
    try:
        await a.apply([IRIS])
        await until(lambda: a.is_leader, timeout=6)
        watched = time.monotonic()
        while time.monotonic() - watched < 5:
            assert a.is_leader, f"leadership lapsed {time.monotonic() - watched:.1f} s after it began"
            await asyncio.sleep(0.02)
    finally:
        api.lease_delay_s = api.scale_read_delay_s = 0.0
        await a.stop()


async def test_a_leader_whose_lease_was_taken_over_sees_it_at_its_next_renewal(api) -> None:
    """The fast path's PUT carries the resourceVersion of the leader's own last write: once another pod wrote the
    Lease (here an operator handing it over), it is refused and the leader reads the Lease and steps down."""
    a = _backend(api, "router-a", peers=True, lease_duration_s=3, renew_every_s=0.1)
    await a.start(Ready())
    try:
        await until(lambda: a.is_leader)
        lease = api.leases["model-router-autoscaler"]
        api.leases["model-router-autoscaler"] = api._bump({**lease, "spec": {**lease["spec"], "holderIdentity": "router-b"}})
        await until(lambda: not a.is_leader, timeout=1)
        assert api.leases["model-router-autoscaler"]["spec"]["holderIdentity"] == "router-b"
    finally:
        await a.stop()


@contextlib.asynccontextmanager
async def leading_on_iris(api) -> AsyncIterator[KubernetesBackend]:
    """router-a leading on a 1 s Lease, iris's count (2) read; the stub's delays and failures undone after."""
    api.scales["iris"] = 2
    a = _backend(api, "router-a", peers=True, lease_duration_s=1, renew_every_s=0.1)
    await a.start(Ready())
    try:
        await a.apply([IRIS])
        await until(lambda: a.is_leader and a.replicas("iris") == 2)
        yield a
    finally:
        api.scale_delay_s = api.scale_read_delay_s = 0.0
        api.lease_writes_fail = False
        await a.stop()


async def test_a_scale_patch_is_abandoned_when_the_leadership_that_sent_it_lapses(api) -> None:
    """An API server that holds the patch: the leader gives it up within its leadership (2/3 of the
    1 s Lease), not at the 10 s any other call may take, and does not count it as applied."""
    async with leading_on_iris(api) as a:
        api.scale_delay_s = 5.0
        sent = time.monotonic()
        await a.scale("iris", 7)
        assert time.monotonic() - sent < 0.8
        assert a.replicas("iris") == 2 and api.scales["iris"] == 2


async def test_no_patch_is_sent_once_leadership_lapsed_during_the_read_before_a_retry(api) -> None:
    """A 409 (the Deployment's status changed) makes the leader read the count again; when its leadership
    lapses during that read, the retry is not sent. It was: a pod that no longer led (another may lead
    by then) patched the count, on the resourceVersion it had just read, so the API server took it."""
    async with leading_on_iris(api) as a:
        api.lease_writes_fail = True  # no renewal wins from now on: leadership ends within 2/3 s
        api.touch("iris")  # the first patch is refused (409)
        api.scale_read_delay_s = 1.0  # and the read after it outlasts the leadership
        await a.scale("iris", 7)
        assert not a.is_leader
        assert len(api.requests("PATCH", SCALE)) == 1 and api.scales["iris"] == 2


async def test_a_new_leader_reads_many_counts_within_its_leadership(api) -> None:
    """A pod that wins the Lease reads every Deployment's count first. One after another, 30 reads at 50 ms
    outlasted its leadership (2/3 of the 1 s Lease; with the 15 s default, 200 versions at 50 ms): it held
    and renewed the Lease, so no other pod took over, yet never led, and nothing was scaled."""
    a = _backend(api, "router-a", peers=True, lease_duration_s=1, renew_every_s=0.1)
    versions = [VersionConfig(name=f"v{i}", deployment=f"model-{i}") for i in range(30)]
    api.scales.update({v.deployment: 1 for v in versions})
    await a.start(Ready())
    try:
        await a.apply(versions)
        await until(lambda: a.is_leader)
        api.lease_writes_fail = True
        await until(lambda: not a._leading, timeout=2)
        api.scale_read_delay_s = 0.05
        api.lease_writes_fail = False
        await until(lambda: a.is_leader, timeout=3)
        assert all(a.replicas(v.deployment) == 1 for v in versions)
    finally:
        api.lease_writes_fail = False
        api.scale_read_delay_s = 0.0
        await a.stop()


async def test_a_second_instance_takes_over_an_expired_lease(api) -> None:
    api.leases["model-router-autoscaler"] = api._bump({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "model-router-autoscaler", "namespace": "models"},
        "spec": {"holderIdentity": "router-dead", "leaseDurationSeconds": 1, "leaseTransitions": 3,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}})
    b = _backend(api, "router-b", peers=True)
    await b.start(Ready())
    try:
        await asyncio.sleep(0.6)
        assert not b.is_leader  # the holder may still be alive: its lease runs a full duration
        await until(lambda: b.is_leader, timeout=2)
        spec = api.leases["model-router-autoscaler"]["spec"]
        assert spec["holderIdentity"] == "router-b" and spec["leaseTransitions"] == 4
    finally:
        await b.stop()


async def test_the_leader_sums_its_peers_demand_and_gathers_their_own_load(api, tmp_path) -> None:
    from aiohttp import web

    secret = tmp_path / "peer-secret"
    secret.write_text("s3cret-peer\n")
    seen: list[str | None] = []

    def peer(load: dict | None) -> web.Application:
        app = web.Application()

        async def handler(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Authorization"))
            if load is None:
                await asyncio.sleep(5)  # saturated: no answer within the leader's timeout
            return web.json_response(load)

        app.router.add_get("/internal/load", handler)
        return app

    first, port = await serve(peer({"demand": {"iris": 3, "other": 1}, "cpu_cores": 0.4, "routing_latency_ms": 2.5}),
                              "127.0.0.2")
    second, _ = await serve(peer({"demand": {"iris": 2}, "cpu_cores": 0.1, "routing_latency_ms": 0.5}), "127.0.0.3", port)
    third, _ = await serve(peer(None), "127.0.0.5", port)
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [
        ("127.0.0.2", True, "router-x"), ("127.0.0.3", False, "router-y"), ("127.0.0.4", True, "router-0"),
        ("127.0.0.5", True, "router-z")]))
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=AutoscaleConfig(min_replicas=2))
    leader = _backend(api, "router-0", peers=True, peer_port=port, secret_file=str(secret), router_scale=scale)
    follower = _backend(api, "router-y", peers=True, peer_port=port, secret_file=str(secret))
    api.scales["model-router"] = 3
    await leader.start(Ready())
    await until(lambda: leader.is_leader)
    await follower.start(Ready())
    try:
        # The leader skips itself (router-0); a peer not ready yet may still hold queued requests.
        assert sorted(leader.peer_addresses()) == [f"127.0.0.2:{port}", f"127.0.0.3:{port}", f"127.0.0.5:{port}"]
        await until(lambda: leader.remote_demand("iris") == 5)
        assert leader.remote_demand("other") == 1 and leader.remote_demand("absent") == 0
        assert sorted(leader.router_pods(), key=lambda p: p.cpu_cores) == [
            PodLoad(0.1, 0.5, ready=False), PodLoad(0.4, 2.5, ready=True),
            PodLoad(0.5, 500.0, ready=True)]  # the ready pod that did not answer: saturated
        assert set(seen) == {"Bearer s3cret-peer"}
        assert leader.replicas("model-router") == 3  # the router's own count, read on start
        await asyncio.sleep(0.3)
        assert follower.remote_demand("iris") == 0 and follower.router_pods() == []  # followers do not poll
    finally:
        await follower.stop()
        await leader.stop()
        await first.cleanup()
        await second.cleanup()
        await third.cleanup()


async def _leader_with_one_peer(api, secret, handler):
    """A leader, scaling the router Deployment too, and one ready peer at 127.0.0.2 whose /internal/load
    `handler` answers; returns the peer's runner and the leader, not started."""
    from aiohttp import web

    peer = web.Application()
    peer.router.add_get("/internal/load", handler)
    runner, port = await serve(peer, "127.0.0.2")
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [("127.0.0.2", True, "router-x")]))
    api.scales["model-router"] = 2
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=AutoscaleConfig(min_replicas=2))
    return runner, _backend(api, "router-0", peers=True, peer_port=port, secret_file=str(secret) if secret else None,
                            router_scale=scale)


@pytest.mark.parametrize("content, problem", [(b"\n", "empty"), (b"\x9f\x00\xfeRANDOM\xc3(", "not printable ASCII")])
async def test_an_unusable_peers_secret_is_not_sent_and_its_warning_logged_once(api, tmp_path, caplog, content,
                                                                                 problem) -> None:
    """A mounted secret that is empty, or random bytes (head -c 32 /dev/urandom: no header value): the
    leader polls nobody (each peer would refuse it, and a ready peer that refuses would count as
    saturated) until the secret is usable, and says so once. Decoding random bytes had ended the polling
    for good, even after the secret was fixed."""
    from aiohttp import web

    secret = tmp_path / "peer-secret"
    secret.write_bytes(content)
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"demand": {"iris": 1}, "cpu_cores": 0.1, "routing_latency_ms": 1.0})

    runner, leader = await _leader_with_one_peer(api, secret, handler)
    caplog.set_level(logging.WARNING, logger="router.kubernetes")
    await leader.start(Ready())
    try:
        await until(lambda: leader.is_leader)
        await asyncio.sleep(0.5)  # several polling rounds
        assert seen == [] and leader.router_pods() == [] and leader.remote_demand("iris") == 0
        assert caplog.text.count("peers' secret not usable") == 1 and problem in caplog.text
        secret.write_text("s3cret-peer\n")
        await until(lambda: leader.remote_demand("iris") == 1)
        assert set(seen) == {"Bearer s3cret-peer"} and "s3cret-peer" not in caplog.text
    finally:
        await leader.stop()
        await runner.cleanup()


async def test_a_leader_reads_the_counts_again_and_sees_one_set_outside_the_router(api, monkeypatch) -> None:
    monkeypatch.setattr(kubernetes, "SCALE_RESYNC_S", 0.2)
    api.scales["iris"] = 3
    backend = _backend(api, peers=True)
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        await until(lambda: backend.is_leader)
        assert backend.replicas("iris") == 3
        api.scales["iris"] = 0  # kubectl scale --replicas=0
        await until(lambda: backend.replicas("iris") == 0)
    finally:
        await backend.stop()


@contextlib.asynccontextmanager
async def leading_one_peer(api, tmp_path, load_handler) -> AsyncIterator[KubernetesBackend]:
    """A backend (router-0) whose one peer, router-x at 127.0.0.2, answers /internal/load with `load_handler`;
    stopped after, with the peer."""
    from aiohttp import web

    secret = tmp_path / "peer-secret"
    secret.write_text("s3cret-peer\n")
    app = web.Application()
    app.router.add_get("/internal/load", load_handler)
    runner, port = await serve(app, "127.0.0.2")
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [("127.0.0.2", True, "router-x")]))
    leader = _backend(api, "router-0", peers=True, peer_port=port, secret_file=str(secret))
    await leader.start(Ready())
    try:
        yield leader
    finally:
        await leader.stop()
        await runner.cleanup()


async def test_a_new_leader_has_listed_and_polled_its_peers_before_it_leads(api, tmp_path, monkeypatch) -> None:
    """The Lease was taken before the peers were listed, and the first decisions were made before their load was
    polled: on this pod's demand alone, as if the other pods served nothing."""
    from aiohttp import web

    monkeypatch.setattr(kubernetes, "RETRY_S", 0.05)
    api.refuse_lists, api.retry_after = 1, "0.3"  # the first list, the peers' (the versions' come later)

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)  # a busy peer, answering within the poll's timeout
        return web.json_response({"demand": {"iris": 5}, "cpu_cores": 0.2, "routing_latency_ms": 1})

    async with leading_one_peer(api, tmp_path, handler) as leader:
        await until(lambda: leader.is_leader)
        assert leader.remote_demand("iris") == 5
        first_lease = next(i for i, c in enumerate(api.calls) if c.path == LEASE)
        assert len([c for c in api.calls[:first_lease] if c.path == SLICES and "watch" not in c.query]) == 2


async def test_a_peer_reporting_figures_that_are_not_finite_adds_nothing(api, tmp_path) -> None:
    """Python's JSON reads NaN and Infinity: a peer's NaN demand went into the sum and on to math.ceil, which
    raised in the autoscale loop (and an infinite one scaled straight to max)."""
    import math

    from aiohttp import web

    answered = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal answered
        answered += 1
        return web.Response(text='{"demand": {"iris": NaN, "other": -1}, "cpu_cores": Infinity, "routing_latency_ms": 1}',
                            content_type="application/json")

    async with leading_one_peer(api, tmp_path, handler) as leader:
        await until(lambda: leader.is_leader and answered >= 2)
        assert leader.remote_demand("iris") == 0 and leader.remote_demand("other") == 0
        assert all(math.isfinite(p.cpu_cores) and math.isfinite(p.routing_latency_ms) for p in leader.router_pods())


async def test_a_peer_too_busy_to_answer_keeps_its_demand_for_a_while(api, tmp_path, monkeypatch) -> None:
    """A peer saturated by a burst misses the 0.5 s poll exactly when its demand is highest: it counted none,
    so the leader sized the versions for its own requests alone until the peer answered again."""
    from aiohttp import web

    monkeypatch.setattr(kubernetes, "SILENT_PEER_HOLD_S", 1.0)
    busy = False

    async def handler(request: web.Request) -> web.Response:
        if busy:
            await asyncio.sleep(5)  # past the leader's timeout
        return web.json_response({"demand": {"iris": 4}, "cpu_cores": 0.2, "routing_latency_ms": 1})

    async with leading_one_peer(api, tmp_path, handler) as leader:
        await until(lambda: leader.remote_demand("iris") == 4)
        busy = True
        silent = time.monotonic()
        await asyncio.sleep(0.8)  # polls that time out
        assert leader.remote_demand("iris") == 4
        await until(lambda: leader.remote_demand("iris") == 0, timeout=3)  # silent past the hold: none
        assert time.monotonic() - silent >= 1.0


async def test_a_count_that_cannot_be_read_is_warned_of_once_until_it_can(api, monkeypatch, caplog) -> None:
    """A version whose Deployment is gone (deleted before the config dropped it) logged a warning at every
    resync, every 5 s for as long as it stayed in the config."""
    monkeypatch.setattr(kubernetes, "SCALE_RESYNC_S", 0.05)
    caplog.set_level(logging.INFO, logger="router.kubernetes")
    backend = _backend(api, peers=True)  # no api.scales["iris"]: the scale subresource answers 404
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        await until(lambda: len(api.requests("GET", SCALE)) >= 5)
        assert caplog.text.count("deployment iris: scale not read") == 1
        api.scales["iris"] = 2
        await until(lambda: backend.replicas("iris") == 2)
        assert "deployment iris: scale read again (2 replicas)" in caplog.text
        del api.scales["iris"]
        await until(lambda: caplog.text.count("deployment iris: scale not read") == 2)
    finally:
        await backend.stop()


async def test_a_scale_answer_that_is_no_count_ends_no_resync(api, monkeypatch, caplog) -> None:
    """A scale answered with a replicas field that is no number (a proxy's page, a broken API server) raised out of
    the resync loop, the one backend loop without a catch-all: the leader never again followed a count set by
    someone else (a kubectl scale), for as long as the pod lived."""
    monkeypatch.setattr(kubernetes, "SCALE_RESYNC_S", 0.05)
    backend = _backend(api, peers=True)
    api.scales["iris"] = "many"
    await backend.start(Ready())
    try:
        await backend.apply([IRIS])
        await until(lambda: len(api.requests("GET", SCALE)) >= 3)
        assert caplog.text.count("deployment iris: scale not read") == 1
        api.scales["iris"] = 3
        await until(lambda: backend.replicas("iris") == 3)
        assert all(not t.done() for t in backend._tasks)
    finally:
        await backend.stop()


async def test_a_token_that_cannot_be_read_keeps_the_last_one_and_nothing_stops(api, monkeypatch, caplog) -> None:
    """Lease loop and watches lived through only the errors they listed: a token file missing for a moment
    (mid-rotation) ended both for good, and the pod never led again nor saw its endpoints change."""
    monkeypatch.setattr(kubernetes, "TOKEN_REREAD_S", 0.1)
    api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.1", True, "iris-1")]))
    ready, backend = Ready(), _backend(api, peers=True)
    token = Path(api.access.token_file)
    await backend.start(ready)
    try:
        await backend.apply([IRIS])
        await until(lambda: backend.is_leader and ready.addresses.get("iris") == ["10.0.0.1:5001"])
        saved = token.read_text()
        token.unlink()
        await asyncio.sleep(0.5)
        api.expire_watches()  # a relist, with the token gone
        api.put_slice(endpoint_slice("iris-a", "iris", [("10.0.0.2", True, "iris-2")]))
        await until(lambda: ready.addresses["iris"] == ["10.0.0.2:5001"])
        assert backend.is_leader and all(not t.done() for t in backend._tasks)
        assert "service account token not read, the last one is used" in caplog.text
        token.write_text(saved)
    finally:
        await backend.stop()


async def test_a_token_file_missing_from_the_start_is_warned_of_once_until_it_is_read(api, tmp_path, caplog,
                                                                                       monkeypatch) -> None:
    """A pod without its token (automountServiceAccountToken turned off by a policy) warned at every API call (each
    Lease attempt, each watch) that 'the last one is used', though there was none."""
    monkeypatch.setattr(kubernetes, "RETRY_S", 0.01)  # the peers' list, refused, is tried again at once
    caplog.set_level(logging.INFO, logger="router.kubernetes")
    token = Path(api.access.token_file)
    saved = token.read_text()
    token.unlink()
    backend = _backend(api, peers=True)
    await backend.start(Ready())
    try:
        await until(lambda: len(api.requests("GET", SLICES)) >= 5)  # no Lease call before the peers are listed
        assert caplog.text.count("service account token not read") == 1
        assert "service account token not read, none is sent" in caplog.text
        token.write_text(saved)
        await until(lambda: backend.is_leader)
        assert "service account token read" in caplog.text.split("service account token not read")[-1]
    finally:
        await backend.stop()


async def test_a_watch_that_ends_at_once_is_not_reopened_in_a_tight_loop() -> None:
    """An API server draining (or a proxy) ends each watch with no event: it was reopened thousands of
    times a second; now after a pause that doubles while it repeats."""
    from aiohttp import web

    watches = 0

    async def slices(request: web.Request) -> web.Response:
        nonlocal watches
        if request.query.get("watch") == "true":
            watches += 1
            return web.Response(status=200, content_type="application/json", body=b"")
        return web.json_response({"metadata": {"resourceVersion": "5"}, "items": []})

    app = web.Application()
    app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", slices)
    runner, port = await serve(app)
    api = kubernetes.Api(kubernetes.ApiAccess(f"http://127.0.0.1:{port}"))
    watch = kubernetes.SliceWatch(api, "models", "iris", lambda: None)
    try:
        await asyncio.sleep(3)
        assert 1 <= watches <= 6
    finally:
        await watch.stop()
        await api.close()
        await runner.cleanup()


async def test_a_peer_refusing_a_rotated_secret_keeps_its_last_load_and_is_not_saturated(api, tmp_path, caplog) -> None:
    """The kubelet updates each pod's Secret volume in its own time: mid-rotation a peer refuses the
    leader's new secret (404). It counted as saturated (scaling the routers out) and its demand as none."""
    from aiohttp import web

    secret = tmp_path / "peer-secret"
    secret.write_text("old-secret\n")

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer old-secret":
            return web.json_response({"error": "no route"}, status=404)
        return web.json_response({"demand": {"iris": 30}, "cpu_cores": 0.05, "routing_latency_ms": 0.3})

    runner, leader = await _leader_with_one_peer(api, secret, handler)
    caplog.set_level(logging.WARNING, logger="router.kubernetes")
    await leader.start(Ready())
    try:
        await until(lambda: leader.is_leader and leader.remote_demand("iris") == 30)
        secret.write_text("new-secret\n")  # the leader's pod sees the rotation first
        await until(lambda: "refuses the peers' secret" in caplog.text)
        await asyncio.sleep(0.4)
        assert leader.remote_demand("iris") == 30  # its last load stands in
        assert leader.router_pods() == [PodLoad(0.05, 0.3, ready=True)]  # not a saturated pod
        assert caplog.text.count("refuses the peers' secret") == 1
    finally:
        await leader.stop()
        await runner.cleanup()


async def test_peers_without_a_secret_are_polled_without_one(api) -> None:
    """No secret_file: the peers are asked with no Authorization header (checking the secret's bytes
    must not fail on there being none)."""
    from aiohttp import web

    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"demand": {"iris": 4}, "cpu_cores": 0.1, "routing_latency_ms": 1.0})

    runner, leader = await _leader_with_one_peer(api, None, handler)
    await leader.start(Ready())
    try:
        await until(lambda: leader.is_leader and leader.remote_demand("iris") == 4)
        assert set(seen) == {None}
    finally:
        await leader.stop()
        await runner.cleanup()


def _serving(chain, key, folder: Path) -> ssl.SSLContext:
    cert_file, key_file = write_pair(folder, chain, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _load_peer(demand: dict[str, int], seen: list[str | None]):
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"demand": demand, "cpu_cores": 0.1, "routing_latency_ms": 1.0})

    app = web.Application()
    app.router.add_get("/internal/load", handler)
    return app


async def test_over_tls_only_a_peer_presenting_the_routers_own_certificate_is_asked(api, tmp_path, caplog) -> None:
    """The leader sent the peers' secret to whatever answered at a peer's address, its certificate unchecked, and
    summed the load it made up. A peer must now present the router's own certificate: another from the same
    CA, or one naming the same host signed by itself, gets no request and counts for nothing."""
    ca = certificate("cluster issuer", ca=True)
    ours = certificate("router.example.com", ca)
    secret = tmp_path / "peer-secret"
    secret.write_text("s3cret-peer\n")
    seen: dict[str, list[str | None]] = {"genuine": [], "same CA": [], "same name": []}
    genuine, port = await serve(_load_peer({"iris": 3}, seen["genuine"]), "127.0.0.2",
                                tls=_serving([ours[0], ca[0]], ours[1], tmp_path / "genuine"))
    other = certificate("other.example.com", ca)
    same_ca, _ = await serve(_load_peer({"iris": 100}, seen["same CA"]), "127.0.0.3", port,
                             tls=_serving([other[0], ca[0]], other[1], tmp_path / "same-ca"))
    forged = certificate("router.example.com")
    same_name, _ = await serve(_load_peer({"iris": 100}, seen["same name"]), "127.0.0.5", port,
                               tls=_serving([forged[0]], forged[1], tmp_path / "same-name"))
    cert_file, key_file = write_pair(tmp_path / "own", [ours[0], ca[0]], ours[1])
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [
        ("127.0.0.2", True, "router-x"), ("127.0.0.3", True, "router-y"), ("127.0.0.5", True, "router-z")]))
    api.scales["model-router"] = 3
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=AutoscaleConfig(min_replicas=2))
    leader = _backend(api, "router-0", peers=True, peer_port=port, secret_file=str(secret), router_scale=scale,
                      tls=TlsConfig(cert_file=str(cert_file), key_file=str(key_file)))
    caplog.set_level(logging.WARNING, logger="router.kubernetes")
    await leader.start(Ready())
    try:
        await until(lambda: leader.is_leader and leader.remote_demand("iris") == 3)
        await asyncio.sleep(0.4)  # several polling rounds
        assert leader.remote_demand("iris") == 3
        assert leader.router_pods() == [PodLoad(0.1, 1.0, ready=True)]  # the refused ones are not saturated either
        assert set(seen["genuine"]) == {"Bearer s3cret-peer"} and seen["same CA"] == seen["same name"] == []
        assert caplog.text.count("presents a certificate this pod does not trust") == 2
    finally:
        await leader.stop()
        for runner in (genuine, same_ca, same_name):
            await runner.cleanup()


async def test_a_renewed_certificate_reaching_the_pods_at_different_times_keeps_the_peers_polled(
        api, tmp_path, monkeypatch, caplog) -> None:
    """The kubelet swaps each pod's Secret in its own time: the leader first, its peer still on the certificate it
    renewed is trusted; the peer first, its last load stands in (not saturated) until the leader's files change."""
    monkeypatch.setattr(auth, "KEY_RELOAD_S", 0.0)
    ca = certificate("cluster issuer", ca=True)
    first, second, third = (certificate("router.example.com", ca) for _ in range(3))
    demand = {"iris": 1}
    peer = _load_peer(demand, [])
    runner, port = await serve(peer, "127.0.0.2", tls=_serving([first[0], ca[0]], first[1], tmp_path / "peer"))
    own = tmp_path / "own"
    cert_file, key_file = write_pair(own, [first[0], ca[0]], first[1])
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [("127.0.0.2", True, "router-x")]))
    leader = _backend(api, "router-0", peers=True, peer_port=port,
                      tls=TlsConfig(cert_file=str(cert_file), key_file=str(key_file)))
    caplog.set_level(logging.WARNING, logger="router.kubernetes")
    await leader.start(Ready())

    async def peer_serves(pair) -> None:
        nonlocal runner
        await runner.cleanup()  # its open connections go: the next request shakes hands again
        runner, _ = await serve(peer, "127.0.0.2", port, tls=_serving([pair[0], ca[0]], pair[1], tmp_path / "peer"))

    try:
        await until(lambda: leader.is_leader and leader.remote_demand("iris") == 1)
        write_pair(own, [second[0], ca[0]], second[1])  # the leader's pod renewed first
        await asyncio.sleep(0.3)
        demand["iris"] = 2
        await until(lambda: leader.remote_demand("iris") == 2)
        await peer_serves(second)
        demand["iris"] = 3
        await until(lambda: leader.remote_demand("iris") == 3)
        await peer_serves(third)  # now the peer's pod renewed first
        demand["iris"] = 4
        await until(lambda: "presents a certificate this pod does not trust" in caplog.text)
        await asyncio.sleep(0.3)
        assert leader.remote_demand("iris") == 3 and leader.router_pods() == [PodLoad(0.1, 1.0, ready=True)]
        write_pair(own, [third[0], ca[0]], third[1])
        await until(lambda: leader.remote_demand("iris") == 4)
    finally:
        await leader.stop()
        await runner.cleanup()


async def test_a_lasting_lease_refusal_is_warned_of_once_and_its_end_told(api, caplog) -> None:
    """A Role without the Lease, or an API server down for an hour, logged a warning at every attempt (each
    renewal period, for good): 1,800 an hour a pod, the one line that mattered lost among them."""
    caplog.set_level(logging.INFO, logger="router.kubernetes")
    api.refuse_leases = 8
    backend = _backend(api, peers=True)  # renewing every 0.1 s
    await backend.start(Ready())
    try:
        await until(lambda: backend.is_leader)
        assert len(api.requests("GET", LEASE)) >= 9
        refusals = [r for r in caplog.records if r.getMessage().startswith("lease: ")]
        assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
        assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("lease calls answer again")]
    finally:
        await backend.stop()
