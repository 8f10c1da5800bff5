"""Raw-SQL baselines: the least work a PostgreSQL queue can do, on the same cluster and run.

Each function returns jobs per second. The psycopg baselines use one connection and the same
shape as a worker (claim in one transaction, complete in another); the pgbench ones do claim
and complete in a single statement from two clients, the fastest form PostgreSQL allows.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks import cluster

TASK_PATH = "benchmarks.tasks.noop"

INSERT_ONE = "insert into bench_raw.jobs (task_path, args) values (%s, %s::jsonb)"
INSERT_MANY = ("insert into bench_raw.jobs (task_path, args)"
               " select %s, a from unnest(%s::jsonb[]) as u (a)")
PRELOAD = ("insert into bench_raw.jobs (task_path, args)"
           " select %s, jsonb_build_array(g) from generate_series(1, %s) as g")
CLAIM = """
with c as (
    select id from bench_raw.jobs
    where status = 'READY' and queue_name = 'default' and run_after <= now()
    order by run_after, id
    limit %s
    for update skip locked
)
update bench_raw.jobs as j set status = 'RUNNING' from c where j.id = c.id
returning j.id, j.task_path, j.args
"""
COMPLETE = "update bench_raw.jobs set status = 'DONE' where id = any(%s)"
PGBENCH_CLAIM_COMPLETE = """
with c as (
    select id from bench_raw.jobs
    where status = 'READY' and queue_name = 'default' and run_after <= now()
    order by run_after, id
    limit {batch}
    for update skip locked
)
update bench_raw.jobs as j set status = 'DONE' from c where j.id = c.id;
"""
PGBENCH_INSERT = ("\\set i random(1, 1000000000000)\n"
                  "insert into bench_raw.jobs (task_path, args)"
                  " values ('benchmarks.tasks.noop', jsonb_build_array(:i));\n")
PGBENCH_REPROQ_ENQUEUE = (
    "\\set i random(1, 1000000000000)\n"
    "select reproq.enqueue('benchmarks.tasks.noop',"
    " jsonb_build_object('args', jsonb_build_array(:i), 'kwargs', '{}'::jsonb));\n"
)


def insert_one_per_transaction(conn: psycopg.Connection, n: int) -> float:
    with conn.cursor() as cur:
        started = time.perf_counter()
        for i in range(n):
            cur.execute(INSERT_ONE, (TASK_PATH, f"[{i}]"))
        return n / (time.perf_counter() - started)


def insert_multi_row(conn: psycopg.Connection, n: int) -> float:
    with conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(INSERT_MANY, (TASK_PATH, [f"[{i}]" for i in range(n)]))
        return n / (time.perf_counter() - started)


def preload(conn: psycopg.Connection, n: int) -> None:
    conn.execute(PRELOAD, (TASK_PATH, n))
    cluster.vacuum(conn, "bench_raw.jobs")


def claim_complete(conn: psycopg.Connection, n: int, batch: int) -> float:
    """Claim ``batch`` jobs (one transaction), then complete them (another), until ``n``."""
    done = 0
    with conn.cursor() as cur:
        started = time.perf_counter()
        while done < n:
            cur.execute(CLAIM, (batch,))
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            cur.execute(COMPLETE, (ids,))
            done += len(ids)
        elapsed = time.perf_counter() - started
    if done < n:
        raise RuntimeError(f"raw claim drained {done} of {n} jobs")
    return done / elapsed


def pgbench(script: str, transactions: int, clients: int = 1) -> float:
    """Transactions per second pgbench reports for ``script`` on the bench database."""
    pg = cluster.attached()
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        per_client = max(1, transactions // clients)
        result = subprocess.run(
            [str(pg.pg_bin / "pgbench"), "-n", "-h", str(pg.socket_dir), "-p", str(pg.port),
             "-U", pg.user, "-c", str(clients), "-j", str(clients), "-t", str(per_client),
             "-f", handle.name, cluster.DATABASE],
            capture_output=True, text=True, check=True,
        )
    finally:
        Path(handle.name).unlink()
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    if not match:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}\n{result.stderr}")
    return float(match[1])


def pgbench_claim_complete(n: int, batch: int, clients: int = 2) -> float:
    return pgbench(PGBENCH_CLAIM_COMPLETE.format(batch=batch), n // batch, clients) * batch
