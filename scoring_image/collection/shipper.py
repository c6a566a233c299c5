"""The supervisor's side of data collection: ship sealed spool segments, then delete them.

A segment becomes one batch per model, kind and day (`batches`), in Azure ML's folders of the `modeldata`
container: `<subscription>/<resourcegroup>/<workspace>/<service>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/`.
A request's automatic record goes to `inputs/` and `predictions/` of every model of the service, in a JSON Lines
blob per segment, `<segment>.jsonl` (one object per record: id, request_id, time, data): a request's body and
answer are any JSON, not the rows of a table.  What a script's ModelDataCollector was handed goes to its model's
and designation's folder as CSV, as Azure ML writes it: `data-<segment>.csv` (`<collection_name>-<segment>.csv`
for "signals" and "general"), headed by its feature names.  Azure ML appends to one `data.csv` a day; a blob per
segment is what lets a resend overwrite instead of duplicating.  A segment is deleted only after all its batches
were written; a crash in between
resends them under the same names, which overwrites instead of duplicating.  Open segments whose
process is gone (a worker killed, or the whole server after `kill -9`) are sealed and shipped like
the others.  Shippers may share a spool (the local stack's replicas of a deployment do): each
segment is shipped under a lock on it, by whichever takes it first.  Every second, beside the
shipping (which may hang on an unreachable store), the spool is measured against its budget.
"""

from __future__ import annotations

import datetime
import email.utils
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from scoring_image.collection.batches import Batch, run_all
from scoring_image.collection.destinations import Destination
from scoring_image.collection.spool import FULL, FULL_CHECK_S, OPEN, SEALED, Usage, named
from scoring_image.config import FINAL_UPLOAD_SECONDS, ScorerSettings
from scoring_image.metrics import publish_shipping
from scoring_image.pids import writer_alive

log = logging.getLogger("scoring_image.collection")

_KINDS = (("inputs", "data"), ("predictions", "prediction"))
# A full spool takes records again under this share of its budget: just under it, where each segment shipped took a
# spool whose shipping only kept pace, writers filled it again within the second, full and not every second or two.
RESUME_AT = 0.9
FAILURE_TOLD_S = 60.0  # while passes go on failing, how often that is logged again
# A store that throttles (503 Server Busy, 429) may say when to come back (Retry-After): the next pass waits that
# long, up to this (a store's answer must not stop shipping for hours while the spool fills).
RETRY_AFTER_MAX_S = 300.0


class _Collected(msgspec.Struct):
    """What a script's ModelDataCollector was handed (modeldatacollector.py): CSV rows, and its header."""

    workspace: str
    service: str
    model: str
    version: str
    designation: str
    file: str
    header: str | None
    rows: str


class _Record(msgspec.Struct):
    """A spool line (spool.py): a request's automatic record, its data and prediction JSON text, checked but never
    read into Python objects (~9x their size: a 100 MB body cost the supervisor 1.7 GB); or a script's collected
    rows."""

    id: str
    request_id: str
    time: float
    data: msgspec.Raw = msgspec.Raw()
    prediction: msgspec.Raw = msgspec.Raw()
    collected: _Collected | None = None


class _Line(msgspec.Struct):
    """An uploaded line: one of the record's halves."""

    id: str
    request_id: str
    time: str
    data: msgspec.Raw


_read = msgspec.json.Decoder(_Record).decode
_write = msgspec.json.Encoder().encode


