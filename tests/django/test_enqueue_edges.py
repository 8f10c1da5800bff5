"""Enqueue input at the edges: each is refused with a named exception before anything is
written, or stored so that it reads back; found by a review of the backend's edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone as fixed_offset
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, connections, transaction
from django.tasks import default_task_backend, task
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.test import override_settings

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, InvalidSpec
from tests.testapp.tasks import add, echo

pytestmark = pytest.mark.django_db

EXPIRING = {"default": {"BACKEND": "reproq_django.backend.ReproqBackend", "QUEUES": [],
                        "OPTIONS": {"EXPIRES_IN": timedelta(hours=1)}}}


def task_count(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        return sum(queries.status_counts(cursor).values())


def stored(result, alias: str = "default"):
    with connections[alias].cursor() as cursor:
        return queries.get_task_run(cursor, int(str(result.id).rpartition(":")[2]))


def refused(exception, enqueue) -> str:
    before = task_count()
    with pytest.raises(exception) as info:
        enqueue()
    assert task_count() == before
    return str(info.value)


# -- times ------------------------------------------------------------------------------------

PAST_9999_IN_UTC = datetime(9999, 12, 31, 23, 0, tzinfo=fixed_offset(timedelta(hours=-5)))


@pytest.mark.parametrize("enqueue", [
    lambda: add.using(run_after=PAST_9999_IN_UTC).enqueue(1, 1),
    lambda: default_task_backend.bulk_enqueue([(add.using(run_after=PAST_9999_IN_UTC), (1, 1),
                                                {}), (add, (1, 2), {})]),
    lambda: add.enqueue(1, 1, run_after=timedelta(days=4_000_000)),
    lambda: add.enqueue(1, 1, run_after=datetime(1, 1, 1, 12, tzinfo=UTC)),
], ids=["single", "bulk", "timedelta-overflow", "year-1"])
def test_a_run_after_no_client_could_read_back_is_refused(enqueue):
    message = refused(InvalidTask, enqueue)
    assert "run_after" in message


@override_settings(TASKS=EXPIRING)
def test_expires_in_past_year_9999_is_refused_not_an_overflow():
    message = refused(InvalidTask, lambda: add.using(
        run_after=datetime(9999, 12, 31, tzinfo=UTC)).enqueue(1, 1))
    assert "9999" in message


@override_settings(USE_TZ=False, TIME_ZONE="America/New_York", TASKS=EXPIRING)
def test_naive_times_without_use_tz_are_stored_alike_by_single_and_bulk_enqueue():
    """A bulk enqueue of two or more sends times as JSON text, which needs an offset: a naive
    time is the default time zone's, as Django's connection reads it for a single enqueue."""
    when = datetime(2030, 1, 2, 3, 4, 5)
    single = add.using(run_after=when).enqueue(1, 1)
    bulk = default_task_backend.bulk_enqueue([
        (add.using(run_after=when), (2, 2), {}),
        (add, (3, 3), {"run_after": timedelta(minutes=5)}),
    ])
    assert stored(single).run_after == stored(bulk[0]).run_after == when
    with connection.cursor() as cursor:
        cursor.execute("select run_after at time zone 'UTC' from reproq.task_runs "
                       "where result_id = %s", [int(bulk[0].id)])
        assert cursor.fetchone()[0] == datetime(2030, 1, 2, 8, 4, 5)  # EST is UTC-5
    for result in (single, *bulk):
        row = stored(result)
        with connection.cursor() as cursor:
            cursor.execute("select expires_at - run_after from reproq.task_runs "
                           "where result_id = %s", [row.result_id])
            assert cursor.fetchone()[0] == timedelta(hours=1)


@override_settings(USE_TZ=False, TIME_ZONE="America/New_York")
def test_without_use_tz_an_aware_run_after_reads_back_equal_to_the_enqueued_result():
    """The enqueued result kept the caller's aware time; get_result shows it naive local, as
    Django's connection reads it, so the two results differed."""
    result = add.using(run_after=datetime(2030, 1, 1, 12, tzinfo=UTC)).enqueue(1, 2)
    assert result.task.run_after == datetime(2030, 1, 1, 7)  # EST is UTC-5
    assert result == default_task_backend.get_result(result.id)


# -- text and JSON PostgreSQL cannot hold ---------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("lock_key", "a\x00b"), ("lock_key", "a\udc80"),
                                             ("concurrency_key", "k\x00")])
