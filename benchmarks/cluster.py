"""The benchmark's own PostgreSQL: durable settings, pg_stat_statements, one database.

Settings are the ones a production queue database would run with (fsync and synchronous_commit
on, full-page writes on), sized for this machine. The benchmark process exports the cluster's
folder and database name in the environment, so runner subprocesses and
``benchmarks.settings`` attach to the same cluster.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg

from benchmarks.constants import DATABASE, DATABASE_ENV, PORT, ROOT_ENV
from reproq_runner import migrate, queries
from reproq_runner.embedded import EmbeddedPostgres, find_pg_bin

__all__ = ["DATABASE", "DATABASE_ENV", "PORT", "ROOT_ENV", "start", "attached", "dsn",
           "connect", "reset", "vacuum"]

DURABLE_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "512MB",
    "effective_cache_size": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    # Large enough that loading the 1M-row backlog does not force checkpoints mid-measurement.
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
    "shared_preload_libraries": "pg_stat_statements",
    # Statements inside the reproq.* functions show up too, not only the top-level call.
    "pg_stat_statements.track": "all",
    "track_io_timing": "on",
}

# Minimal tables the raw-SQL baselines use: what a queue needs and nothing more.
RAW_SCHEMA = """
create schema if not exists bench_raw;
create table if not exists bench_raw.jobs (
    id bigint generated always as identity primary key,
    queue_name text not null default 'default',
    task_path text not null,
    args jsonb not null,
    status text not null default 'READY',
    run_after timestamptz not null default now()
);
create index if not exists jobs_claim_idx on bench_raw.jobs (queue_name, run_after, id)
    where status = 'READY';
"""


def start(root: Path | None = None) -> EmbeddedPostgres:
    """Start (initdb on first use) the cluster under ``root`` or a new temporary folder."""
    root = root or Path(tempfile.mkdtemp(prefix="reproq-bench-"))
    cluster = EmbeddedPostgres(root, port=PORT, settings=dict(DURABLE_SETTINGS),
                               pg_bin=find_pg_bin()).start()
    os.environ[ROOT_ENV] = str(root)
    os.environ[DATABASE_ENV] = DATABASE
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn, conn.cursor() as cur:
        queries.drop_database(cur, DATABASE)
        queries.create_database(cur, DATABASE)
    migrate.migrate_dsn(cluster.dsn(DATABASE))
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        conn.execute("create extension if not exists pg_stat_statements")
        conn.execute(RAW_SCHEMA)
    return cluster


def attached() -> EmbeddedPostgres:
    """The cluster a parent benchmark process started (for subprocesses and settings)."""
    return EmbeddedPostgres(Path(os.environ[ROOT_ENV]), port=PORT, settings={})


def dsn() -> str:
    return attached().dsn(os.environ.get(DATABASE_ENV, DATABASE))


def connect(**kwargs) -> psycopg.Connection:
    return psycopg.connect(dsn(), autocommit=True, **kwargs)


def reset(conn: psycopg.Connection) -> None:
    """Empty every queue table (new relfilenodes: no bloat carried between runs)."""
    conn.execute("truncate reproq.task_runs, reproq.workers, bench_raw.jobs restart identity")
    conn.execute("select pg_stat_statements_reset()")


def vacuum(conn: psycopg.Connection, table: str = "reproq.task_runs") -> None:
    conn.execute(f"vacuum (analyze) {table}")
