"""The entry script's code runs on one dedicated thread, so the event loop never waits on it.

One thread per worker process, as Azure ML runs one request at a time per worker: entry
scripts keep their model in globals and are not written to be thread-safe.  A job's deadline
starts when the thread takes it up (time spent queued behind other runs is not its run()
overrunning), and one periodic sweep enforces the running job's (a timer per request costs
more).  When it passes, the caller answers 504; a thread cannot be stopped, so the worker
process is recycled, and `abandon()` fails the jobs still queued behind the stuck one at once (as it
does, near the drain's end, those a stopping worker could not start in time).

A hand-over costs more than a trivial run() (a thread wake-up, a loop wake-up, the GIL going
back and forth), so both directions go in batches: the jobs submitted during one loop
iteration travel to the thread together, at the end of the iteration, when the loop is about
to let go of the GIL; and results that finish before the loop took the earlier ones are
settled by the same loop callback.  Measured in-process with 4-32 requests in flight: a
quarter fewer context switches per job.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from scoring_image import logs, telemetry
from scoring_image.watchdog import Deadline


class RunTimeout(Exception):
    """The job overran its deadline."""


class Abandoned(Exception):
    """The worker is being recycled; the job never started."""


_Job = tuple[Callable[[], Any], asyncio.Future[Any], "str | None", Any, bool]  # fn, its future, request id, trace, bounded


class Runner:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, shared: Deadline | None = None) -> None:
        """`shared`: where the running job's deadline is told to the supervisor (watchdog.py)."""
        self._loop = loop
        self._timeout_s = timeout_s
        self._shared = shared
        self._sweep_s = min(timeout_s / 20, 0.1)
        self._bounded: collections.deque[asyncio.Future[Any]] = collections.deque()  # submitted, in order
        self._running: tuple[float, asyncio.Future[Any]] | None = None  # a bounded job on the thread: its deadline
        self._jobs: queue.SimpleQueue[list[_Job]] = queue.SimpleQueue()
        self._batch: list[_Job] = []  # submitted during this loop iteration
        self._results: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = collections.deque()
        self._settle_scheduled = False  # set by the run thread, cleared by the loop
        self._abandoned = False
        self._thread = threading.Thread(target=self._work, name="run", daemon=True)
        self._thread.start()
        loop.call_later(self._sweep_s, self._sweep)

    def submit(self, fn: Callable[[], Any], bounded: bool = True) -> asyncio.Future[Any]:
        """Queue `fn` for the run thread; a bounded job's future fails with RunTimeout after the timeout."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._abandoned:
            future.set_exception(Abandoned())
            return future
        if bounded:
            self._bounded.append(future)
        if not self._batch:
            self._loop.call_soon(self._hand_over)
        # The request id its log lines carry, and (with telemetry) the request's trace, which what run()
        # prints and logs must join.
        self._batch.append((fn, future, logs.request_id.get(), telemetry.current(), bounded))
        return future

    def abandon(self) -> None:
        """Fail every queued job with Abandoned (the thread skips them); the running one keeps its thread
        and its answer."""
        self._abandoned = True
        running = self._running  # the thread's: read once
        for future in self._bounded:
            if not future.done() and (running is None or future is not running[1]):
                future.set_exception(Abandoned())

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        self._jobs.put(batch)

    def _settle(self) -> None:
        self._settle_scheduled = False  # before taking results: a later one schedules another call
        results = self._results
        while results:
            future, result, exc = results.popleft()
            if future.done():  # expired, abandoned or cancelled meanwhile
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

    def _sweep(self) -> None:
        bounded = self._bounded
        while bounded and bounded[0].done():
            bounded.popleft()
        running = self._running  # the thread's: read once
        if running is not None and running[0] <= time.monotonic() and not running[1].done():
            running[1].set_exception(RunTimeout())
        self._loop.call_later(self._sweep_s, self._sweep)

    def _work(self) -> None:
        results = self._results
        while True:
            for fn, future, rid, trace, bounded in self._jobs.get():
                if future.done():  # abandoned or cancelled while queued
                    continue
                logs.request_id.set(rid)
                token = telemetry.attach(trace)
                if bounded:
                    deadline = time.monotonic() + self._timeout_s
                    self._running = (deadline, future)
                    if self._shared is not None:
                        self._shared.set(deadline)
                try:
                    results.append((future, fn(), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the request that asked
                    results.append((future, None, exc))
                finally:
                    self._running = None
                    if bounded and self._shared is not None:
                        self._shared.clear()
                    telemetry.detach(token)
                    logs.request_id.set(None)
                if not self._settle_scheduled:
                    self._settle_scheduled = True
                    try:
                        self._loop.call_soon_threadsafe(self._settle)
                    except RuntimeError:  # the loop is closed: the worker is exiting, nobody waits
                        return

