"""The run thread: results and errors come back to the loop, in order; deadlines; abandon()."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scoring_image.runner import Abandoned, Runner, RunTimeout


def test_jobs_run_on_one_thread_in_order_and_errors_come_back() -> None:
    async def scenario() -> None:
        runner = Runner(asyncio.get_running_loop(), timeout_s=5)
        seen: list[int] = []

        def job(i: int):  # noqa: ANN202
            def run() -> tuple[int, str]:
                seen.append(i)
                if i == 3:
                    raise ValueError("three")
                return i, threading.current_thread().name

            return run

        futures = [runner.submit(job(i)) for i in range(6)]  # one loop iteration: one batch
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert seen == list(range(6))
        assert isinstance(results[3], ValueError)
        assert [r for i, r in enumerate(results) if i != 3] == [(i, "run") for i in (0, 1, 2, 4, 5)]
        assert await runner.submit(lambda: "later") == "later"  # a second batch

    asyncio.run(scenario())


def test_time_queued_behind_slow_runs_is_not_a_runs_overrun() -> None:
    """Three runs of 0.2 s submitted at once with a 0.3 s timeout: each run() keeps to it."""
    async def scenario() -> None:
        runner = Runner(asyncio.get_running_loop(), timeout_s=0.3)
        results = await asyncio.gather(*[runner.submit(lambda i=i: (time.sleep(0.2), i)[1]) for i in range(3)])
        assert results == [0, 1, 2]

    asyncio.run(scenario())


def test_a_job_over_its_deadline_fails_and_abandon_fails_the_queued_ones() -> None:
    async def scenario() -> None:
        runner = Runner(asyncio.get_running_loop(), timeout_s=0.3)
        release = threading.Event()
        stuck = runner.submit(lambda: release.wait(10))
        queued = runner.submit(lambda: "never")
        started = time.monotonic()
        with pytest.raises(RunTimeout):
            await stuck
        assert time.monotonic() - started < 2
        runner.abandon()
        with pytest.raises((Abandoned, RunTimeout)):
            await queued
        with pytest.raises(Abandoned):
            await runner.submit(lambda: "after")
        release.set()

    asyncio.run(scenario())


def test_a_periodic_job_that_fails_once_goes_on_running() -> None:
    """The spool's sealing and the metrics' publishing run every few seconds: one failure (a refused
    rename) used to end the repetition for the worker's life."""
    from scoring_image import worker

    calls: list[int] = []

    def seal() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("rename refused")

    async def main() -> None:
        worker._every(asyncio.get_running_loop(), 0.01, seal)
        await asyncio.sleep(0.2)

    asyncio.run(main())
    assert len(calls) >= 3


def test_a_job_cancelled_while_queued_never_runs() -> None:
    """A client that left (or a request abandoned) while its job waited behind another: its run() must not run
    at all, or the entry script would score for nobody and hold up the jobs behind it."""
    async def scenario() -> None:
        runner = Runner(asyncio.get_running_loop(), timeout_s=5)
        release = threading.Event()
        ran: list[str] = []
        busy = runner.submit(lambda: (release.wait(5), ran.append("busy")))
        gone = runner.submit(lambda: ran.append("gone"))
        await asyncio.sleep(0.05)  # the thread is in the first job, the second queued behind it
        gone.cancel()
        release.set()
        await busy
        assert await runner.submit(lambda: "next") == "next"  # ran after the cancelled one's turn
        assert ran == ["busy"]

    asyncio.run(scenario())


def test_the_shared_deadline_is_set_while_a_bounded_job_runs_and_cleared_after(tmp_path) -> None:
    """The supervisor kills a worker whose slot holds a deadline long past: left set after its job, an idle
    worker would be killed a timeout later for a job it had finished."""
    from scoring_image import watchdog

    watchdog.create(tmp_path / "deadlines", 1)
    shared = watchdog.Deadline(tmp_path / "deadlines", 0)

    async def scenario() -> None:
        runner = Runner(asyncio.get_running_loop(), timeout_s=5, shared=shared)
        before = time.monotonic()
        during = await runner.submit(lambda: shared.slots[0])
        assert before + 5 <= during <= time.monotonic() + 5
        assert shared.slots[0] == 0.0
        with pytest.raises(ValueError):
            await runner.submit(lambda: (_ for _ in ()).throw(ValueError("fails")))
        assert shared.slots[0] == 0.0  # a run() that raised, too
        assert await runner.submit(lambda: shared.slots[0], bounded=False) == 0.0  # unbounded: no deadline

    asyncio.run(scenario())
