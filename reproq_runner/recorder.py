"""Stores task outcomes on a connection and thread of its own, so the runner's loop keeps
collecting results and feeding children while PostgreSQL writes the previous batch.

One batch is in flight at a time; outcomes that arrive meanwhile wait in the runner and go
together in the next batch. What could not be stored (connection lost) comes back unstored and
is submitted again once the connection's backoff allows it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field

from reproq_runner.database import Database, too_large
from reproq_runner.engine import Engine, Recorded
from reproq_runner.errors import ReproqError, UnstorableOutcome
from reproq_runner.outcome import Failed, Outcome, Succeeded
from reproq_runner.queries import ClaimedTask

log = logging.getLogger("reproq.runner")

Outcomes = list[tuple[ClaimedTask, Outcome]]


@dataclass(slots=True)
class BatchResult:
    """What became of one submitted batch."""

    recorded: list[Recorded] = field(default_factory=list)
    unstored: Outcomes = field(default_factory=list)  # the connection failed: submit again


class Recorder:
    def __init__(self, dsn: str, engine: Engine, *, prepare: bool, wakeup_fd: int) -> None:
        # complete_many and fail send no notification: a class 54 error is their data's size.
        self.db = Database(dsn, name="recording", prepare=prepare, refused=too_large)
        self.engine = engine
        self.wakeup_fd = wakeup_fd
        self._jobs: queue.SimpleQueue[Outcomes | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[BatchResult] = queue.SimpleQueue()
        self._submitted: deque[Outcomes] = deque()  # in flight, oldest first
        self._thread = threading.Thread(target=self._serve, name="reproq-recorder",
                                         daemon=True)
        self._thread.start()

    # -- the runner's side (its one thread) -------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._submitted)

    def in_flight(self) -> Outcomes:
        """The outcomes submitted and not yet returned by results() or wait()."""
        return [item for batch in self._submitted for item in batch]

    def ready(self) -> bool:
        """Free to take a batch now (nothing in flight, no reconnect backoff running)."""
        return not self.busy and self.seconds_until_retry() == 0.0

    def seconds_until_retry(self) -> float:
        return 0.0 if self.db.healthy else self.db.seconds_until_retry()

    def submit(self, outcomes: Outcomes) -> None:
        self._submitted.append(outcomes)
        self._jobs.put(outcomes)

    def results(self) -> list[BatchResult]:
        """Batches finished since the last call (never blocks)."""
        finished = []
        while True:
            try:
                finished.append(self._results.get_nowait())
            except queue.Empty:
                break
        self._returned(len(finished))
        return finished

    def wait(self, timeout: float) -> list[BatchResult]:
        """Block until the batch in flight finished (or ``timeout``); returns its result."""
        if not self.busy:
            return []
        try:
            finished = [self._results.get(timeout=timeout)]
        except queue.Empty:
            return []
        self._returned(1)
        return finished + self.results()

    def _returned(self, count: int) -> None:
        for _ in range(count):
            self._submitted.popleft()

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.db.close()

    # -- the recording thread ---------------------------------------------------------------

    def _serve(self) -> None:
        while (outcomes := self._jobs.get()) is not None:
            self._results.put(self._store_all(outcomes))
            try:
                os.write(self.wakeup_fd, b"r")
            except OSError:
                pass  # the runner is closing; its next look at results() finds this one

    def _store_all(self, outcomes: Outcomes) -> BatchResult:
        """Successes in one call, then each failure; after a connection failure the rest is
        returned unstored, in order."""
        result = BatchResult()
        successes = [(t, o) for t, o in outcomes if isinstance(o, Succeeded)]
        groups = [successes] if successes else []
        groups += [[(t, o)] for t, o in outcomes if isinstance(o, Failed)]
        for group in groups:
            if result.unstored:
                result.unstored.extend(group)
            else:
                result.unstored.extend(self._store(group, result))
        return result

    def _store(self, outcomes: Outcomes, result: BatchResult) -> Outcomes:
        """Store ``outcomes``; returns those left unstored because the connection failed."""
        try:
            ok, recorded = self.db.call(self.engine.record, outcomes)
        except Exception as exc:  # noqa: BLE001 - not the connection: the data, or a bug
            return self._store_refused(outcomes, exc, result)
        if not ok:
            return list(outcomes)
        result.recorded.append(recorded)
        return []

    def _store_refused(self, outcomes: Outcomes, exc: Exception,
                       result: BatchResult) -> Outcomes:
        """The database refused ``outcomes``: store them one by one, and one it still refuses
        as a failure that says so. A task must not be left without an outcome: once the
        runner no longer holds it, its lease runs out and the task, which ran, runs again."""
        if len(outcomes) > 1:
            unstored: Outcomes = []
            for item in outcomes:
                unstored.extend([item] if unstored else self._store([item], result))
            return unstored
        [(task, outcome)] = outcomes
        log.error("could not record the outcome of task %s: %s", task.result_id, exc,
                  exc_info=not isinstance(exc, ReproqError))
        error = outcome.error if isinstance(outcome, Failed) else None
        if isinstance(error, dict) and error.get("exception_class_path") == _UNSTORABLE_PATH:
            return []  # even that was refused: logged above; its lease runs out, it runs again
        return self._store([(task, unstorable(exc))], result)


_UNSTORABLE_PATH = f"{UnstorableOutcome.__module__}.{UnstorableOutcome.__qualname__}"


def unstorable(exc: Exception) -> Failed:
    """The failure recorded for an attempt whose own outcome the database refused; the task
    ran, so it is not retried (as for a return value JSON cannot store)."""
    return Failed({
        "exception_class_path": _UNSTORABLE_PATH,
        "message": f"the attempt's outcome could not be stored: {type(exc).__name__}: "
                   f"{exc}"[:2000],
        "traceback": "",
    }, retry=False)
