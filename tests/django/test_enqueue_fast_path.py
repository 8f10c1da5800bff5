"""What enqueue keeps between calls (validated tasks, routing, settings) changes nothing a caller
can see: results equal what the database holds, settings changes are honoured at once, bad input
is refused on every call, and the typed envelope is the same as the general encoder's."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection, connections
from django.tasks import default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_enqueued
from django.test import override_settings

from reproq_django import serialization
from reproq_django import backend as backend_module
from reproq_django.backend import ReproqBackend, _enqueue_cursor
from reproq_runner import queries
from tests.testapp.tasks import add, echo

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    ((1, 2.5, "x", True, None), {"a": 1, "b": "y"}),
    (((1, 2), [3, {"k": 4}]), {"nested": {"deep": [1, 2]}}),
    ((datetime(2026, 1, 31, 12, tzinfo=UTC),), {"d": date(2026, 1, 1)}),
    ((Decimal("1.50"), uuid.UUID(int=7), timedelta(seconds=3)), {}),
    ((), {"__reproq__": 1}),
    ((b"bytes",), {"k": b"v"}),
    ((1e16, -2.5e300, 1e15), {"big": 1e20}),
    ((-0.0, 0.0), {"z": -0.0}),
])
def test_encode_call_is_encode_then_decode(args, kwargs):
    encoded_args = serialization.encode(list(args))
    encoded_kwargs = serialization.encode(dict(kwargs))
    expected = (encoded_args, encoded_kwargs,
                serialization.decode(encoded_args, fetch_models=False),
                serialization.decode(encoded_kwargs, fetch_models=False))
    # repr too: == takes -0.0 for 0.0
    assert serialization.encode_call(args, dict(kwargs)) == expected
    assert repr(serialization.encode_call(args, dict(kwargs))) == repr(expected)


def test_dict_keys_are_written_as_json_writes_them():
    import enum
    import json

    class Level(enum.IntEnum):
        HIGH = 3

    value = {1: "a", Level.HIGH: "b", 2.5: "c", False: "d", None: "e"}
    assert serialization.encode(value) == json.loads(json.dumps(value))
    with pytest.raises(ValueError, match="not JSON compliant"):
        serialization.encode({float("nan"): 1})


def test_encode_call_refuses_what_encode_refuses():
    with pytest.raises(TypeError, match="Unsupported type"):
        serialization.encode_call((object(),), {})
    with pytest.raises(TypeError, match="Unsupported type"):
        serialization.encode_call((), {"k": object()})


def test_a_single_enqueue_equals_the_stored_row_and_sends_the_signal():
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = echo.enqueue(1, "two", [3], {"four": 4.0}, when=datetime(2026, 1, 1, tzinfo=UTC))
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [result]
    assert default_task_backend.get_result(result.id) == result
    assert result.args == [1, "two", [3], {"four": 4.0}]
    assert result.kwargs == {"when": datetime(2026, 1, 1, tzinfo=UTC)}


def test_a_deferred_single_enqueue_equals_the_stored_row():
    result = add.using(run_after=timedelta(hours=1)).enqueue(1, 2)
    assert result.task.run_after is not None
    assert default_task_backend.get_result(result.id) == result
    again = add.enqueue(1, 3, run_after=timedelta(hours=1))
    assert default_task_backend.get_result(again.id) == again


def test_a_bad_task_is_refused_on_every_call():
    bad = add.using(priority=3)
    object.__setattr__(bad, "priority", 1000)  # skip Task's own checks: the backend refuses it
    for _ in range(2):
        with pytest.raises(InvalidTask, match="priority"):
            bad.enqueue(1, 2)


def test_queue_routing_follows_settings_changes_at_once():
    task = add.using(queue_name="fresh-queue")
    assert stored(task.enqueue(2, 2)).queue_name == "fresh-queue"
    with override_settings(REPROQ_QUEUE_DATABASES={"fresh-*": "nowhere"}):
        with pytest.raises(Exception, match="nowhere"):
            task.enqueue(3, 3)
    assert stored(task.enqueue(4, 4)).queue_name == "fresh-queue"


def test_result_ids_follow_settings_changes_at_once():
    plain = add.enqueue(7, 7)
    assert ":" not in plain.id
    with override_settings(REPROQ_RESULT_ID_WITH_ALIAS=True):
        assert add.enqueue(7, 8).id.startswith("default:")
    assert ":" not in add.enqueue(7, 9).id


def test_naive_run_after_is_checked_on_every_call():
    task = add.using(run_after=datetime(2030, 1, 1, tzinfo=UTC))
    object.__setattr__(task, "run_after", datetime(2030, 1, 1))  # skip Task's own checks
    for _ in range(2):
        with pytest.raises(InvalidTask, match="aware"):
            task.enqueue(1, 2)


def test_plans_are_bounded(monkeypatch):
    monkeypatch.setattr(backend_module, "_PLAN_CACHE_SIZE", 10)
    backend = task_backends["default"]
    for priority in range(25):
        add.using(priority=priority, queue_name="q-bounded").enqueue(priority, 0)
        assert len(backend._plans) <= 10


def test_a_subclass_hooking_bulk_enqueue_sees_single_enqueues():
    calls = []

    class Hooked(ReproqBackend):
        def bulk_enqueue(self, items):
            items = list(items)
            calls.append(len(items))
            return super().bulk_enqueue(items)

    backend = Hooked("default", {"QUEUES": [], "OPTIONS": {}})
    result = backend.enqueue(add, (1, 2), {})
    assert calls == [1] and result.args == [1, 2]


def test_the_enqueue_cursor_binds_server_side_and_keeps_djangos_wrapper():
    with _enqueue_cursor(connection) as cursor:
        assert not isinstance(cursor.cursor, psycopg.ClientCursor)
        enqueued = queries.enqueue_one(cursor, "tests.testapp.tasks.add", [1, 2], {},
                                       queue_name="default", priority=0)
        assert enqueued.created and enqueued.enqueued_at.tzinfo is not None


def test_the_enqueue_cursor_stays_client_side_while_queries_are_logged(
        django_assert_max_num_queries):
    with django_assert_max_num_queries(3) as captured:  # savepoint, enqueue, release
        add.enqueue(40, 2)
        with _enqueue_cursor(connections["default"]) as cursor:
            assert isinstance(cursor.cursor, psycopg.ClientCursor)
    assert any("enqueue_one" in query["sql"] and "40" in query["sql"]
               for query in captured.captured_queries)


def test_a_wrapper_that_makes_its_own_cursors_gets_them(monkeypatch):
    made = []

    wrapper = connections["default"]

    class TracingWrapper(type(wrapper)):
        def create_cursor(self, name=None):
            made.append(name)
            return super().create_cursor(name)

    monkeypatch.setattr(wrapper, "__class__", TracingWrapper)
    with _enqueue_cursor(wrapper) as cursor:
        assert made == [None]  # the enqueue's own cursor came from the override
        enqueued = queries.enqueue_one(cursor, "tests.testapp.tasks.add", [3, 4], {},
                                       queue_name="default", priority=0)
    assert enqueued.created


def stored(result):
    with connection.cursor() as cursor:
        return queries.get_task_run(cursor, int(result.id))


def test_new_results_are_built_like_the_dataclass_builds_them(monkeypatch):
    from reproq_django import results

    assert results._NEW_RESULT_SETTERS is not None  # the fields Django 6.0/6.1 define
    args = (add, "7", datetime(2026, 1, 1, tzinfo=UTC), [1], {"k": 2}, {"code_ref": "x"},
            "default")
    fast = results.enqueued_task_result(*args)
    monkeypatch.setattr(results, "_NEW_RESULT_SETTERS", None)
    slow = results.enqueued_task_result(*args)
    assert fast == slow
    for name in results._NEW_RESULT_FIELDS:
        assert getattr(fast, name) == getattr(slow, name)
    assert fast.metadata == {"code_ref": "x"} and fast.metadata is not args[5]
    assert fast.errors == [] and fast.worker_ids == [] and fast._return_value is None


def test_a_synchronous_enqueue_inside_an_event_loop_is_still_refused():
    import asyncio

    from django.core.exceptions import SynchronousOnlyOperation

    async def enqueue_from_the_loop():
        add.enqueue(1, 2)

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(enqueue_from_the_loop())
