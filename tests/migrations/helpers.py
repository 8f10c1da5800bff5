"""Helpers for the migration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from reproq_runner import schema_dump
from tests import pg

ROOT = Path(__file__).resolve().parents[2]


def dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def dump(dsn: str) -> str:
    return schema_dump.dump_database(pg.cluster(), dbname(dsn))


def recorded(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select version, name from reproq.schema_migrations"
                            " order by version").fetchall()


def run(args: list[str], dsn: str, cwd: Path = ROOT, env: dict | None = None):
    """Run ``python <args>`` against the test cluster's database of ``dsn``."""
    pg.cluster()  # exports REPROQ_TEST_PGROOT, so Django settings attach to this cluster
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                "REPROQ_TEST_DATABASE": dbname(dsn), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)
