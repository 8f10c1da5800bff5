"""Run tasks from the queue: the supervising runner, with Django set up in each child."""

from __future__ import annotations

from django.db import connections
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


def served_dsn(database: str | None, queues) -> str:
    """The DSN a runner given no ``--dsn`` serves: of ``--database``, else of the database its
    ``queues`` route to. ``ValueError`` (a bad flag) when that alias cannot hold a queue, or
    the queues route to several databases."""
    from reproq_django import conf

    _set_up_django()
    if database:
        return _dsn_for_alias(conf.postgresql_alias(database))
    alias = queue_database(queues)
    return _dsn_for_alias(conf.postgresql_alias(
        alias, named_by=f"the database --queues {','.join(queues)} route to,"))


def _dsn_for_alias(alias: str) -> str:
    """The libpq DSN of a Django database alias."""
    settings_dict = connections[alias].settings_dict
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


def _set_up_django() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def add_arguments(parser):
    add_worker_arguments(parser)


def queue_database(queues) -> str:
    """The alias ``queues`` route to (``REPROQ_QUEUE_DATABASES``, else
    ``REPROQ_DEFAULT_DB_ALIAS``): the database a runner given no ``--database`` serves.
    ``ValueError`` when they route to several (one runner serves one database)."""
    from reproq_django import conf

    _set_up_django()
    aliases = sorted({conf.database_for_queue(queue) for queue in queues})
    if len(aliases) > 1:
        raise ValueError(f"--queues {','.join(queues)} live in several databases "
                         f"({', '.join(aliases)}): run one worker per database, or name the "
                         "one to serve with --database")
    return aliases[0]


def handle(command, *, dsn=None, database=None, verbosity=1, **options):
    import argparse

    from django.core.management.base import CommandError

    args = argparse.Namespace(database=database, **options)
    if dsn is None:
        try:
            dsn = served_dsn(database, options["queues"])
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None  # as a bad flag
    code = run_worker(args, dsn)
    if code:
        raise SystemExit(code)
