"""Several appliers at once on an empty database: exactly one applies, all succeed."""

import subprocess
import sys

import psycopg

from reproq_runner import migrate
from tests.concurrency.helpers import race

APPLIERS = 6


def recorded(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("select version from reproq.schema_migrations"
                            " order by version").fetchall()


def test_concurrent_connections_apply_once(empty_dsn):
    def applier(index, barrier):
        with psycopg.connect(empty_dsn) as conn, conn.cursor() as cursor:
            barrier.wait()
            return [m.version for m in migrate.apply_migrations(cursor)]

    results = race(APPLIERS, applier)
    everything = [m.version for m in migrate.available_migrations()]
    assert sorted(results) == [[]] * (APPLIERS - 1) + [everything]
    assert recorded(empty_dsn) == [(v,) for v in everything]


def test_concurrent_processes_apply_once(empty_dsn):
    processes = [subprocess.Popen([sys.executable, "-m", "reproq_runner", "migrate",
                                   "--dsn", empty_dsn],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(APPLIERS)]
    outputs = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outputs] == [0] * APPLIERS, outputs
    applied = [out for _, out, _ in outputs if "applied " in out]
    assert len(applied) == 1
    assert sum("up to date" in out for _, out, _ in outputs) == APPLIERS - 1
    assert len(recorded(empty_dsn)) == len(migrate.available_migrations())
