"""LocalBackend without processes: how many replicas it keeps for each version, across reloads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router_image.backends import local
from router_image.backends.local import LocalBackend, LocalReplica
from router_image.config import AutoscaleConfig, RouteConfig, RouterConfig, ScorerLaunch, VersionConfig

pytestmark = pytest.mark.anyio


class Process:
    """A scorer process that runs until terminated."""

    pid = 0
    returncode = None

    def poll(self) -> None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def kill(self) -> None:
        pass


def backend() -> LocalBackend:
    b = LocalBackend()

    def spawn(v) -> LocalReplica:
        index = v.free_index()
        return LocalReplica(index, 1000 + index, Process())  # type: ignore[arg-type]

    b._spawn = spawn  # type: ignore[method-assign]
    return b


def as_read(autoscale_enabled: bool, v: VersionConfig) -> VersionConfig:
    """The version as the router's config gives it to the backend."""
    config = RouterConfig(autoscale_enabled=autoscale_enabled,
                          routes=[RouteConfig(kind="service", name="s", versions=[v])])
    return config.routes[0].versions[0]


@pytest.mark.parametrize("autoscale_enabled, autoscale", [(False, AutoscaleConfig()),
                                                          (True, AutoscaleConfig(enabled=False))])
async def test_a_reload_sizes_a_fixed_version_to_its_new_num_replicas(autoscale_enabled, autoscale) -> None:
    """Off for the router (a dev_test cluster) or for the version: num_replicas is the count, on
    every reload, not only the first."""
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=1, scorer=ScorerLaunch(), autoscale=autoscale)
    await b.apply([as_read(autoscale_enabled, v)])
    assert b.replicas("iris") == 1
    await b.apply([as_read(autoscale_enabled, v.model_copy(update={"num_replicas": 3}))])
    assert b.replicas("iris") == 3 and len(b._versions["iris"].replicas) == 3
    await b.apply([as_read(autoscale_enabled, v.model_copy(update={"num_replicas": 2}))])
    assert b.replicas("iris") == 2 and len(b._versions["iris"].replicas) == 2


async def test_a_reload_that_turns_the_routers_autoscaling_off_fixes_the_count() -> None:
    """A stack moved to dev_test: the versions its autoscaler sized go back to num_replicas."""
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=2, scorer=ScorerLaunch())
    await b.apply([as_read(True, v)])
    await b.scale("iris", 5)
    assert b.replicas("iris") == 5
    await b.apply([as_read(False, v)])
    assert b.replicas("iris") == 2 and len(b._versions["iris"].replicas) == 2


async def test_an_autoscaled_version_keeps_the_count_its_autoscaler_set() -> None:
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=1, scorer=ScorerLaunch(),
                      autoscale=AutoscaleConfig(min_replicas=1))
    await b.apply([v])
    await b.scale("iris", 4)
    await b.apply([v.model_copy(update={"num_replicas": 2})])
    assert b.replicas("iris") == 4


async def test_a_version_it_cannot_start_changes_nothing() -> None:
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", scorer=ScorerLaunch())
    await b.apply([v])
    with pytest.raises(ValueError, match="no scorer launch settings"):
        await b.apply([VersionConfig(name="v2", deployment="other")])  # iris removed, other unstartable
    assert b.replicas("iris") == 1  # still running
    with pytest.raises(ValueError, match="scorer cwd .* is not a folder"):  # found before iris is stopped
        await b.apply([VersionConfig(name="v2", deployment="other", scorer=ScorerLaunch(cwd="/nonexistent/folder"))])
    assert b.replicas("iris") == 1 and b._versions["iris"].replicas[0].process.returncode is None


