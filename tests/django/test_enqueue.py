"""ReproqBackend's enqueue side: results, reserved kwargs, arguments, bulk, results lookup."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.test import override_settings
from django.utils import timezone

from reproq_django.backend import ReproqBackend
from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, InvalidSpec
from tests.testapp.models import Customer
from tests.testapp.tasks import add, describe, echo

pytestmark = pytest.mark.django_db


def stored(result):
    with connection.cursor() as cursor:
        return queries.get_task_run(cursor, int(result.id))


def task_count() -> int:
    with connection.cursor() as cursor:
        return sum(queries.status_counts(cursor).values())


def test_enqueue_stores_a_ready_row_and_returns_what_get_result_returns():
    result = add.enqueue(1, 2)

    assert result.status == TaskResultStatus.READY
    assert result.raw_status == "READY"
    assert result.args == [1, 2] and result.kwargs == {}
    assert result.enqueued_at is not None
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None,) * 3
    assert result.worker_ids == [] and result.attempts == 0 and result.errors == []
    assert result.backend == "default" and result.task == add
    assert default_task_backend.get_result(result.id) == result
    row = stored(result)
    assert row.task_path == "tests.testapp.tasks.add"
    assert row.spec_json == {"args": [1, 2], "kwargs": {}}


def test_result_equals_get_result_when_json_changes_the_arguments():
    result = echo.enqueue((1, 2), {1: "one", 2.5: "x", None: "none"}, k={2: 3})

    assert result.args == [[1, 2], {"1": "one", "2.5": "x", "null": "none"}]
    assert result.kwargs == {"k": {"2": 3}}
    assert default_task_backend.get_result(result.id) == result


def test_task_defaults_and_using_are_stored():
    result = echo.using(priority=-7, queue_name="special").enqueue()

    row = stored(result)
    assert (row.queue_name, row.priority) == ("special", -7)
    assert result.task.priority == -7 and result.task.queue_name == "special"


def test_capability_flags_are_all_true():
    backend = task_backends["default"]
    assert isinstance(backend, ReproqBackend)
    assert backend.supports_defer and backend.supports_priority
    assert backend.supports_get_result and backend.supports_async_task


class TestReservedKwargs:
    def test_are_removed_from_the_task_kwargs_and_stored(self):
        later = timezone.now() + timedelta(hours=1)
        result = echo.enqueue(1, run_after=later, lock_key="customer-1", priority=42,
                              concurrency_key="tenant-9", concurrency_limit=2, other=3)

        row = stored(result)
        assert row.spec_json == {"args": [1], "kwargs": {"other": 3}}
        assert (row.run_after, row.lock_key, row.priority) == (later, "customer-1", 42)
        assert (row.concurrency_key, row.concurrency_limit) == ("tenant-9", 2)
        assert result.task.run_after == later and result.task.priority == 42
        assert default_task_backend.get_result(result.id) == result

    def test_run_after_timedelta_in_enqueue(self):
        before = timezone.now()
        row = stored(add.enqueue(1, 2, run_after=timedelta(minutes=5)))
        assert before + timedelta(minutes=5) <= row.run_after <= timezone.now() + timedelta(
            minutes=5)

    def test_run_after_timedelta_in_using_resolves_at_enqueue(self):
        delayed = add.using(run_after=timedelta(minutes=10))
        assert delayed.run_after == timedelta(minutes=10)
        before = timezone.now()
        row = stored(delayed.enqueue(1, 2))
        assert row.run_after >= before + timedelta(minutes=10)

    def test_run_after_must_be_aware(self):
        with pytest.raises(InvalidTask, match="aware"):
            add.enqueue(1, 2, run_after=datetime.now())

    def test_concurrency_key_may_be_computed_from_the_arguments(self):
        result = echo.enqueue(7, tenant="acme",
                              concurrency_key=lambda n, tenant: f"{tenant}:{n}")
        assert stored(result).concurrency_key == "acme:7"

    def test_priority_override_is_validated(self):
        with pytest.raises(InvalidTask, match="priority"):
            add.enqueue(1, 2, priority=101)

    def test_a_whole_float_priority_is_stored_as_an_integer(self):
        # Django accepts 5.0; the SQL functions take an integer.
        result = add.using(priority=5.0).enqueue(1, 2)
        assert stored(result).priority == 5
        [bulk] = default_task_backend.bulk_enqueue([(add.using(priority=4.0), (1, 3), {})])
        assert stored(bulk).priority == 4

    def test_a_fractional_priority_is_refused(self):
        before = task_count()
        with pytest.raises(InvalidTask, match="whole number"):
            add.using(priority=2.5).enqueue(1, 2)
        assert task_count() == before

    def test_bad_lock_key_is_refused(self):
        with pytest.raises(InvalidTask, match="lock_key"):
            add.enqueue(1, 2, lock_key="")

    def test_concurrency_limit_needs_a_key(self):
        before = task_count()
        with pytest.raises(InvalidArgument, match="concurrency_key"):
            add.enqueue(1, 2, concurrency_limit=3)
        assert task_count() == before

    def test_a_task_cannot_take_reserved_parameter_names(self):
        def needs_priority(priority):
            return priority

        needs_priority.__module__ = "tests.testapp.tasks"
        needs_priority.__qualname__ = "needs_priority"
        with pytest.raises(InvalidTask, match="reserved"):
            task(needs_priority)


class TestArguments:
    def test_typed_values_round_trip_through_the_envelope(self):
        when = datetime(2026, 1, 31, 12, 30, tzinfo=UTC)
        ident = uuid.uuid4()
        args = [when, timedelta(days=1, seconds=2), Decimal("12.50"), ident,
                {"__reproq__": "user data"}]
        result = describe.enqueue(*args, amount=Decimal("0.1"))

        assert result.args == args
        assert result.kwargs == {"amount": Decimal("0.1")}
        assert default_task_backend.get_result(result.id) == result
        assert stored(result).spec_json["args"][0] == {"__reproq__": "datetime",
                                                       "value": "2026-01-31T12:30:00+00:00"}

    def test_large_floats_stay_floats(self, drain):
        # jsonb prints 1e16 as 10000000000000000: without an envelope it would come back an int
        result = describe.enqueue(1e16, 123.0, big=-2.5e300)
        fetched = default_task_backend.get_result(result.id)
        assert fetched.args == [1e16, 123.0] and fetched.kwargs == {"big": -2.5e300}
        assert [type(v) for v in fetched.args] == [float, float]
        assert type(fetched.kwargs["big"]) is float
        drain()
        result.refresh()
        assert result.return_value["args"] == ["float", "float"]
        assert result.return_value["kwargs"] == {"big": "float"}

    def test_negative_zero_stays_negative(self, drain):
        """jsonb's numeric has no -0.0: it arrived at the task as 0.0."""
        result = describe.enqueue(-0.0, 0.0, z=-0.0)
        fetched = default_task_backend.get_result(result.id)
        assert [math.copysign(1, v) for v in (*fetched.args, fetched.kwargs["z"])] == [-1, 1, -1]
        drain()
        result.refresh()
        assert result.return_value["repr"] == ["-0.0", "0.0", "z=-0.0"]

    def test_model_instances_are_stored_as_references(self):
        customer = Customer.objects.create(name="Ada")
        result = describe.enqueue(customer)

        reference = {"__reproq__": "model", "model": "testapp.customer", "pk": customer.pk,
                     "db": "default"}
        assert stored(result).spec_json["args"] == [reference]
        assert result.args == [reference]
        assert default_task_backend.get_result(result.id) == result

    def test_unsaved_model_instances_are_refused(self):
        with pytest.raises(TypeError, match="unsaved"):
            describe.enqueue(Customer(name="nobody"))

    @pytest.mark.parametrize("value, error, message", [
        (float("nan"), InvalidSpec, "not storable"),
        (float("inf"), InvalidSpec, "not storable"),
        ("nul\x00byte", InvalidSpec, "NUL"),
        ({"nested": [float("-inf")]}, InvalidSpec, "not storable"),
        (object(), TypeError, "Unsupported type"),
        (datetime(2026, 1, 1), TypeError, "naive datetime"),
        (b"\xff", TypeError, "not UTF-8"),
    ])
    def test_values_jsonb_refuses_are_rejected_and_nothing_is_written(self, value, error,
                                                                      message):
        before = task_count()
        with pytest.raises(error, match=message):
            describe.enqueue(value)
        assert task_count() == before


