"""reproq.cancel: at once when waiting, requested when running, no-op when finished."""

import uuid

import pytest

from reproq_runner import queries
from reproq_runner.errors import TaskNotFound
from tests.sql.helpers import at, claim_one, enqueue, run, snapshot


def test_ready_task_is_cancelled_at_once(cur):
    result_id = enqueue(cur)
    assert queries.cancel(cur, result_id, now=at(3)) == "CANCELLED"
    row = run(cur, result_id)
    assert (row.status, row.finished_at, row.cancel_requested) == ("CANCELLED", at(3), False)
    assert queries.claim(cur, "w", ["default"], 1, now=at(4)) == []


def test_cancelled_task_frees_its_dedup_slot(cur):
    result_id = enqueue(cur, [1])
    queries.cancel(cur, result_id, now=at(1))
    assert enqueue(cur, [1]) != result_id


def test_a_running_task_being_cancelled_no_longer_absorbs_an_identical_enqueue(cur):
    result_id = enqueue(cur, [1])
    claim_one(cur, "w1")
    assert queries.cancel(cur, result_id, now=at(1)) == "RUNNING"
    fresh = queries.enqueue_one(cur, "app.tasks.t", [1], now=at(2))
    assert fresh.created and fresh.result_id != result_id
    assert (run(cur, result_id).status, run(cur, fresh.result_id).status) == (
        "RUNNING", "READY")
    assert queries.enqueue_one(cur, "app.tasks.t", [1], now=at(3)).result_id == fresh.result_id


def test_waiting_task_is_cancelled_at_once(cur):
    result_id = enqueue(cur)
    cur.execute("update reproq.task_runs set status = 'WAITING' where result_id = %s",
                (result_id,))
    assert queries.cancel(cur, result_id, now=at(1)) == "CANCELLED"
    assert run(cur, result_id).finished_at == at(1)


def test_running_task_gets_cancellation_requested(cur):
    result_id = enqueue(cur)
    task = claim_one(cur, "w1")
    assert queries.cancel(cur, result_id, now=at(1)) == "RUNNING"
    row = run(cur, result_id)
    assert (row.status, row.cancel_requested, row.lease_token) == (
        "RUNNING", True, task.lease_token)
    assert queries.heartbeat(cur, "w1", now=at(2)) == [result_id]


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_finished_task_is_left_alone(cur, outcome):
    result_id = enqueue(cur)
    task = claim_one(cur)
    if outcome == "complete":
        queries.complete(cur, result_id, task.lease_token, 1, now=at(1))
    else:
        queries.fail(cur, result_id, task.lease_token, {"m": 1}, retry=False, now=at(1))
    before = snapshot(cur)
    expected = "SUCCESSFUL" if outcome == "complete" else "FAILED"
    assert queries.cancel(cur, result_id, now=at(2)) == expected
    assert snapshot(cur) == before


def test_cancelling_twice_is_harmless(cur):
    result_id = enqueue(cur)
    queries.cancel(cur, result_id, now=at(1))
    assert queries.cancel(cur, result_id, now=at(2)) == "CANCELLED"
    assert run(cur, result_id).finished_at == at(1)


def test_unknown_task_is_refused(cur):
    with pytest.raises(TaskNotFound, match="task 77 does not exist"):
        queries.cancel(cur, 77)


def test_cancel_requested_then_lease_released_ends_cancelled(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    queries.cancel(cur, result_id, now=at(1))
    assert queries.release(cur, [(result_id, task.lease_token)], now=at(2)) == {result_id}
    assert run(cur, result_id).status == "CANCELLED"
    assert queries.release(cur, [(result_id, uuid.uuid4())]) == set()
