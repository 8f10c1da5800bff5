"""Drain what is due once, running each task in the calling process.

``run_once`` is the public API for users' tests (and for the Django conformance tests, whose
log assertions need tasks to run in the test process). It goes through the same
:class:`~reproq_runner.engine.Engine` as the supervising runner: claim in batches, complete in
batches, fail one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

from reproq_runner.child import execute_safely
from reproq_runner.engine import Engine, default_worker_id
from reproq_runner.errors import InvalidArgument
from reproq_runner.outcome import Executor
from reproq_runner.queries import queue_list

__all__ = ["default_worker_id", "run_once"]


def run_once(connection, executor: Executor, queues: Sequence[str] = ("default",), *,
             batch_size: int = 100, lease_seconds: int = 300, worker_id: str | None = None,
             max_tasks: int | None = None) -> int:
    """Claim and run due tasks until none are due; return how many attempts ran.

    ``connection`` is a DB-API connection in autocommit mode (psycopg, or Django's
    ``connections[alias]``); each claim and each batch of outcomes is its own transaction.
    """
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be at least 1, got {batch_size!r}")
    engine = Engine(worker_id or default_worker_id(), tuple(queue_list(queues)), lease_seconds)
    executor.setup()
    ran = 0
    while max_tasks is None or ran < max_tasks:
        limit = batch_size if max_tasks is None else min(batch_size, max_tasks - ran)
        with connection.cursor() as cursor:
            claimed = engine.claim(cursor, limit)
        if not claimed:
            break
        outcomes = [(task, execute_safely(executor, task)) for task in claimed]
        ran += len(outcomes)
        with connection.cursor() as cursor:
            engine.record(cursor, outcomes)
    return ran
