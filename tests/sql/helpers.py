"""Small helpers shared by the per-function SQL tests (psycopg only, injected clock)."""

from __future__ import annotations

import json
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


def task_runs_scans(conn, call):
    """Run ``call(cursor)`` under auto_explain (nested statements included, with buffers);
    returns its result and the plan nodes, as PostgreSQL really ran them, that read
    reproq.task_runs."""
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    with conn.cursor() as cur:
        cur.execute("load 'auto_explain'")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_analyze", "on"), ("log_buffers", "on"),
                               ("log_format", "json"), ("log_level", "notice")):
            cur.execute(f"set auto_explain.{setting} = {value}")
        result = call(cur)
        cur.execute("set auto_explain.log_min_duration = -1")
    plans = [json.loads(n.split("plan:", 1)[1])["Plan"] for n in notices if "plan:" in n]
    return result, [node for plan in plans for node in _plan_nodes(plan)
                    if node.get("Relation Name") == "task_runs"]


def _plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)
