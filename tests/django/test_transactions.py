"""Enqueue joins the caller's transaction; psql and Django agree on "the same work";
async enqueue from an async view; queues in several databases."""

from __future__ import annotations

import json
import subprocess

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections, transaction
from django.tasks import TaskResultStatus, default_task_backend
from django.tasks.signals import task_started
from django.tasks.exceptions import TaskResultDoesNotExist
from django.test import AsyncClient, override_settings

from reproq_django.backend import ReproqBackend
from reproq_runner import queries
from tests import pg
from tests.testapp import events
from tests.testapp.tasks import add, echo


def row(result_id, alias="default"):
    with connections[alias].cursor() as cursor:
        return queries.get_task_run(cursor, int(str(result_id).rpartition(":")[2]))


@pytest.mark.django_db(transaction=True)
class TestTransactionalEnqueue:
    def test_rollback_drops_the_enqueue(self, queue_name, drain):
        class Abort(Exception):
            pass

        with pytest.raises(Abort), transaction.atomic():
            result = add.using(queue_name=queue_name).enqueue(1, 2)
            assert row(result.id) is not None  # visible inside the transaction
            raise Abort
        assert row(result.id) is None
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result.id)
        assert drain(queue_name) == 0  # a rolled-back enqueue never runs

    def test_commit_keeps_it_and_other_connections_see_it_only_then(self, queue_name):
        other = pg_connection()
        with transaction.atomic():
            result = add.using(queue_name=queue_name).enqueue(3, 4)
            with other.cursor() as cursor:
                assert queries.get_task_run(cursor, int(result.id)) is None
        with other.cursor() as cursor:
            assert queries.get_task_run(cursor, int(result.id)).status == "READY"
        other.close()

    def test_a_refused_enqueue_leaves_the_callers_transaction_usable(self, queue_name):
        with transaction.atomic():
            kept = add.using(queue_name=queue_name).enqueue(1, 1)
            with pytest.raises(ValueError):
                add.using(queue_name=queue_name).enqueue(1, 1, concurrency_limit=2)
            also = add.using(queue_name=queue_name).enqueue(2, 2)
        assert row(kept.id) and row(also.id)


def pg_connection():
    import psycopg

    settings = connection.settings_dict
    return psycopg.connect(dbname=connection.settings_dict["NAME"], host=settings["HOST"],
                           port=settings["PORT"], user=settings["USER"], autocommit=True)


