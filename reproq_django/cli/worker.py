"""Run tasks from the queue: the supervising runner, with Django set up in each child."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.conninfo import make_conninfo

from reproq_runner.cli import add_worker_arguments, run_worker

# Connection settings libpq understands; Django-only OPTIONS (pool, server_side_binding,
# isolation_level, assume_role, ...) are left out.
_LIBPQ_OPTIONS = {
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "application_name",
    "options", "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "target_session_attrs", "service", "passfile", "channel_binding",
    "gssencmode", "sslcrl", "tcp_user_timeout",
}


def dsn_for_alias(alias: str | None) -> str:
    """The libpq DSN of a Django database alias (PostgreSQL only)."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    settings_dict = connections[alias or DEFAULT_DB_ALIAS].settings_dict
    params = {
        "dbname": settings_dict.get("NAME") or None,
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": str(settings_dict["PORT"]) if settings_dict.get("PORT") else None,
    }
    for name, value in (settings_dict.get("OPTIONS") or {}).items():
        if name in _LIBPQ_OPTIONS and isinstance(value, str | int):
            params[name] = value
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def add_arguments(parser):
    add_worker_arguments(parser)


def handle(command, *, dsn=None, database=None, verbosity=1, **options):
    import argparse

    args = argparse.Namespace(database=database, **options)
    code = run_worker(args, dsn or dsn_for_alias(database))
    if code:
        raise SystemExit(code)
