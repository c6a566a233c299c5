"""Config reload under load drops nothing; the local backend scales up at once and down after the delay."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import RouterProcess, launch, score, wait_until  # noqa: E402

from router_image.config import AuthConfig, AutoscaleConfig, RouteConfig, RouterConfig, VersionConfig  # noqa: E402

OFF = AuthConfig(key_enabled=False)


class Load:
    """Clients calling a route in a loop until stopped; every answer's status and version kept."""

    def __init__(self, base_url: str, route: str, clients: int, body: dict | None = None):
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base_url, route, body)) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, base_url: str, route: str, body: dict | None) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while not self._stop.is_set():
                answer = score(client, route, body)
                self.answers.append((answer.status_code, answer.headers.get("azureml-model-deployment")))

    def stop(self) -> list[tuple[int, str | None]]:
        """Idempotent: also the cleanup of a test that failed under load."""
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.answers


def test_reload_adds_splits_and_removes_versions_without_dropping_a_request(tmp_path) -> None:
    def endpoint(*versions: VersionConfig) -> RouterConfig:
        return RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="endpoint", name="ep", auth=OFF,
                                                                         versions=list(versions))])

    def version(name: str, **kw) -> VersionConfig:
        return VersionConfig(name=name, deployment=f"r-{name}", replica_max_concurrent_requests=4,
                             scorer=launch(name, tmp_path), **kw)

    router = RouterProcess(endpoint(version("v1", is_default=True)), tmp_path)
    load = None
    try:
        router.wait_ready()
        load = Load(router.base_url, "endpoint/ep", clients=3)
        time.sleep(0.5)
        router.write(endpoint(version("v1", is_default=True), version("v2", traffic_percentile=50)))
        wait_until(lambda: router.version_status("v2").get("ready") == 1, 60, 0.1, "v2 ready")
        mark = len(load.answers)
        time.sleep(2)
        both = Counter(v for _, v in load.answers[mark:])
        router.write(endpoint(version("v1"), version("v2", is_default=True)))
        time.sleep(1.5)
        router.write(endpoint(version("v2", is_default=True)))
        wait_until(lambda: [v["name"] for v in router.status()["routes"][0]["versions"]] == ["v2"], 10, 0.1, "v1 gone")
        mark = len(load.answers)
        time.sleep(1)
        answers = load.stop()
        assert answers and all(status == 200 for status, _ in answers), Counter(s for s, _ in answers)
        assert both["v1"] > 0 and both["v2"] > 0 and abs(both["v1"] - both["v2"]) < 0.3 * sum(both.values()), both
        assert {v for _, v in answers[mark:]} == {"v2"}
        assert "config reloaded" in router.log()
        router.config_path.write_text("{not json")  # a broken file keeps the running config
        time.sleep(1.5)
        assert score(router.client, "endpoint/ep").status_code == 200
    finally:
        if load is not None:
            load.stop()
        router.stop()


def test_requests_queued_on_a_version_a_reload_removes_go_where_the_new_config_sends_them(tmp_path) -> None:
    """v2 takes all traffic with its one slot busy and two requests in line; a reload removes v2: the two
    go to v1 (ready, idle) at once, not to a 503 after max_request_wait_time."""
    def version(name: str, **kw) -> VersionConfig:
        return VersionConfig(name=name, deployment=f"q-{name}", scorer=launch(name, tmp_path),
                             max_request_wait_time_ms=10_000, **kw)

    def endpoint(*versions: VersionConfig) -> RouterConfig:
        return RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="endpoint", name="ep", auth=OFF,
                                                                         versions=list(versions))])

    router = RouterProcess(endpoint(version("v1", is_default=True), version("v2", traffic_percentile=100)), tmp_path)
    answers: list[tuple[float, int, str | None]] = []

    def call(sleep: float) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=router.base_url, timeout=30) as client:
            answer = score(client, "endpoint/ep", {"sleep": sleep})
        answers.append((time.monotonic() - started, answer.status_code, answer.headers.get("azureml-model-deployment")))

    threads = [threading.Thread(target=call, args=(1.5,))]
    try:
        router.wait_ready()
        threads[0].start()
        wait_until(lambda: router.version_status("v2").get("in_flight") == 1, 10, 0.02, "v2's slot taken")
        threads += [threading.Thread(target=call, args=(0,)) for _ in range(2)]
        for t in threads[1:]:
            t.start()
        wait_until(lambda: router.version_status("v2").get("queued") == 2, 10, 0.02, "two in v2's line")
        router.write(endpoint(version("v1", is_default=True)))
        for t in threads:
            t.join()
        assert sorted((status, served) for _, status, served in answers) == [(200, "v1"), (200, "v1"), (200, "v2")]
        assert max(took for took, _, served in answers if served == "v1") < 5  # not after the 10 s wait
    finally:
        for t in threads:
            t.join()
        router.stop()


