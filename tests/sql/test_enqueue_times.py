"""Enqueue refuses a time no client could read back (since 0008), and writes nothing.

PostgreSQL's timestamptz holds -infinity, infinity and years up to 294276; Python's datetime
(psycopg, Django, the runner) holds years 1 to 9999. Before 0008 ``reproq.enqueue`` stored a
``run_after => '-infinity'``: the task was due at once, and the runner that claimed it could
not decode the row and stopped, leaving it RUNNING.
"""

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from reproq_runner import errors, queries
from tests.sql.helpers import T0, claim_one, enqueue, snapshot

OUT_OF_RANGE = ["-infinity", "infinity", "10000-01-01 00:00:00+00",
                "9999-12-31 23:00:00-05", "0001-01-01 12:00:00+00", "2000-01-01 BC"]

ONE_TASK = "select reproq.enqueue('app.tasks.t', '{{\"args\": [], \"kwargs\": {{}}}}'::jsonb, {})"


def refused(cur, sql: str, params=()) -> psycopg.Error:
    before = snapshot(cur)
    with pytest.raises(psycopg.Error) as info:
        cur.execute(sql, params)
    assert info.value.sqlstate == "RQ003"
    assert isinstance(errors.translate(info.value), errors.InvalidArgument)
    assert snapshot(cur) == before
    return info.value


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("parameter", ["p_run_after", "p_expires_at", "p_now"])
def test_enqueue_refuses_a_time_outside_years_1_to_9999(cur, parameter, value):
    enqueue(cur)  # a row that must stay as it is
    error = refused(cur, ONE_TASK.format(f"{parameter} => %s::timestamptz"), (value,))
    name = parameter if parameter == "p_now" else parameter.removeprefix("p_")
    assert error.diag.message_primary.startswith(
        f"{name} must be from 0001-01-02 to 9999-12-30 (UTC), got ")


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00-05:00", "0001-01-01T12:00:00Z",
                                   "9999-12-31T12:00:00Z"])
@pytest.mark.parametrize("field", ["run_after", "expires_at"])
def test_enqueue_many_refuses_an_item_time_outside_years_1_to_9999(cur, field, value):
    items = [queries.task_item("app.tasks.t", [1]),
             {**queries.task_item("app.tasks.t", [2]), field: value}]
    error = refused(cur, "select * from reproq.enqueue_many(%s::jsonb)",
                    (queries.dumps_json(items),))
    assert error.diag.message_primary.startswith(
        f"task 2: {field} must be from 0001-01-02 to 9999-12-30 (UTC), got ")


def test_enqueue_many_refuses_p_now_outside_years_1_to_9999(cur):
    error = refused(cur, "select * from reproq.enqueue_many(%s::jsonb, p_now => 'infinity')",
                    (queries.dumps_json([queries.task_item("app.tasks.t")]),))
    assert error.diag.message_primary == (
        "p_now must be from 0001-01-02 to 9999-12-30 (UTC), got infinity")


def test_the_edges_of_the_range_are_stored_and_read_back(cur):
    earliest = datetime(1, 1, 2, tzinfo=UTC)
    latest = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
    first = enqueue(cur, [1], run_after=earliest, expires_at=latest)
    [second] = queries.enqueue_many(cur, [queries.task_item(
        "app.tasks.t", [2], run_after=earliest, expires_at=latest)])
    cur.execute("set timezone = 'Pacific/Kiritimati'")  # +14: the latest time still reads
    for result_id in (first, second.result_id):
        run = queries.get_task_run(cur, result_id)
        assert run.run_after == earliest
    task = claim_one(cur, now=T0)
    assert task.run_after == earliest


def test_enqueue_many_reports_the_batchs_other_problems_first(cur):
    """As for a timestamp it cannot read: a time out of range is reported only once the batch
    has no other problem (and "infinity" is a timestamp of the wrong shape, not of the wrong
    range)."""
    items = [{**queries.task_item("app.tasks.t", [1]), "priority": "high"},
             {**queries.task_item("app.tasks.t", [2]), "run_after": "9999-12-31T12:00:00Z"}]
    error = refused(cur, "select * from reproq.enqueue_many(%s::jsonb)",
                    (queries.dumps_json(items),))
    assert error.diag.message_primary.startswith("task 1: priority, max_attempts, timeout")
    items = [queries.task_item("app.tasks.t", [1]),
             {**queries.task_item("app.tasks.t", [2]), "run_after": "infinity"}]
    error = refused(cur, "select * from reproq.enqueue_many(%s::jsonb)",
                    (queries.dumps_json(items),))
    assert error.diag.message_primary.startswith(
        "task 2: run_after must be an ISO 8601 timestamp")


def test_an_aware_time_past_year_9999_in_utc_is_refused_by_sql_not_by_python(cur):
    """task_item sends aware times in UTC; one that UTC cannot hold goes as written, for
    enqueue_many to refuse with RQ003 (Python's astimezone would raise OverflowError)."""
    when = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    item = queries.task_item("app.tasks.t", [1], run_after=when)
    assert item["run_after"] == "9999-12-31T23:00:00-05:00"
    with pytest.raises(errors.InvalidArgument, match="task 2: run_after must be from"):
        queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [0]), item])