@pytest.mark.django_db(transaction=True)
def test_psql_and_django_enqueues_of_the_same_work_dedup(queue_name):
    result = echo.using(queue_name=queue_name).enqueue(1, {"b": 2, "a": [1.0, "x"]}, k=None)
    spec = json.dumps({"kwargs": {"k": None}, "args": [1, {"a": [1.0, "x"], "b": 2}]})
    sql = (f"select reproq.enqueue('tests.testapp.tasks.echo', '{spec}'::jsonb, "
           f"p_queue => '{queue_name}');")
    psql = pg.cluster().pg_bin / "psql"
    output = subprocess.run([str(psql), pg.cluster().dsn(connection.settings_dict["NAME"]),
                             "-qAt", "-c", sql], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == result.id

    different_queue = sql.replace(f"'{queue_name}'", f"'{queue_name}-b'")
    output = subprocess.run([str(psql), pg.cluster().dsn(connection.settings_dict["NAME"]),
                             "-qAt", "-c", different_queue], capture_output=True, text=True,
                            check=True)
    assert output.stdout.strip() != result.id


@pytest.mark.django_db(transaction=True)
def test_async_enqueue_from_an_async_view():
    response = async_to_sync(AsyncClient().get)("/enqueue/", {"a": 2, "b": 40})
    body = response.json()
    assert body["same"] is True
    stored = row(body["id"])
    assert stored.task_path == "tests.testapp.tasks.add" and stored.spec_json["args"] == [2, 40]


@pytest.mark.django_db(transaction=True, databases=["default", "queues"])
class TestSeveralQueueDatabases:
    @override_settings(REPROQ_RESULT_ID_WITH_ALIAS=True)
    def test_queues_route_by_glob_to_their_database(self, drain):
        result = add.using(queue_name="remote-bulk").enqueue(1, 2)
        assert result.id.startswith("queues:")
        assert row(result.id, "queues").queue_name == "remote-bulk"
        assert default_task_backend.get_result(result.id) == result
        drain("remote-bulk", alias="queues")
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3

    @override_settings(REPROQ_RESULT_ID_WITH_ALIAS=None)
    def test_ids_carry_the_alias_when_several_queue_databases_exist(self):
        remote = add.using(queue_name="remote-x").enqueue(5, 5)
        local = add.enqueue(5, 6)
        assert remote.id.startswith("queues:") and local.id.startswith("default:")
        assert default_task_backend.get_result(remote.id) == remote
        assert default_task_backend.get_result(local.id) == local

    def test_ids_of_other_databases_carry_their_alias_whatever_the_setting(self, queue_name,
                                                                           drain):
        """With REPROQ_RESULT_ID_WITH_ALIAS = False a remote task's id was a plain number,
        which get_result() and cancel() looked up in the default database: they read, and
        cancelled, the task there that had the same number."""
        with events.received(task_started) as seen:
            for _ in range(3):  # numbers the two databases both use
                local = add.using(queue_name=queue_name).enqueue(1, 1)
                remote = add.using(queue_name=f"remote-{queue_name}").enqueue(2, 2)
            assert ":" not in local.id
            assert remote.id == f"queues:{row(remote.id, 'queues').result_id}"
            assert default_task_backend.get_result(remote.id) == remote
            assert default_task_backend.cancel(remote.id) == "CANCELLED"
            assert row(remote.id, "queues").status == "CANCELLED"
            assert row(local.id).status == "READY"
            other = add.using(queue_name=f"remote-{queue_name}").enqueue(3, 3)
            drain(f"remote-{queue_name}", alias="queues")
        assert [r.id for r in seen] == [other.id]  # the runner's results name the database

    def test_bulks_write_their_databases_in_one_order_whatever_the_call_order(self,
                                                                              monkeypatch):
        """In the order of the caller's list, two bulks listing the same work in opposite
        orders each held a row the other waited for, in two databases: no deadlock detector
        sees that, and both waited forever."""
        written = []
        store_on = ReproqBackend._store_on

        def recording(backend, alias, *args):
            written.append(alias)
            return store_on(backend, alias, *args)

        monkeypatch.setattr(ReproqBackend, "_store_on", recording)
        default_task_backend.bulk_enqueue([(add.using(queue_name="remote-z"), (9, 1), {}),
                                           (add, (9, 2), {})])
        assert written == ["default", "queues"]

    def test_bulk_enqueue_across_databases_is_all_or_nothing(self):
        calls = [(add.using(queue_name="remote-y"), (7, 7), {}),
                 (add, (7, 8), {"concurrency_limit": 3})]  # refused by SQL on "default"
        with pytest.raises(ValueError):
            default_task_backend.bulk_enqueue(calls)
        with connections["queues"].cursor() as cursor:
            assert queries.count_due(cursor, ["remote-y"]) == 0


@pytest.mark.django_db(transaction=True)
def test_a_cursor_factory_of_ones_own_sees_the_enqueue(queue_name):
    """The enqueue built a plain psycopg cursor, bypassing OPTIONS["cursor_factory"] (a
    tracing cursor, client-side binding chosen that way)."""
    import psycopg

    seen = []

    class Tracing(psycopg.ClientCursor):
        def execute(self, query, params=None, **kwargs):
            seen.append(str(query))
            return super().execute(query, params, **kwargs)

    options = connection.settings_dict["OPTIONS"]
    connection.close()
    connection.settings_dict["OPTIONS"] = {**options, "cursor_factory": Tracing}
    try:
        add.using(queue_name=queue_name).enqueue(1, 2)
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"] = options
    assert any("reproq.enqueue_one" in query for query in seen)
