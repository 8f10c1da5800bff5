"""Drain what is due once, running each task in the calling process.

``run_once`` is the public API for users' tests (and for the Django conformance tests, whose
log assertions need tasks to run in the test process). It uses the same SQL calls as the
supervising runner: claim in batches, complete in batches, fail one at a time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from reproq_runner import queries
from reproq_runner.outcome import Executor, Failed, Succeeded


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_once(connection, executor: Executor, queues: Sequence[str] = ("default",), *,
             batch_size: int = 100, lease_seconds: int = 300, worker_id: str | None = None,
             max_tasks: int | None = None) -> int:
    """Claim and run due tasks until none are due; return how many attempts ran.

    ``connection`` is a DB-API connection in autocommit mode (psycopg, or Django's
    ``connections[alias]``); each claim and each batch of outcomes is its own transaction.
    """
    worker_id = worker_id or default_worker_id()
    executor.setup()
    ran = 0
    while max_tasks is None or ran < max_tasks:
        limit = batch_size if max_tasks is None else min(batch_size, max_tasks - ran)
        with connection.cursor() as cursor:
            claimed = queries.claim(cursor, worker_id, queues, limit, lease_seconds)
        if not claimed:
            break
        successes = []
        for task in claimed:
            outcome = executor.execute(task)
            ran += 1
            if isinstance(outcome, Succeeded):
                successes.append((task.result_id, task.lease_token, outcome.return_json))
            elif isinstance(outcome, Failed):
                with connection.cursor() as cursor:
                    queries.fail(cursor, task.result_id, task.lease_token, outcome.error,
                                 retry=outcome.retry)
        with connection.cursor() as cursor:
            queries.complete_many(cursor, successes)
    return ran
