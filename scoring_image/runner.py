"""The entry script's code runs on one dedicated thread, so the event loop never waits on it.

One thread per worker process, as Azure ML runs one request at a time per worker: entry
scripts keep their model in globals and are not written to be thread-safe.  Each job has a
deadline kept by the event loop (a timer, not a task: cheap per request).  When one passes,
the caller answers 504; a thread cannot be stopped, so the worker process is recycled, and
`abandon()` fails the jobs still queued behind the stuck one at once instead of at their
own deadlines.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from scoring_image import logs


class RunTimeout(Exception):
    """The job overran its deadline."""


class Abandoned(Exception):
    """The worker is being recycled; the job never started."""


_Job = tuple[Callable[[], Any], asyncio.Future[Any], "asyncio.TimerHandle | None", "str | None"]


class Runner:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._abandoned = False
        self._thread = threading.Thread(target=self._work, name="run", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], timeout_s: float | None) -> asyncio.Future[Any]:
        """Queue `fn` for the run thread; the future fails with RunTimeout after `timeout_s`."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._abandoned:
            future.set_exception(Abandoned())
            return future
        timer = None if timeout_s is None else self._loop.call_later(timeout_s, _expire, future)
        self._jobs.put((fn, future, timer, logs.request_id.get()))
        return future

    def abandon(self) -> None:
        """Fail every queued job with Abandoned; the running one keeps its thread."""
        self._abandoned = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not job[1].done():
                job[1].set_exception(Abandoned())

    def _work(self) -> None:
        while True:
            fn, future, timer, rid = self._jobs.get()
            if future.done():  # expired while queued
                continue
            logs.request_id.set(rid)
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the request that asked
                self._loop.call_soon_threadsafe(_settle, future, timer, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle, future, timer, result, None)
            finally:
                logs.request_id.set(None)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(RunTimeout())


def _settle(future: asyncio.Future[Any], timer: asyncio.TimerHandle | None, result: Any, exc: BaseException | None) -> None:
    if timer is not None:
        timer.cancel()
    if future.done():
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