class TestBulkEnqueue:
    def test_returns_results_in_input_order(self):
        results = default_task_backend.bulk_enqueue(
            [(add, (i, i), {}) for i in range(5)] + [(echo, ("x",), {"priority": 3})])

        assert [r.args for r in results] == [[i, i] for i in range(5)] + [["x"]]
        assert results[-1].task.priority == 3 and results[-1].task.queue_name == "other"
        for result in results:
            assert default_task_backend.get_result(result.id) == result

    @override_settings(USE_TZ=False)
    def test_naive_times_without_use_tz_are_read_in_the_default_time_zone(self):
        when = datetime(2030, 1, 2, 3, 4, 5)
        single, = [add.using(run_after=when).enqueue(1, 9)]
        [bulk] = default_task_backend.bulk_enqueue([(add.using(run_after=when), (2, 9), {})])
        # Read back as Django reads times without USE_TZ: naive, in the default time zone.
        assert stored(single).run_after == stored(bulk).run_after == when

    def test_is_dedup_aware(self):
        first, again, other = default_task_backend.bulk_enqueue(
            [(add, (1, 1), {}), (add, (1, 1), {}), (add, (1, 2), {})])
        assert first.id == again.id != other.id
        assert add.enqueue(1, 1).id == first.id

    @pytest.mark.parametrize("bad_item", [
        (add, (float("nan"), 1), {}),            # refused in Python
        (add, (1, 1), {"lock_key": 5}),          # refused in Python
        (add, (1, 1), {"concurrency_limit": 0, "concurrency_key": "k"}),  # refused by SQL
    ])
    def test_is_all_or_nothing_under_a_bad_item(self, bad_item):
        before = task_count()
        good = [(add, (i, 100), {}) for i in range(3)]
        with pytest.raises((InvalidSpec, InvalidArgument, InvalidTask)):
            default_task_backend.bulk_enqueue([*good, bad_item, *good])
        assert task_count() == before

    def test_ten_thousand_tasks_in_one_call(self, django_assert_max_num_queries):
        calls = [(add, (i, 0), {}) for i in range(10_000)]
        with django_assert_max_num_queries(4):  # savepoint, enqueue_many, read back, release
            results = default_task_backend.bulk_enqueue(calls)
        assert len({r.id for r in results}) == 10_000
        assert [r.args[0] for r in results] == list(range(10_000))

    def test_empty(self):
        assert default_task_backend.bulk_enqueue([]) == []


