"""Apply reproq's SQL migrations to a queue database (same applier as `manage.py migrate`)."""

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from reproq_django import conf
from reproq_runner.errors import ReproqError
from reproq_runner.migrate import apply_migrations, outcome_lines

# It fixes what the schema checks report, so they must not stop it.
runs_system_checks = False


def add_arguments(parser):
    parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                        help="Django database alias of the queue database (default: %(default)s)")


def handle(command, *, database, verbosity=1, **_options):
    try:
        conf.postgresql_alias(database)
    except ValueError as exc:
        raise CommandError(str(exc), returncode=2) from None  # as a bad flag
    try:
        with transaction.atomic(using=database), connections[database].cursor() as cursor:
            lines = outcome_lines(cursor, apply_migrations(cursor))
    except ReproqError as exc:  # an edited file, another applier: a message, not a traceback
        raise CommandError(str(exc)) from exc
    if verbosity:
        for line in lines:
            command.stdout.write(line)