@pytest.mark.parametrize("how", ["single", "bulk"])
def test_a_key_postgresql_text_cannot_hold_is_refused(name, value, how):
    calls = [(add, (1, 1), {name: value}), (add, (2, 2), {})]
    enqueue = ((lambda: add.enqueue(1, 1, **{name: value})) if how == "single"
               else (lambda: default_task_backend.bulk_enqueue(calls)))
    assert name in refused(InvalidTask, enqueue)


@pytest.mark.parametrize("queue", ["q\x00", "q\udc80"])
def test_a_queue_name_postgresql_text_cannot_hold_is_refused(queue):
    assert "queue_name" in refused(InvalidTask, lambda: add.using(queue_name=queue).enqueue(1, 1))


def test_a_task_in_a_module_named_with_non_ascii_letters_is_refused_when_declared():
    """Python allows such module names; reproq's SQL functions take ASCII task paths only, so
    the task is refused at once rather than at every enqueue (InvalidTaskPath)."""
    def envoyer():
        pass

    envoyer.__module__, envoyer.__qualname__ = "tests.testapp.tâches", "envoyer"
    with pytest.raises(InvalidTask, match="not a dotted path of ASCII identifiers"):
        task(envoyer)


@pytest.mark.parametrize("priority", [Decimal("5"), Fraction(5), 5.0, True])
def test_a_whole_priority_of_any_real_number_type_is_stored_as_an_integer(priority):
    assert stored(add.using(priority=priority).enqueue(1, 1)).priority == int(priority)


@pytest.mark.parametrize("changes, message", [
    ({"priority": "5"}, "priority must be a whole number between -100 and 100, not '5'"),
    ({"priority": float("nan")}, "priority must be a whole number between -100 and 100, not nan"),
    ({"priority": float("inf")}, "priority must be a whole number between -100 and 100, not inf"),
    ({"priority": Decimal("NaN")}, "priority must be a whole number between -100 and 100, not "
                                   "Decimal('NaN')"),
    ({"run_after": date(2030, 1, 1)}, "run_after must be an aware datetime or a timedelta, "
                                      "not date datetime.date(2030, 1, 1)"),
    ({"run_after": "2030-01-01T00:00:00Z"}, "run_after must be an aware datetime or a "
                                            "timedelta, not str"),
    ({"run_after": 60}, "run_after must be an aware datetime or a timedelta, not int 60"),
])
def test_a_priority_or_run_after_of_the_wrong_type_is_an_invalid_task(changes, message):
    """Django's own validation compared them unchecked: TypeError, AttributeError, or
    ValueError/OverflowError for a NaN or infinite priority."""
    with pytest.raises(InvalidTask) as info:
        add.using(**changes)
    assert message in str(info.value)
    assert message in refused(InvalidTask, lambda: add.enqueue(1, 1, **changes))


@pytest.mark.parametrize("how", ["single", "bulk"])
def test_a_task_no_runner_would_import_is_refused_at_enqueue(how):
    """It was stored READY; every runner then failed it without running it ("outside the
    allowed task modules"), and get_result() of its own id raised TaskResultDoesNotExist."""
    from tests.testapp.runner_tasks import echo as outside  # not an installed app's tasks module

    enqueue = ((lambda: outside.enqueue(5)) if how == "single" else
               (lambda: default_task_backend.bulk_enqueue([(add, (1, 1), {}),
                                                           (outside, (5,), {})])))
    message = refused(InvalidTask, enqueue)
    assert ("'tests.testapp.runner_tasks.echo' is outside the default of "
            "REPROQ_ALLOWED_TASK_MODULES (each installed app's tasks module): "
            "['tests.testapp.tasks']") in message
    assert message.endswith("move it into an installed app's tasks module, or list its module "
                            "in REPROQ_ALLOWED_TASK_MODULES.")
    with override_settings(REPROQ_ALLOWED_TASK_MODULES=["tests.testapp"]):
        assert outside.enqueue(5).status == "READY"
    with override_settings(REPROQ_ALLOWED_TASK_MODULES=["tests.testapp.other_tasks"]):
        message = refused(InvalidTask, lambda: add.enqueue(1, 1))
    assert "is outside REPROQ_ALLOWED_TASK_MODULES: ['tests.testapp.other_tasks']" in message
    assert message.endswith("add its module to that setting.")


