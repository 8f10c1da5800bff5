"""reproq's SQL functions driven directly (psycopg, no Django, no runner).

These isolate the cost of the ``reproq.*`` functions from the Python layers above them: the
same calls the runner makes (``queries.claim`` / ``queries.complete_many``) and the statement a
psql user types to enqueue.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import psycopg

from benchmarks.report import percentile
from reproq_runner import queries

NOOP = "benchmarks.tasks.noop"
PSQL_ENQUEUE = "select reproq.enqueue(%s, %s::jsonb)"
# Server-side generation: each row still goes through reproq.enqueue_many (validation, hash,
# dedup index), only the JSON array is built by PostgreSQL instead of Python.
PRELOAD = """
select count(*) from reproq.enqueue_many((
    select jsonb_agg(jsonb_build_object(
        'task_path', %(path)s::text,
        'spec', jsonb_build_object('args', jsonb_build_array(g), 'kwargs', '{}'::jsonb)
    ) order by g)
    from generate_series(%(first)s::bigint, %(last)s::bigint) as g
))
"""
CHUNK = 50_000
_arg_counter = itertools.count(1_000_000_000)


def preload(conn: psycopg.Connection, n: int, task_path: str = NOOP) -> None:
    """Enqueue ``n`` distinct READY tasks through reproq.enqueue_many, in chunks."""
    first = next(_arg_counter)
    for _ in range(n - 1):  # reserve the argument range so later preloads stay distinct
        next(_arg_counter)
    with conn.cursor() as cur:
        for start in range(first, first + n, CHUNK):
            last = min(start + CHUNK, first + n) - 1
            cur.execute(PRELOAD, {"path": task_path, "first": start, "last": last})


def finish_all(conn: psycopg.Connection, batch: int = 1000) -> None:
    """Claim and complete every READY task (to create finished rows the reproq way)."""
    with conn.cursor() as cur:
        while claimed := queries.claim(cur, "bench-finisher", ["default"], batch, 300):
            queries.complete_many(cur, [(t.result_id, t.lease_token, "null") for t in claimed])


def enqueue_psql_style(conn: psycopg.Connection, n: int) -> float:
    """``select reproq.enqueue(path, spec)``, one autocommit statement per task."""
    base = next(_arg_counter) * 1000
    with conn.cursor() as cur:
        started = time.perf_counter()
        for i in range(n):
            cur.execute(PSQL_ENQUEUE, (NOOP, f'{{"args":[{base + i}],"kwargs":{{}}}}'))
        return n / (time.perf_counter() - started)


def enqueue_queries(conn: psycopg.Connection, n: int) -> float:
    """``queries.enqueue`` (all named parameters, JSON checks): the Python module's path."""
    base = next(_arg_counter) * 1000
    with conn.cursor() as cur:
        started = time.perf_counter()
        for i in range(n):
            queries.enqueue(cur, NOOP, [base + i])
        return n / (time.perf_counter() - started)


def enqueue_many(conn: psycopg.Connection, n: int) -> float:
    """``queries.enqueue_many`` of ``n`` tasks in one call, JSON built in Python."""
    base = next(_arg_counter) * 1000
    with conn.cursor() as cur:
        started = time.perf_counter()
        items = [queries.task_item(NOOP, [base + i]) for i in range(n)]
        results = queries.enqueue_many(cur, items)
        elapsed = time.perf_counter() - started
    assert len(results) == n and all(r.created for r in results)
    return n / elapsed


def claim_complete(conn: psycopg.Connection, n: int, batch: int,
                   latencies: list[float] | None = None) -> float:
    """The runner's SQL path without execution: claim ``batch`` (one transaction), then
    complete_many them (another), until ``n`` tasks are done. Returns tasks per second;
    appends each claim's round-trip time in ms to ``latencies``."""
    done = 0
    with conn.cursor() as cur:
        started = time.perf_counter()
        while done < n:
            before = time.perf_counter()
            claimed = queries.claim(cur, "bench-sql", ["default"], min(batch, n - done), 300)
            if latencies is not None:
                latencies.append((time.perf_counter() - before) * 1000)
            if not claimed:
                break
            accepted = queries.complete_many(
                cur, [(t.result_id, t.lease_token, "null") for t in claimed])
            done += len(accepted)
        elapsed = time.perf_counter() - started
    if done < n:
        raise RuntimeError(f"claim/complete drained {done} of {n} tasks")
    return done / elapsed


def claim_latency_ms(conn: psycopg.Connection, calls: int, limit: int) -> float:
    """Median round trip of ``reproq.claim`` (limit rows) followed by an undo (rollback)."""
    samples = []
    with conn.cursor() as cur:
        for _ in range(calls):
            conn.execute("begin")
            before = time.perf_counter()
            queries.claim(cur, "bench-probe", ["default"], limit, 300)
            samples.append((time.perf_counter() - before) * 1000)
            conn.execute("rollback")
    return percentile(samples, 50)


# Two index probes (the claim index holds READY rows, the lease index RUNNING ones): cheap
# enough to ask every few milliseconds while a runner works, unlike counting every row.
ANY_UNFINISHED = """
select exists (select from reproq.task_runs where status = 'READY')
    or exists (select from reproq.task_runs where status = 'RUNNING')
"""


def any_unfinished(conn: psycopg.Connection) -> bool:
    return conn.execute(ANY_UNFINISHED).fetchone()[0]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    with conn.cursor() as cur:
        return queries.status_counts(cur)



def explain_claim(conn: psycopg.Connection, server_log: Path, limit: int = 100) -> str:
    """The plans (EXPLAIN ANALYZE, BUFFERS) of every statement one ``reproq.claim`` runs,
    nested ones included, taken with auto_explain from the server log; rolled back."""
    offset = server_log.stat().st_size
    conn.execute("load 'auto_explain'")
    for name, value in (("log_min_duration", "0"), ("log_analyze", "on"),
                        ("log_buffers", "on"), ("log_nested_statements", "on"),
                        ("log_timing", "on")):
        conn.execute(f"set auto_explain.{name} = {value}")
    try:
        conn.execute("begin")
        with conn.cursor() as cur:
            queries.claim(cur, "bench-explain", ["default"], limit, 300)
        conn.execute("rollback")
    finally:
        conn.execute("set auto_explain.log_min_duration = -1")
    with server_log.open(errors="replace") as handle:
        handle.seek(offset)
        text = handle.read()
    # Keep each plan's duration, the first line of its query and the plan nodes.
    kept, in_query = [], False
    plan_words = ("(cost=", "Buffers:", "Cond:", "Filter:", "Sort ", "Rows Removed",
                  "Heap Fetches", "I/O Timings", "Planning", "Execution", "CTE ", "SubPlan",
                  "InitPlan")
    for line in text.splitlines():
        if "LOG:  duration:" in line:
            kept.append(line.split("LOG:  ", 1)[1])
            in_query = False
        elif "Query Text:" in line:
            kept.append("  " + " ".join(line.split()) + " …")
            in_query = True
        elif "CONTEXT:" in line:
            in_query = True
        elif any(word in line for word in plan_words) and line.startswith("\t"):
            kept.append("  " + line.strip("\t").rstrip())
            in_query = False
        elif in_query:
            continue
    return "\n".join(kept)
