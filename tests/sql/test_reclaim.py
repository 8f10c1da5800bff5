"""reproq.reclaim, explicit and lazy (inside reproq.claim): expired leases go back or end."""

import pytest

from reproq_runner import queries
from reproq_runner.errors import LeaseLost
from tests.sql.helpers import T0, at, claim_one, enqueue, run


def test_expired_lease_goes_back_to_ready_with_the_attempt_recorded(cur):
    result_id = enqueue(cur)
    claim_one(cur, "w1", now=T0, lease_seconds=10)
    assert queries.reclaim(cur, now=at(10)) == 0  # the deadline itself is still leased
    assert queries.reclaim(cur, now=at(11)) == 1
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.worker_ids, row.run_after) == (
        "READY", 1, ["w1"], at(11))
    assert (row.leased_by, row.leased_until, row.lease_token, row.finished_at) == (
        None, None, None, None)
    [error] = row.errors_json
    assert (error["attempt"], error["worker_id"], error["exception_class_path"]) == (
        1, "w1", "reproq.LeaseExpired")
    assert "stopped renewing its lease" in error["message"]


def test_expired_lease_on_the_last_attempt_fails_the_task(cur):
    result_id = enqueue(cur, max_attempts=1)
    claim_one(cur, now=T0, lease_seconds=10)
    assert queries.reclaim(cur, now=at(20)) == 1
    row = run(cur, result_id)
    assert (row.status, row.finished_at, len(row.errors_json)) == ("FAILED", at(20), 1)


def test_expired_lease_with_cancellation_requested_is_cancelled(cur):
    result_id = enqueue(cur)
    claim_one(cur, now=T0, lease_seconds=10)
    queries.cancel(cur, result_id, now=at(1))
    queries.reclaim(cur, now=at(20))
    assert (run(cur, result_id).status, run(cur, result_id).finished_at) == ("CANCELLED", at(20))


def test_live_leases_and_other_statuses_are_untouched(cur):
    live = enqueue(cur, [1])
    done = enqueue(cur, [2])
    waiting = enqueue(cur, [3], run_after=at(1000))
    tasks = {t.result_id: t for t in queries.claim(cur, "w", ["default"], 2, 60, now=T0)}
    queries.complete(cur, done, tasks[done].lease_token, 1, now=at(1))
    queries.heartbeat(cur, "w", 600, now=at(50))
    assert queries.reclaim(cur, now=at(100)) == 0
    assert [r.status for r in queries.get_task_runs(cur, [live, done, waiting])] == [
        "RUNNING", "SUCCESSFUL", "READY"]


def test_claim_reclaims_lazily_and_hands_the_task_out_again(cur):
    result_id = enqueue(cur)
    stale = claim_one(cur, "w1", now=T0, lease_seconds=10)
    assert queries.claim(cur, "w2", ["default"], 1, now=at(10)) == []
    fresh = claim_one(cur, "w2", now=at(11))
    assert (fresh.result_id, fresh.attempts) == (result_id, 2)
    row = run(cur, result_id)
    assert row.worker_ids == ["w1", "w2"] and len(row.errors_json) == 1
    with pytest.raises(LeaseLost):
        queries.complete(cur, result_id, stale.lease_token, 1, now=at(12))


def test_claim_reclaims_expired_leases_of_other_queues_too(cur):
    other = enqueue(cur, queue_name="other")
    claim_one(cur, "w1", queues=["other"], now=T0, lease_seconds=10)
    assert queries.claim(cur, "w2", ["default"], 1, now=at(11)) == []
    assert run(cur, other).status == "READY"