class Shipper:
    def __init__(self, settings: ScorerSettings, destination: Destination, stats: Path | None = None) -> None:
        """`stats`: where its figures are published for /metrics each second (metrics.SHIPPER_STATS in the
        supervisor's metrics folder)."""
        self._folder = Path(settings.data_collection_spool_dir)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._interval = settings.data_collection_batch_seconds
        self._folder_of_service = f"{settings.data_collection_workspace}/{settings.data_collection_service}"
        self._models = [tuple(m.split(":", 1)) for m in settings.data_collection_models]
        self._destination = destination
        self._stop = threading.Event()
        self._budget = int(settings.data_collection_spool_max_mb * 2**20)
        self._usage = Usage(self._folder)
        self._thread = threading.Thread(target=self._loop, name="shipper", daemon=True)
        self._guard = threading.Thread(target=self._hold_budget, name="spool-budget", daemon=True)
        self._strays: set[str] = set()  # open files of no writer, told once
        # Failed passes by segment: a pass ends at its first failure (a store down fails every segment, each after
        # its timeout), so a segment that fails goes after those that failed fewer times, or it alone (too large
        # for the link, a blob the store will not overwrite) would hold back every later one for good.
        self._tries: dict[str, int] = {}
        self._stats = stats
        self._held = self._shipped = self._failed = 0
        self._failing = 0  # failed passes in a row
        self._failure_told = 0.0  # when a failing pass was last logged (time.monotonic)
        self._wait_s = self._interval  # before the next pass: longer where the store said so (Retry-After)

    def start(self) -> None:
        self._measure()  # a `full` left by an earlier run is not believed under RESUME_AT
        self._thread.start()
        self._guard.start()

    def stop(self) -> None:
        """Stop the loop, which ships what the (already stopped) workers sealed, for up to
        FINAL_UPLOAD_SECONDS: an upload hanging on an unreachable store must not hold the stop until
        the pod is killed. What it holds up, or fails to ship, stays in the spool, sealed, for a later start to ship
        (where the spool outlives the pod), and is told."""
        self._stop.set()
        self._guard.join()
        self._thread.join(FINAL_UPLOAD_SECONDS)
        if self._thread.is_alive():
            log.error("the last upload of collected data did not finish in %g s; %d sealed segment(s) stay in the spool",
                      FINAL_UPLOAD_SECONDS, len(named(self._folder, SEALED)))
        elif self._failing:  # the last pass failed, told with the traceback only when the passes before it did not
            log.error("the last upload of collected data failed; %d sealed segment(s) stay in the spool",
                      len(named(self._folder, SEALED)))

    def _hold_budget(self) -> None:
        while not self._stop.wait(FULL_CHECK_S):
            try:
                self._measure()
                if self._stats is not None:
                    publish_shipping(self._stats, self._held, self._shipped, self._failed, (self._folder / FULL).exists())
            except OSError:
                log.exception("measuring the spool failed; again in %g s", FULL_CHECK_S)

    def _measure(self) -> None:
        held, full = self._usage.held(), self._folder / FULL
        self._held = held
        if held >= self._budget and not full.exists():
            full.touch()
            log.error("the spool holds %.1f MiB, its budget (data_collection_spool_max_mb): new records are left out "
                      "until shipping catches up", held / 2**20)
        elif held < self._budget * RESUME_AT and full.exists():
            full.unlink(missing_ok=True)  # another shipper on the spool may have been first
            log.warning("the spool is well under its budget again (%.1f MiB): records are collected", held / 2**20)

    def ship_once(self) -> int:
        """Seal orphaned segments and ship every sealed one, those that failed fewest times first; returns how many
        were shipped, or raises the first failure."""
        self._seal_orphans()
        names = named(self._folder, SEALED)
        if self._tries:
            present = set(names)
            self._tries = {name: tries for name, tries in self._tries.items() if name in present}
            names.sort(key=lambda n: self._tries.get(n, 0))  # stable: oldest first among equals
        shipped = 0
        for name in names:
            segment = self._folder / name
            with _claimed(segment) as ours:
                if ours:
                    try:
                        self._ship(segment)
                    except Exception:
                        self._tries[name] = self._tries.get(name, 0) + 1
                        raise
                    segment.unlink()
                    shipped += 1
        return shipped

    def _loop(self) -> None:
        while not self._stop.wait(self._wait_s):
            self._pass()
        self._pass()  # the last: what the stopped workers sealed

    def _pass(self) -> None:
        """Ship; a store that fails is told with its traceback once, then in a line at most once a minute while it
        goes on failing (a store down for a day failed some 17,000 passes per replica, each a traceback in the log),
        and its return is told."""
        self._wait_s = self._interval
        try:
            shipped = self.ship_once()
        except Exception as exc:
            self._failed += 1
            self._failing += 1
            asked = _retry_after(exc)
            if asked is not None:
                self._wait_s = min(max(asked, self._interval), RETRY_AFTER_MAX_S)
            now = time.monotonic()
            if self._failing == 1:
                self._failure_told = now
                log.exception("shipping collected data failed; will retry in %g s%s", self._wait_s,
                              "" if asked is None else f" (the store's Retry-After: {asked:g} s)")
            elif now - self._failure_told >= FAILURE_TOLD_S:
                self._failure_told = now
                first_line = next(iter(str(exc).splitlines()), "")
                log.error("shipping collected data still fails, %d passes in a row: %s: %s", self._failing,
                          type(exc).__name__, first_line)
        else:
            if self._failing:
                log.warning("shipping collected data works again after %d failed passes", self._failing)
                self._failing = 0
            self._shipped += shipped
            if shipped:
                log.info("shipped %d spool segment(s)", shipped)

    def _seal_orphans(self) -> None:
        for name in named(self._folder, OPEN):
            segment = self._folder / name
            try:
                gone = not writer_alive(segment.stem.rpartition("-")[2])
            except ValueError:  # a name the spool does not give: not ours, and no reason to stop shipping
                if segment.name not in self._strays:
                    self._strays.add(segment.name)
                    log.warning("%s in the spool names no writer; left alone", segment.name)
                continue
            if gone:
                try:
                    segment.rename(segment.with_suffix(SEALED))
                except FileNotFoundError:  # another shipper on the spool sealed it first
                    pass

    def _ship(self, segment: Path) -> None:
        batches: dict[str, Batch] = {}  # by kind and day, or by blob of a script's collector
        # The spool ends each record with "\n" (a "\r" may be JSON whitespace inside one), which the
        # decoder takes as whitespace: stripped, a large record would be copied once more.
        with segment.open("rb") as records:
            for number, line in enumerate(records, 1):
                if line.isspace():
                    continue
                try:
                    lines_out = self._lines(line, segment.stem)
                except (msgspec.DecodeError, ValueError, OverflowError, OSError, RecursionError) as exc:
                    # One bad record (a torn write, a bug, JSON nested deeper than the decoder goes) must not hold
                    # back the segment, nor every later one.
                    log.warning("skipping unreadable record %s:%d: %s: %s", segment.name, number, type(exc).__name__, exc)
                    continue
                for key, header, line_out in lines_out:
                    batch = batches.get(key)
                    if batch is None:
                        if header is None:  # a request's automatic record: a blob per model of the service
                            names = [f"{self._folder_of_service}/{name}/{version}/{key}/{segment.stem}{SEALED}"
                                     for name, version in self._models]
                        else:
                            names = [key]
                        batches[key] = batch = Batch(self._destination, names)
                        if header:
                            batch.add(header)
                    batch.add(line_out)
        run_all([write for batch in batches.values() for write in batch.finish()])

    @staticmethod
    def _lines(line: bytes, stem: str) -> list[tuple[str, bytes | None, bytes]]:
        """A spool record's (batch, header, line) in each batch it goes to: an automatic record's batches are by
        kind and day (header None), a collector's by its blob, a CSV one of the segment's (header b"" if the
        collector gives none); raises on a record that is not one."""
        record = _read(line)
        when = time.gmtime(record.time)
        day = time.strftime("%Y/%m/%d", when)
        collected = record.collected
        if collected is not None:
            name = (f"{collected.workspace}/{collected.service}/{collected.model}/{collected.version}/"
                    f"{collected.designation}/{day}/{collected.file}-{stem}.csv")
            return [(name, (collected.header or "").encode(), collected.rows.encode())]
        if not (record.data and record.prediction):
            raise ValueError("a record of neither a request (data, prediction) nor a collector (collected)")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", when) + "Z"
        return [(f"{kind}/{day}", None, _write(_Line(record.id, record.request_id, stamp, getattr(record, key))))
                for kind, key in _KINDS]


def _retry_after(exc: Exception) -> float | None:
    """The seconds a store's answer asked to wait (Retry-After: seconds, or an HTTP date), if it did."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((email.utils.parsedate_to_datetime(value) - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), 0.0)
    except (TypeError, ValueError):  # not a date, or one without a zone
        return None


@contextmanager
def _claimed(segment: Path) -> Iterator[bool]:
    """Whether this shipper holds the segment: a non-blocking lock on it, which another shipper on the
    spool holds while it ships it (and the kernel lets go of with a killed one).  False, too, when the
    other one already shipped and deleted it."""
    try:
        fd = os.open(segment, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            still_there = os.stat(segment).st_ino == os.fstat(fd).st_ino  # not deleted before we locked it
        except FileNotFoundError:
            still_there = False
        yield still_there
    finally:
        os.close(fd)
