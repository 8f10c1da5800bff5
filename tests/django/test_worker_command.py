"""``manage.py reproq worker`` without --dsn or --database serves the database its queues
route to (before, always the alias ``default``, whatever REPROQ_DEFAULT_DB_ALIAS said)."""

import os
import subprocess
import sys

import pytest
from django.test import override_settings

from reproq_django.cli.worker import queue_database, served_dsn
from tests.acceptance.conftest import ROOT


def test_the_queues_name_the_database():
    assert queue_database(["default"]) == "default"
    assert queue_database(["remote-a", "remote-b"]) == "queues"  # REPROQ_QUEUE_DATABASES
    with override_settings(REPROQ_DEFAULT_DB_ALIAS="queues"):
        assert queue_database(["default"]) == "queues"
    with pytest.raises(ValueError, match="live in several databases \\(default, queues\\)"):
        queue_database(["default", "remote-a"])


def test_a_worker_whose_queues_live_in_several_databases_is_refused_as_a_bad_flag():
    result = run_reproq("worker", "--queues", "default,remote-a", "--burst")
    assert result.returncode == 2, result.stderr
    assert "run one worker per database" in result.stderr


def run_reproq(*args):
    return subprocess.run(
        [sys.executable, "-m", "django", "reproq", *args],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                       "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["worker", "--burst"], ["migrate-worker"]])
@pytest.mark.parametrize("alias, message", [
    ("nope", "--database 'nope' is not in DATABASES (which has: bare, default, not_postgresql,"),
    ("not_postgresql", "--database 'not_postgresql' is not PostgreSQL (its ENGINE is "
                       "'django.db.backends.dummy')"),
])
def test_a_database_alias_that_cannot_hold_a_queue_is_a_bad_flag(command, alias, message):
    """The worker waited for a database forever (an empty DSN: libpq's default socket), and an
    unknown alias was a ConnectionDoesNotExist traceback with exit 1."""
    result = run_reproq(*command, "--database", alias)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_alias_the_queues_route_to_is_named_as_such_not_as_a_flag():
    with override_settings(REPROQ_QUEUE_DATABASES={"odd": "not_postgresql"}):
        with pytest.raises(ValueError) as info:
            served_dsn(None, ["odd"])
    assert str(info.value).startswith("the database --queues odd route to, 'not_postgresql' "
                                      "is not PostgreSQL")


@pytest.mark.django_db
def test_migrate_worker_reports_an_edited_migration_as_a_message_not_a_traceback():
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("update reproq.schema_migrations set checksum = repeat('0', 64)"
                       " where version = 1")
    with pytest.raises(CommandError, match="0001_create_schema.sql"):
        call_command("reproq", "migrate-worker", verbosity=0)
