"""The test session's PostgreSQL: one throwaway cluster, a migrated template database, and a
fresh clone of the template per test that asks for one."""

from __future__ import annotations

import atexit
import itertools
import os
import tempfile
from pathlib import Path

import psycopg

from reproq_runner import migrate, queries
from reproq_runner.embedded import EmbeddedPostgres, find_pg_bin, pg_cron_available

TEMPLATE = "reproq_template"
_cluster: EmbeddedPostgres | None = None
_counter = itertools.count()


ROOT_ENV = "REPROQ_TEST_PGROOT"


def cluster() -> EmbeddedPostgres:
    """Start the session's cluster on first use; it is destroyed when the process exits.

    The cluster's folder is exported in $REPROQ_TEST_PGROOT, so processes the tests start
    (runners, manage.py) attach to the same running cluster instead of starting their own.
    """
    global _cluster
    if _cluster is None and os.environ.get(ROOT_ENV):
        _cluster = EmbeddedPostgres(Path(os.environ[ROOT_ENV]))
    if _cluster is None:
        pg_bin = find_pg_bin()
        settings = {
            # Throwaway data: durability costs time and proves nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
        }
        if pg_cron_available(pg_bin):
            settings["shared_preload_libraries"] = "pg_cron"
            settings["cron.database_name"] = "postgres"
        root = Path(tempfile.mkdtemp(prefix="reproq-test-"))
        _cluster = EmbeddedPostgres(root, settings=settings, pg_bin=pg_bin).start()
        os.environ[ROOT_ENV] = str(root)
        owner_pid = os.getpid()
        atexit.register(lambda: os.getpid() == owner_pid and _cluster.destroy())
    return _cluster


def admin_execute(action, *args) -> None:
    with psycopg.connect(cluster().dsn(), autocommit=True) as conn, conn.cursor() as cursor:
        action(cursor, *args)


def _ensure_template() -> None:
    with psycopg.connect(cluster().dsn(), autocommit=True) as conn, conn.cursor() as cursor:
        if queries.database_exists(cursor, TEMPLATE):
            return
        queries.create_database(cursor, TEMPLATE)
    migrate.migrate_dsn(cluster().dsn(TEMPLATE))


def new_database(migrated: bool = True) -> str:
    """Create an empty or fully migrated database and return its DSN."""
    if migrated:
        _ensure_template()
    name = f"t{os.getpid()}_{next(_counter)}"
    admin_execute(queries.create_database, name, TEMPLATE if migrated else None)
    return cluster().dsn(name)


def drop_database(dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin_execute(queries.drop_database, name)
