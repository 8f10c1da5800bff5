"""Small helpers shared by the per-function SQL tests (psycopg only, injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reproq_runner import queries

#: The injected clock: every test passes ``now=`` explicitly instead of sleeping.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def enqueue(cur, *args, **kwargs) -> int:
    """reproq.enqueue with the injected clock by default."""
    kwargs.setdefault("now", T0)
    return queries.enqueue(cur, "app.tasks.t", *args, **kwargs)


def run(cur, result_id: int) -> queries.TaskRun:
    return queries.get_task_run(cur, result_id)


def count_rows(cur, where: str = "true") -> int:
    cur.execute(f"select count(*) from reproq.task_runs where {where}")
    return cur.fetchone()[0]


def snapshot(cur) -> list[tuple]:
    """Every task row, to prove a refused call wrote nothing."""
    cur.execute("select t.* from reproq.task_runs as t order by t.result_id")
    return cur.fetchall()


def claim_one(cur, worker: str = "w1", queues=("default",), now: datetime = T0,
              lease_seconds: int = 60) -> queries.ClaimedTask:
    [task] = queries.claim(cur, worker, list(queues), 1, lease_seconds, now)
    return task