async def test_a_replica_that_cannot_be_started_is_tried_again_later_not_raised(tmp_path, monkeypatch) -> None:
    """Its folder removed after the config applied: the spawn fails like an early exit, with a pause."""
    monkeypatch.setattr(local, "_reap", lambda process, grace_s: None)
    b = LocalBackend()
    v = VersionConfig(name="v1", deployment="iris", scorer=ScorerLaunch(cwd=str(tmp_path / "gone")))
    (tmp_path / "gone").mkdir()
    await b.apply([v])  # spawns a real process: stop it below
    first = b._versions["iris"].replicas[0]
    try:
        (tmp_path / "gone").rmdir()
        await b.scale("iris", 2)  # the second cannot start in a folder that is gone
        assert len(b._versions["iris"].replicas) == 1 and b._versions["iris"].spawn_after > 0
        await b._check()  # the watch's pass goes on
    finally:
        first.process.kill()
        first.process.wait()


async def test_a_reload_that_changes_how_replicas_start_rolls_them(monkeypatch) -> None:
    """A new model or entry script under the same deployment: new replicas start, and the old ones serve
    until as many new ones are ready, then stop (a Deployment's rollout)."""
    b = backend()
    published: list[list[str]] = []
    b._on_ready = lambda deployment, addresses: published.append(addresses)  # type: ignore[method-assign]
    v = VersionConfig(name="v1", deployment="iris", num_replicas=2, scorer=ScorerLaunch(env={"MODEL": "old"}),
                      autoscale=AutoscaleConfig(enabled=False))
    await b.apply([v])
    old = list(b._versions["iris"].replicas)
    for r in old:
        r.ready = True
    await b.apply([v.model_copy(update={"scorer": ScorerLaunch(env={"MODEL": "new"})})])
    new = b._versions["iris"].replicas
    assert len(new) == 2 and not set(new) & set(old)
    assert published[-1] == [r.address for r in old]  # the old ones serve meanwhile
    new[0].ready = True
    b._converge(b._versions["iris"])
    assert published[-1] == [r.address for r in old] + [new[0].address]
    assert all(r.process.returncode is None for r in old)
    new[1].ready = True
    b._converge(b._versions["iris"])
    assert published[-1] == [r.address for r in new]
    assert all(r.process.returncode == -15 for r in old)


async def test_a_replica_scaled_away_has_its_scorers_stop_grace_to_finish(monkeypatch) -> None:
    """It was killed 10 s after SIGTERM whatever its scoring timeout: a longer request was cut off, and the
    scorer's own stop (its collected data shipped, its state folder removed) never ran."""
    reaped: list[float] = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda *args, **kwargs: Process())
    monkeypatch.setattr(local, "_reap", lambda process, grace_s: reaped.append(grace_s))
    b = LocalBackend()
    v = VersionConfig(name="v1", deployment="iris", scorer=ScorerLaunch(stop_grace_seconds=65.0),
                      autoscale=AutoscaleConfig(min_replicas=1, max_replicas=3))
    await b.apply([v])
    await b.scale("iris", 2)
    assert [r.index for r in b._versions["iris"].replicas] == [0, 1]
    await b.scale("iris", 1)
    await asyncio.sleep(0.05)  # the reap runs on the executor
    assert reaped == [65.0]
    await b.scale("iris", 2)  # the freed index again: its log goes on in the same file
    assert [r.index for r in b._versions["iris"].replicas] == [0, 1]


async def test_a_replica_that_keeps_dying_within_a_minute_is_replaced_after_growing_pauses(monkeypatch) -> None:
    """Past its first 10 s it was replaced at once, every time: a model that loads and then crashes (a lazy
    import, a first request it cannot take) restarted in a loop as fast as it loaded, as no pod would."""
    monkeypatch.setattr(local, "_readiness", lambda address: asyncio.sleep(0, (True, None)))
    b = backend()
    await b.apply([VersionConfig(name="v1", deployment="iris", scorer=ScorerLaunch(), autoscale=AutoscaleConfig(enabled=False))])
    pauses = []
    for _ in range(3):
        (r,) = b._versions["iris"].replicas
        r.started -= 30
        r.process.returncode = 1
        b._versions["iris"].spawn_after = 0.0
        await b._check()  # replaced, or paused
        pauses.append(round(b._versions["iris"].spawn_after - time.monotonic()))
        b._versions["iris"].spawn_after = 0.0  # the pause over
        await b._check()
    assert pauses == [1, 2, 4]
    (r,) = b._versions["iris"].replicas
    r.started -= local.HEALTHY_S  # ran a while: replaced at once, the pauses start over
    r.process.returncode = 1
    await b._check()
    assert len(b._versions["iris"].replicas) == 1 and b._versions["iris"].early_exits == 0