def autoscaled(tmp_path: Path, delay_s: float) -> RouterConfig:
    scale = AutoscaleConfig(min_replicas=1, max_replicas=3, target_utilization=70, refresh_seconds=0.5,
                            scale_down_delay_seconds=delay_s)
    return RouterConfig(routes=[RouteConfig(kind="service", name="auto", auth=OFF, versions=[VersionConfig(
        name="v1", deployment="auto", autoscale=scale, max_request_wait_time_ms=5000, scorer=launch("v1", tmp_path))])])


def test_scales_up_at_once_and_down_after_the_delay(tmp_path) -> None:
    router = RouterProcess(autoscaled(tmp_path, delay_s=3), tmp_path)
    try:
        router.wait_ready()
        assert router.version_status("v1")["replicas"] == 1
        # 3 clients on 1 slot: demand 3 wants ceil(3 / 0.7) = 5, clamped to 3 (in one or two samples,
        # as the average over refresh_seconds rises); at 3 replicas the utilization stays near 100 %,
        # so nothing scales down under the load.
        load = Load(router.base_url, "service/auto", clients=3, body={"sleep": 0.2})
        started = time.monotonic()
        wait_until(lambda: router.version_status("v1")["replicas"] == 3, 5, 0.05, "scale-up decision")
        decided = time.monotonic() - started
        wait_until(lambda: router.version_status("v1")["ready"] == 3, 60, 0.2, "new replicas ready")
        time.sleep(1)
        answers = load.stop()
        assert all(status == 200 for status, _ in answers)
        assert decided < 1.5  # up at the first samples (plus polling)
        assert "scale auto up: 1 -> " in router.log() and "scale auto down" not in router.log()

        stopped = time.monotonic()
        replicas = []
        while time.monotonic() - stopped < 2.5:  # idle, but not for the whole delay yet: no change
            replicas.append(router.version_status("v1")["replicas"])
            time.sleep(0.1)
        assert set(replicas) == {3}, replicas
        wait_until(lambda: router.version_status("v1")["replicas"] == 1, 15, 0.1, "scale-down")
        waited = time.monotonic() - stopped
        assert 2.9 <= waited < 6, waited  # the 3 s delay (+ the 0.5 s averaging and polling)
        wait_until(lambda: router.version_status("v1")["ready"] == 1, 30, 0.2, "replicas stopped")
        # straight to the largest count the idle window wants: min_replicas, in one step
        assert "scale auto down: 3 -> 1 replicas" in router.log()
    finally:
        router.stop()


@pytest.mark.slow
def test_steady_load_settles_without_flapping(tmp_path) -> None:
    router = RouterProcess(autoscaled(tmp_path, delay_s=5), tmp_path)
    load = None
    try:
        router.wait_ready()
        load = Load(router.base_url, "service/auto", clients=2, body={"sleep": 0.1})
        time.sleep(5)
        counts = []
        for _ in range(40):  # 20 s of steady load, eight scale-down delays
            counts.append(router.version_status("v1")["replicas"])
            time.sleep(0.5)
        assert len(set(counts)) == 1, counts
    finally:
        if load is not None:
            load.stop()
        router.stop()


@pytest.mark.slow  # 4-15 s (three replicas start), and the default run stays under 90 s
def test_replicas_removed_by_a_lowered_max_finish_their_requests(tmp_path) -> None:
    def config(replicas: int) -> RouterConfig:
        scale = AutoscaleConfig(min_replicas=replicas, max_replicas=replicas, refresh_seconds=0.5,
                                scale_down_delay_seconds=60)
        return RouterConfig(routes=[RouteConfig(kind="service", name="auto", auth=OFF, versions=[VersionConfig(
            name="v1", deployment="auto", autoscale=scale, scorer=launch("v1", tmp_path))])])

    router = RouterProcess(config(3), tmp_path)
    try:
        router.wait_ready()
        wait_until(lambda: router.version_status("v1")["ready"] == 3, 60, 0.1, "three ready replicas")
        with ThreadPoolExecutor(3) as pool:
            # one 1 s request on each replica (least busy first), then the bound drops to 1 under them
            def slow_call() -> httpx.Response:
                with httpx.Client(base_url=router.base_url, timeout=30) as client:
                    return score(client, "service/auto", {"sleep": 1.0})

            calls = [pool.submit(slow_call) for _ in range(3)]
            wait_until(lambda: router.version_status("v1")["in_flight"] == 3, 10, 0.02, "three in flight")
            router.write(config(1))
            wait_until(lambda: router.version_status("v1")["replicas"] == 1, 5, 0.05, "max_replicas applied")
            answers = [c.result() for c in calls]
        assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
        assert len({a.json()["pid"] for a in answers}) == 3  # two of them on replicas stopped meanwhile
        wait_until(lambda: router.version_status("v1")["ready"] == 1, 30, 0.1, "one replica left")
        assert "scale auto down: 3 -> 1 replicas (max_replicas is 1)" in router.log()
    finally:
        router.stop()
