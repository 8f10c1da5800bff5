"""The claim/record path, shared by the supervising runner and by ``run_once``.

Claims come in batches (one ``reproq.claim`` call fills every free slot), successes are
recorded in batches (one ``reproq.complete_many`` call), failures one ``reproq.fail`` each.
Everything goes through ``reproq_runner.queries``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reproq_runner import queries
from reproq_runner.errors import LeaseLost, TaskNotFound
from reproq_runner.outcome import Failed, Outcome, Succeeded
from reproq_runner.queries import ClaimedTask

log = logging.getLogger("reproq.runner")

CLAIM_LIMIT_MAX = 10000  # reproq.claim's own bound


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class Recorded:
    """What the database made of a batch of outcomes."""

    succeeded: list[ClaimedTask] = field(default_factory=list)
    # (task, status after reproq.fail: READY = will retry, FAILED, CANCELLED)
    failed: list[tuple[ClaimedTask, str]] = field(default_factory=list)
    lease_lost: list[ClaimedTask] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Engine:
    worker_id: str
    queues: tuple[str, ...]
    lease_seconds: int

    def claim(self, cursor, limit: int) -> list[ClaimedTask]:
        limit = min(limit, CLAIM_LIMIT_MAX)
        if limit < 1:
            return []
        return queries.claim(cursor, self.worker_id, self.queues, limit, self.lease_seconds)

    def heartbeat(self, cursor, held: Iterable[int]) -> list[int]:
        """Extend the leases of the tasks we hold (``held``: their ids); returns the ids of our
        tasks whose cancellation was requested."""
        return queries.heartbeat(cursor, self.worker_id, self.lease_seconds, held=held)

    def record(self, cursor, outcomes: Sequence[tuple[ClaimedTask, Outcome]]) -> Recorded:
        """Store outcomes: successes in one call, then each failure."""
        recorded = Recorded()
        self._record_successes(cursor, [(t, o) for t, o in outcomes if isinstance(o, Succeeded)],
                               recorded)
        for task, outcome in outcomes:
            if isinstance(outcome, Failed):
                self._record_failure(cursor, task, outcome, recorded)
        return recorded

    def _record_successes(self, cursor, successes: Sequence[tuple[ClaimedTask, Succeeded]],
                          recorded: Recorded) -> None:
        if not successes:
            return
        accepted = queries.complete_many(
            cursor, [(t.result_id, t.lease_token, o.return_json) for t, o in successes])
        for task, _ in successes:
            if task.result_id in accepted:
                recorded.succeeded.append(task)
            else:
                self._note_lease_lost(task, recorded)

    def _record_failure(self, cursor, task: ClaimedTask, outcome: Failed,
                        recorded: Recorded) -> None:
        try:
            status = queries.fail(cursor, task.result_id, task.lease_token,
                                  queries.storable_diagnostics(outcome.error),
                                  retry=_retries(outcome))
        except (LeaseLost, TaskNotFound):
            self._note_lease_lost(task, recorded)
            return
        recorded.failed.append((task, status))

    @staticmethod
    def _note_lease_lost(task: ClaimedTask, recorded: Recorded) -> None:
        log.warning("task %s: outcome dropped, the lease was lost (the task was reclaimed)",
                    task.result_id)
        recorded.lease_lost.append(task)

    def release(self, cursor, tasks: Iterable[ClaimedTask]) -> set[int]:
        """Hand tasks back to READY without spending an attempt."""
        return queries.release(cursor, [(t.result_id, t.lease_token) for t in tasks])

    def set_logs_uris(self, cursor, entries: Sequence[tuple[ClaimedTask, str]]) -> None:
        queries.set_logs_uris(cursor, [(t.result_id, t.lease_token, uri) for t, uri in entries])


def _retries(outcome: Failed) -> bool:
    """``Failed.retry`` as reproq.fail takes it: an executor of its own that left it None
    meant the default, retry (reproq.fail refuses a null since SQL 0007)."""
    return True if outcome.retry is None else bool(outcome.retry)