async def test_a_replica_that_dies_after_running_says_why_none_is_ready_until_its_replacement_is(monkeypatch) -> None:
    """Killed after running a while (the kernel's out-of-memory killer), it was replaced with no word in /readyz:
    `local status` showed 0/1 ready and no reason while the new one loaded its model."""
    ready = False
    monkeypatch.setattr(local, "_readiness", lambda address: asyncio.sleep(0, (ready, None)))
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=2, scorer=ScorerLaunch(),
                      autoscale=AutoscaleConfig(enabled=False))
    await b.apply([v])
    first, second = b._versions["iris"].replicas
    for r in (first, second):
        r.ready, r.started = True, r.started - 60
    first.process.returncode = 1
    await b._check()
    assert b.problem("iris") is None  # the other one serves
    second.process.returncode = -9
    await b._check()
    assert b.problem("iris") == "replica iris-1 was killed by SIGKILL (out of memory?) after 60 s; replacing it"
    assert len(b._versions["iris"].replicas) == 2  # replaced at once, no pause
    ready = True
    await b._check()
    assert b.problem("iris") is None


async def test_a_ready_replica_that_stops_answering_leaves_the_pool_until_it_answers_again(caplog) -> None:
    """Ready replicas were never asked again: one that hung (its loop stuck, SIGSTOPped) got its share of the
    requests, each failing at its timeout. As a kubelet's readiness probe: out after READY_FAILURES in a row,
    not killed, back when it answers, and /readyz says why while none serves."""
    caplog.set_level("INFO", logger="router.local")
    answers = {"127.0.0.1:1000": True, "127.0.0.1:1001": True}
    b = backend()
    b.probe = lambda address: asyncio.sleep(0, answers[address])  # type: ignore[method-assign]
    published: list[list[str]] = []
    b._on_ready = lambda deployment, addresses: published.append(addresses)  # type: ignore[method-assign]
    await b.apply([VersionConfig(name="v1", deployment="iris", num_replicas=2, scorer=ScorerLaunch(),
                                 autoscale=AutoscaleConfig(enabled=False))])
    first, second = b._versions["iris"].replicas
    first.ready = second.ready = True
    b._converge(b._versions["iris"])
    answers[first.address] = False
    for _ in range(local.READY_FAILURES - 1):  # a probe that failed once or twice: still in
        await b._reprobe()
    assert published[-1] == [first.address, second.address]
    await b._reprobe()
    assert published[-1] == [second.address] and b.problem("iris") is None  # the other one serves
    assert "replica iris-0 failed its readiness probe 3 times in a row; out of the pool" in caplog.text
    answers[second.address] = False
    for _ in range(local.READY_FAILURES):
        await b._reprobe()
    assert published[-1] == []
    assert b.problem("iris") == ("replica iris-0 does not answer its readiness probe (3 failed in a row); "
                                 "it gets no traffic until it does")
    assert first.process.returncode is None and second.process.returncode is None  # not restarted
    assert len(b._versions["iris"].replicas) == 2  # nor replaced
    answers[second.address] = True
    await b._reprobe()
    assert published[-1] == [second.address] and b.problem("iris") is None
    assert "replica iris-1 answers its readiness probe again; back in the pool" in caplog.text


