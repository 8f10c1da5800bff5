"""reproq.fail and reproq.backoff_seconds: retries, backoff bounds, final failure, fencing."""

import uuid
from datetime import timedelta

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, LeaseLost, TaskNotFound
from tests.sql.helpers import T0, at, claim_one, enqueue, run, snapshot

ERROR = {"exception_class_path": "builtins.ValueError", "traceback": "Traceback ..."}


def test_failed_attempt_is_retried_after_backoff_within_bounds(cur):
    result_id = enqueue(cur, max_attempts=5)
    for attempt, (low, high) in enumerate([(2, 2.5), (4, 5), (8, 10)], start=1):
        now = at(1000 * attempt)
        task = claim_one(cur, f"w{attempt}", now=now)
        assert queries.fail(cur, result_id, task.lease_token, ERROR, now=now) == "READY"
        row = run(cur, result_id)
        assert now + timedelta(seconds=low) <= row.run_after <= now + timedelta(seconds=high)
        assert (row.status, row.attempts, row.finished_at) == ("READY", attempt, None)
        assert (row.leased_by, row.leased_until, row.lease_token) == (None, None, None)


def test_errors_json_gets_one_entry_per_failed_attempt(cur):
    result_id = enqueue(cur)
    for attempt in (1, 2):
        task = claim_one(cur, f"w{attempt}", now=at(100 * attempt))
        queries.fail(cur, result_id, task.lease_token, {**ERROR, "n": attempt},
                     retry_in_seconds=0, now=at(100 * attempt + 1))
    errors = run(cur, result_id).errors_json
    assert [(e["attempt"], e["worker_id"], e["n"]) for e in errors] == [(1, "w1", 1), (2, "w2", 2)]
    assert errors[0]["exception_class_path"] == "builtins.ValueError"
    assert errors[0]["failed_at"].startswith("2030-01-01T12:01:41")


def test_retry_in_seconds_overrides_the_backoff(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    queries.fail(cur, result_id, task.lease_token, ERROR, retry_in_seconds=42.5, now=at(10))
    assert run(cur, result_id).run_after == at(52.5)


def test_last_attempt_fails_for_good(cur):
    result_id = enqueue(cur, max_attempts=2)
    for attempt in (1, 2):
        task = claim_one(cur, now=at(attempt * 100))
        status = queries.fail(cur, result_id, task.lease_token, ERROR, retry_in_seconds=0,
                              now=at(attempt * 100))
    assert status == "FAILED"
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.finished_at) == ("FAILED", 2, at(200))
    assert len(row.errors_json) == 2 and row.lease_token is None
    assert queries.claim(cur, "w", ["default"], 1, now=at(10_000)) == []


def test_dont_retry_fails_at_once(cur):
    result_id = enqueue(cur, max_attempts=5)
    task = claim_one(cur)
    assert queries.fail(cur, result_id, task.lease_token, ERROR, retry=False, now=at(3)) == "FAILED"
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.finished_at) == ("FAILED", 1, at(3))


def test_requested_cancellation_wins_over_retry(cur):
    result_id = enqueue(cur, max_attempts=5)
    task = claim_one(cur)
    assert queries.cancel(cur, result_id, now=at(1)) == "RUNNING"
    assert queries.fail(cur, result_id, task.lease_token, ERROR, now=at(2)) == "CANCELLED"
    row = run(cur, result_id)
    assert (row.status, row.finished_at, len(row.errors_json)) == ("CANCELLED", at(2), 1)


def test_stale_lease_token_is_refused_and_nothing_written(cur):
    result_id = enqueue(cur)
    stale = claim_one(cur, "w1", now=T0, lease_seconds=10)
    queries.reclaim(cur, now=at(11))
    claim_one(cur, "w2", now=at(12))
    before = snapshot(cur)
    with pytest.raises(LeaseLost, match=f"lease lost on task {result_id}"):
        queries.fail(cur, result_id, stale.lease_token, ERROR, now=at(13))
    assert snapshot(cur) == before


def test_unknown_task_is_refused(cur):
    with pytest.raises(TaskNotFound):
        queries.fail(cur, 12345, uuid.uuid4(), ERROR)


@pytest.mark.parametrize(("error", "retry_in", "match"), [
    ("not an object", None, "p_error"),
    ([1, 2], None, "p_error"),
    (ERROR, -1, "p_retry_in_seconds"),
    (ERROR, float("nan"), "p_retry_in_seconds"),
    (ERROR, float("inf"), "p_retry_in_seconds"),
])
def test_bad_arguments_are_refused_and_nothing_written(cur, error, retry_in, match):
    result_id = enqueue(cur)
    task = claim_one(cur)
    before = snapshot(cur)
    with pytest.raises(InvalidArgument, match=match):
        queries._execute(cur, "select reproq.fail(%s, %s, %s::jsonb, true, %s)",
                         (result_id, task.lease_token, queries.json.dumps(error), retry_in))
    assert snapshot(cur) == before


def test_backoff_is_capped_exponential_with_up_to_a_quarter_jitter(cur):
    cur.execute("""select a, min(d), max(d)
                   from generate_series(1, 20) as a,
                        lateral (select reproq.backoff_seconds(a) as d
                                 from generate_series(1, 200)) as s
                   group by a order by a""")
    for attempt, low, high in cur.fetchall():
        base = min(3600, 2 * 2 ** (attempt - 1))
        assert base <= low <= high <= base * 1.25


def test_backoff_with_huge_attempt_numbers_stays_at_the_cap(cur):
    cur.execute("select reproq.backoff_seconds(100000, 1, 60)")
    assert 60 <= cur.fetchone()[0] <= 75
