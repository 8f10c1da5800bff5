"""System checks (stable ids), the read-only admin, the router and the management command."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from reproq_django import checks
from reproq_django.backend import ReproqBackend
from reproq_django.db_router import ReproqRouter
from reproq_django.models import TaskRun
from reproq_runner import migrate
from tests.testapp.tasks import add, echo


def ids(messages):
    return [message.id for message in messages]


def test_a_non_postgresql_queue_database_is_e001():
    with override_settings(REPROQ_DEFAULT_DB_ALIAS="not_postgresql"):
        assert "reproq.E001" in ids(checks.check_queue_databases())


def test_an_unknown_queue_alias_is_e006():
    with override_settings(REPROQ_QUEUE_DATABASES={"x-*": "nowhere"}):
        assert "reproq.E006" in ids(checks.check_queue_databases())


@pytest.mark.django_db(databases=["default", "bare"])
def test_a_missing_schema_is_e002_with_the_fix_it_command(monkeypatch):
    monkeypatch.setattr(checks, "_django_migrations_pending", lambda alias: False)
    with override_settings(REPROQ_QUEUE_DATABASES={"x-*": "bare"}):
        [error] = checks.check_schema(databases=["default", "bare"])
    assert error.id == "reproq.E002"
    assert "python manage.py reproq migrate-worker --database bare" in error.hint


@pytest.mark.django_db(databases=["default", "bare"])
def test_a_missing_schema_only_warns_while_migrate_has_reproq_migrations_to_apply(
        monkeypatch):
    # (On "bare" the router skipped reproq's migrations, so Django recorded them as applied.)
    assert checks._django_migrations_pending("bare") is False
    monkeypatch.setattr(checks, "_django_migrations_pending", lambda alias: True)
    with override_settings(REPROQ_QUEUE_DATABASES={"x-*": "bare"}):
        [warning] = checks.check_schema(databases=["default", "bare"])
    assert warning.id == "reproq.W003" and not warning.is_serious()
    assert "migrate-worker --database bare" in warning.hint


@pytest.mark.django_db
def test_an_outdated_schema_is_e003(monkeypatch):
    newer = (*migrate.available_migrations(),
             migrate.Migration(99, "from_the_future", migrate.available_migrations()[-1].path))
    monkeypatch.setattr(migrate, "available_migrations", lambda: newer)
    [error] = checks.check_schema(databases=["default"])
    assert error.id == "reproq.E003" and "missing [99]" in error.msg
    assert "migrate-worker --database default" in error.hint


@pytest.mark.django_db
def test_an_edited_migration_is_e008_even_while_migrate_has_migrations_to_apply(monkeypatch):
    """It was W003 then ("`migrate` will create or update it"), with the migrate-worker hint,
    though no applier can fix an edited file."""
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("update reproq.schema_migrations set checksum = repeat('0', 64)"
                       " where version = 1")
    monkeypatch.setattr(checks, "_django_migrations_pending", lambda alias: True)
    [error] = checks.check_schema(databases=["default"])
    assert error.id == "reproq.E008" and error.is_serious()
    assert "0001_create_schema.sql" in error.msg and "Restore the file" in error.hint


@pytest.mark.django_db
def test_a_schema_newer_than_the_code_is_w005(monkeypatch):
    """It passed silently: after a rollback nothing said the code is behind its database."""
    older = migrate.available_migrations()[:-1]
    monkeypatch.setattr(migrate, "available_migrations", lambda: older)
    [warning] = checks.check_schema(databases=["default"])
    assert warning.id == "reproq.W005" and not warning.is_serious()
    assert f"migration(s) [{len(older) + 1}], newer than this code (which ships 1–{len(older)})" \
        in warning.msg


@pytest.mark.django_db
def test_a_current_schema_passes():
    assert checks.check_schema(databases=["default"]) == []


def test_app_not_installed_is_e004():
    backend = ReproqBackend("default", {})
    with override_settings(INSTALLED_APPS=["django.contrib.contenttypes"]):
        assert ids(backend.check()) == ["reproq.E004"]


@pytest.mark.parametrize("options, fragment", [
    ({"MAX_ATTEMPTS": 0}, "MAX_ATTEMPTS"),
    ({"TIMEOUT_SECONDS": "900"}, "TIMEOUT_SECONDS"),
    ({"DEDUP_ACTIVE": "yes"}, "DEDUP_ACTIVE"),
    ({"EXPIRES_IN": 60}, "EXPIRES_IN"),
    ({"CODE_REF": ""}, "CODE_REF"),
    ({"RETRIES": 3}, "unknown option 'RETRIES'"),
])
def test_invalid_options_are_e005(options, fragment):
    [error] = ReproqBackend("default", {"OPTIONS": options}).check()
    assert error.id == "reproq.E005" and fragment in error.msg


def test_valid_configuration_has_no_errors():
    assert ReproqBackend("default", {"OPTIONS": {"MAX_ATTEMPTS": 5}}).check() == []
    assert checks.check_queue_databases() == []


def test_router_keeps_reproq_on_queue_databases():
    router = ReproqRouter()
    assert router.allow_migrate("default", "reproq_django") is True
    assert router.allow_migrate("queues", "reproq_django") is True
    assert router.allow_migrate("bare", "reproq_django") is False
    assert router.allow_migrate("bare", "auth") is None
    assert router.db_for_read(TaskRun) == "default"


@pytest.mark.django_db
class TestAdmin:
    @pytest.fixture
    def client(self, client):
        client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        return client

    def test_task_runs_list_filter_and_search(self, client):
        first = add.enqueue(1, 2)
        echo.using(queue_name="admin-q").enqueue("z")
        url = "/admin/reproq_django/taskrun/"
        page = client.get(url).content.decode()
        assert "tests.testapp.tasks.add" in page and "tests.testapp.tasks.echo" in page
        for query in ({"status": "READY"}, {"queue_name": "admin-q"}, {"lease": "none"},
                      {"task_path": "tests.testapp.tasks.echo"}, {"lease": "held"},
                      {"lease": "expired"}, {"q": "echo"}, {"q": first.id}):
            assert client.get(url, query).status_code == 200, query
        filtered = client.get(url, {"queue_name": "admin-q"}).content.decode()
        assert f"/admin/reproq_django/taskrun/{first.id}/change/" not in filtered
        found = client.get(url, {"q": first.id}).content.decode()
        assert f"/admin/reproq_django/taskrun/{first.id}/" in found

    def test_is_read_only(self, client):
        result = add.enqueue(9, 9)
        assert client.get("/admin/reproq_django/taskrun/add/").status_code == 403
        detail = client.get(f"/admin/reproq_django/taskrun/{result.id}/change/")
        assert detail.status_code == 200 and b'name="_save"' not in detail.content
        assert client.post(f"/admin/reproq_django/taskrun/{result.id}/delete/").status_code \
            == 403

    def test_workers_and_queue_controls_pages(self, client):
        assert client.get("/admin/reproq_django/worker/").status_code == 200
        assert client.get("/admin/reproq_django/queuecontrol/").status_code == 200


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("REPROQ_ALLOWED_TASK_MODULES", "myapp.tasks", "REPROQ_ALLOWED_TASK_MODULES must be a list"),
    ("REPROQ_ALLOWED_TASK_MODULES", ["myapp.tasks", ""], "REPROQ_ALLOWED_TASK_MODULES must be"),
    ("REPROQ_QUEUE_DATABASES", ["default"], "REPROQ_QUEUE_DATABASES must be a dict"),
    ("REPROQ_DEFAULT_DB_ALIAS", 1, "REPROQ_DEFAULT_DB_ALIAS must be a database alias"),
    ("REPROQ_RESULT_ID_WITH_ALIAS", "false", "REPROQ_RESULT_ID_WITH_ALIAS must be True, False"),
])
def test_a_reproq_setting_of_the_wrong_type_is_an_error_and_never_used(setting, value, message):
    """A string allow-list was read as its characters (``"reproq_django"`` allowed
    ``r.evil``), ``"false"`` as True, and a list of queue databases crashed the checks."""
    from django.core.exceptions import ImproperlyConfigured

    from reproq_django import conf
    from reproq_django.checks import check_queue_databases

    with override_settings(**{setting: value}):
        [error] = check_queue_databases()
        assert error.id == "reproq.E007" and error.msg.startswith(message)
        with pytest.raises(ImproperlyConfigured, match=message):
            conf.allowed_task_modules()
            conf.all_queue_aliases()
            conf.result_id_with_alias()


def test_a_queue_database_other_than_default_without_the_router_is_w004():
    """Without ReproqRouter Django's migrate created the queue in 'default' (failing there on
    SQLite) and never in the queue database."""
    with override_settings(DATABASE_ROUTERS=[]):
        assert "reproq.W004" in ids(checks.check_queue_databases())  # tests: "remote-*" → queues
    assert "reproq.W004" not in ids(checks.check_queue_databases())
    with override_settings(DATABASE_ROUTERS=[ReproqRouter()]):
        assert "reproq.W004" not in ids(checks.check_queue_databases())