class TestOptions:
    @override_settings(TASKS={"default": {"BACKEND": "reproq_django.backend.ReproqBackend",
                                          "OPTIONS": {"DEDUP_ACTIVE": False,
                                                      "MAX_ATTEMPTS": 5,
                                                      "TIMEOUT_SECONDS": 30,
                                                      "EXPIRES_IN": timedelta(hours=1),
                                                      "CODE_REF": "abc123",
                                                      "PIP_LOCK_HASH": "sha256:ff"}}})
    def test_options_reach_the_row(self):
        before = timezone.now()
        first, second = add.enqueue(1, 1), add.enqueue(1, 1)
        after = timezone.now()
        assert first.id != second.id  # dedup off: identical specs insert new rows
        row = stored(first)
        assert (row.max_attempts, row.timeout_seconds) == (5, 30)
        assert before <= row.expires_at - timedelta(hours=1) <= after
        assert row.metadata_json == {"code_ref": "abc123", "pip_lock_hash": "sha256:ff"}
        assert first.metadata == row.metadata_json

    @override_settings(TASKS={"default": {"BACKEND": "reproq_django.backend.ReproqBackend",
                                          "OPTIONS": {"MAX_ATTEMPTS": 0}}})
    def test_invalid_options_refuse_to_enqueue(self):
        with pytest.raises(InvalidTaskBackend, match="MAX_ATTEMPTS"):
            default_task_backend.enqueue(add, (1, 1), {})


class TestGetResult:
    @pytest.mark.parametrize("bad_id", ["", "abc", "1.5", "-1", "99999999999999999999",
                                        "nosuchalias:1", "default:", "٣"])
    def test_malformed_ids_do_not_exist(self, bad_id):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(bad_id)

    def test_missing_id_does_not_exist(self):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(str(2**62))

    def test_rows_outside_the_allow_list_are_not_imported(self):
        with connection.cursor() as cursor:
            result_id = queries.enqueue(cursor, "os.system", ["true"])
        with pytest.raises(TaskResultDoesNotExist, match="outside"):
            default_task_backend.get_result(str(result_id))

    def test_refresh_reads_the_row_again(self, drain):
        result = add.enqueue(20, 22)
        drain()
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
        assert result.raw_status == "SUCCESSFUL"

    def test_cancelled_shows_as_failed_with_the_raw_status(self):
        result = add.enqueue(5, 5)
        assert default_task_backend.cancel(result.id) == "CANCELLED"
        result.refresh()
        assert result.status == TaskResultStatus.FAILED and result.raw_status == "CANCELLED"