async def test_a_sigstopped_scorer_leaves_the_pool_and_comes_back_on_sigcont(tmp_path, monkeypatch) -> None:
    """A real replica whose serving process is stopped: out of the published addresses, the other replica's
    probes not held up by it, and back once it runs again."""
    monkeypatch.setattr(local, "READY_PROBE_EVERY_S", 0.2)
    async with sleepy_replicas(tmp_path, 2) as (b, published):
        stuck, other = b._versions["iris"].replicas
        workers = [int(pid) for pid in Path(f"/proc/{stuck.process.pid}/task/{stuck.process.pid}/children").read_text().split()]
        assert workers
        for pid in workers:  # the worker serves; the supervisor would not answer /ready anyway
            os.kill(pid, signal.SIGSTOP)
        try:
            await until(lambda: published["iris"] == [other.address], 10)
            assert stuck.process.poll() is None and "does not answer" not in (b.problem("iris") or "")
            assert other.failures == 0  # its probes answered all along
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        await until(lambda: sorted(published["iris"]) == sorted([stuck.address, other.address]), 10)


@contextlib.asynccontextmanager
async def sleepy_replicas(tmp_path: Path, count: int) -> AsyncIterator[tuple[LocalBackend, dict[str, list[str]]]]:
    """A backend running `count` real replicas of sleepy.py (their logs in tmp_path), once all are published;
    yields it and what it published. Stopped after."""
    from scoring_image.config import ScorerSettings

    scripts = Path(__file__).resolve().parents[1] / "scorer" / "scripts"
    env = ScorerSettings(entry_script="sleepy.py", app_root=str(scripts), host="127.0.0.1", workers=1).to_env()
    published: dict[str, list[str]] = {}
    b = LocalBackend()
    await b.start(lambda deployment, addresses: published.__setitem__(deployment, addresses))
    try:
        await b.apply([VersionConfig(name="v1", deployment="iris", num_replicas=count, autoscale=AutoscaleConfig(enabled=False),
                                     scorer=ScorerLaunch(env=env, cwd=str(scripts), log_dir=str(tmp_path),
                                                         stop_grace_seconds=2.0))])
        await until(lambda: len(published.get("iris", [])) == count, 60)
        yield b, published
    finally:
        await b.stop()


async def until(check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_replicas_log_past_its_bound_moves_aside_and_starts_empty(tmp_path, monkeypatch) -> None:
    """A stack left running under load wrote an access line per request to its replicas' logs without end.
    The replica goes on writing to the file it opened: at its new end, no hole of NULs before it."""
    import httpx

    monkeypatch.setattr(local, "LOG_MAX_BYTES", 20_000)
    monkeypatch.setattr(local, "LOG_CHECK_EVERY_S", 0.1)
    async with sleepy_replicas(tmp_path, 1) as (_, published):
        async with httpx.AsyncClient(base_url=f"http://{published['iris'][0]}") as client:
            for _ in range(300):  # an access line each, some 250 bytes: 75 kB in all
                assert (await client.post("/score", json={})).status_code == 200
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.3)
            log, older = tmp_path / "iris-0.log", tmp_path / "iris-0.log.1"
            assert log.stat().st_size < 40_000, log.stat().st_size  # the bound, and what came in until the next look
            assert 20_000 < older.stat().st_size < 40_000
            monkeypatch.setattr(local, "LOG_MAX_BYTES", 10**9)  # no further move: the next line stays here
            assert (await client.post("/score", json={})).status_code == 200
        await asyncio.sleep(0.2)
        written = log.read_bytes()
        assert b"\0" not in written and written.endswith(b"}\n") and b"POST /score 200" in written.splitlines()[-1]


def test_a_replica_whose_router_died_before_it_could_ask_to_die_with_it_exits() -> None:
    """PR_SET_PDEATHSIG set in the child after the fork: a router killed in between left a scorer that no
    death signal would ever reach, an orphan holding its port. Stood in for by naming another parent."""
    import functools
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "print('ran')"], stdout=subprocess.PIPE,
                             preexec_fn=functools.partial(local._die_with_parent, os.getppid()))
    out, _ = child.communicate(timeout=30)
    assert child.returncode != 0 and out == b""
    ours = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, timeout=30,
                          preexec_fn=functools.partial(local._die_with_parent, os.getpid()))
    assert ours.returncode == 0 and ours.stdout == b"ran\n"