@pytest.mark.parametrize("queue", ["a,b", " emails", "emails "])
def test_a_queue_name_no_runner_could_be_told_to_serve_is_refused(queue):
    assert "--queues" in refused(InvalidTask, lambda: add.using(queue_name=queue).enqueue(1, 1))


def test_a_time_in_a_historic_offset_with_seconds_is_bulk_enqueued_as_singly():
    """Zones had offsets such as +05:53:28 before standard time; JSON carries times in UTC."""
    when = datetime(1890, 1, 1, 12, tzinfo=ZoneInfo("Asia/Kolkata"))
    single = add.using(run_after=when).enqueue(1, 1)
    bulk = default_task_backend.bulk_enqueue([(add.using(run_after=when), (2, 2), {}),
                                              (add, (3, 3), {})])
    assert stored(single).run_after == stored(bulk[0]).run_after == when


@pytest.mark.parametrize("how", ["single", "bulk"])
def test_a_lone_surrogate_in_an_argument_is_an_invalid_spec(how):
    value = "file-\udc80.txt"  # what os.fsdecode makes of a non-UTF-8 file name
    enqueue = ((lambda: echo.enqueue(value)) if how == "single" else
               (lambda: default_task_backend.bulk_enqueue([(echo, (value,), {}),
                                                           (echo, (1,), {})])))
    assert "lone surrogates" in refused(InvalidSpec, enqueue)


def test_characters_outside_the_bmp_are_stored_and_read_back():
    result = echo.enqueue("😀", {"k": "𝄞"})
    assert default_task_backend.get_result(result.id).args == ["😀", {"k": "𝄞"}]


# -- concurrency_limit ---------------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["2", 2.0, True, 0, 2**40])
def test_a_concurrency_limit_that_is_not_a_whole_number_in_range_is_refused(limit):
    message = refused(InvalidTask, lambda: add.enqueue(1, 1, concurrency_key="k",
                                                       concurrency_limit=limit))
    assert "concurrency_limit must be a whole number from 1 to 1000000" in message


def test_a_valid_concurrency_limit_is_stored():
    result = add.enqueue(1, 1, concurrency_key="k", concurrency_limit=2)
    with connection.cursor() as cursor:
        cursor.execute("select concurrency_limit from reproq.task_runs where result_id = %s",
                       [int(result.id)])
        assert cursor.fetchone()[0] == 2


# -- results and cancel --------------------------------------------------------------------------

def test_get_result_shows_an_envelope_reproq_did_not_write_as_stored():
    spec = '{"args": [{"__reproq__": "x", "v": 1}, {"__reproq__": "datetime", "value": "?"}], ' \
           '"kwargs": {}}'
    with connection.cursor() as cursor:
        cursor.execute("select reproq.enqueue('tests.testapp.tasks.echo', %s::jsonb)", [spec])
        result_id = cursor.fetchone()[0]
    result = default_task_backend.get_result(str(result_id))
    assert result.args == [{"__reproq__": "x", "v": 1}, {"__reproq__": "datetime", "value": "?"}]


@pytest.mark.django_db(transaction=True)
def test_cancel_of_an_unknown_id_is_task_result_does_not_exist_and_keeps_the_transaction():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.cancel("999999")
    with transaction.atomic():
        kept = add.enqueue(40, 2)
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.cancel("999999")
        after = add.enqueue(40, 3)  # the transaction is still usable
    assert stored(kept) is not None and stored(after) is not None


# -- several queue databases -----------------------------------------------------------------

@pytest.mark.django_db(transaction=True, databases=["default", "queues"])
@pytest.mark.parametrize(("calls", "position"), [
    ([(add, (1, 1), {}), (add, (1, 2), {}),
      (add.using(queue_name="remote-a"), (1, 3), {"concurrency_limit": 3}),
      (add.using(queue_name="remote-a"), (1, 4), {})], 3),
    ([(add, (1, 1), {}), (add.using(queue_name="remote-a"), (1, 3), {"concurrency_limit": 3}),
      (add, (1, 2), {})], 2),
], ids=["share-of-two", "share-of-one"])
def test_a_bulk_error_names_the_task_by_its_place_in_the_callers_list(calls, position):
    before = task_count(), task_count("queues")
    with pytest.raises(InvalidArgument) as info:
        default_task_backend.bulk_enqueue(calls)
    assert str(info.value).startswith(f"task {position}: concurrency_limit")
    assert (task_count(), task_count("queues")) == before
