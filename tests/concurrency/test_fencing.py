"""A stale worker cannot record the outcome of an attempt that is no longer its own."""

import threading

import pytest

from reproq_runner import queries
from reproq_runner.errors import LeaseLost
from tests.concurrency.helpers import waits_on_a_lock
from tests.waiting import wait_for
from tests.sql.helpers import T0, at


def transactional(connect):
    """A connection whose statements stay uncommitted until the test commits them."""
    connection = connect()
    connection.autocommit = False
    return connection


def enqueue_and_claim(connection, worker="stale"):
    with connection.cursor() as cursor:
        result_id = queries.enqueue(cursor, "app.tasks.t", now=T0)
        [task] = queries.claim(cursor, worker, ["default"], 1, 10, now=T0)
    return result_id, task


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_stale_outcome_after_reclaim_and_reclaim_is_lease_lost(connect, outcome):
    stale_conn, fresh_conn = connect(), connect()
    result_id, stale = enqueue_and_claim(stale_conn)
    [fresh] = queries.claim(fresh_conn.cursor(), "fresh", ["default"], 1, 10, now=at(11))
    assert fresh.result_id == result_id and fresh.lease_token != stale.lease_token
    with pytest.raises(LeaseLost), stale_conn.cursor() as cursor:
        if outcome == "complete":
            queries.complete(cursor, result_id, stale.lease_token, "late", now=at(12))
        else:
            queries.fail(cursor, result_id, stale.lease_token, {"m": "late"}, now=at(12))
    queries.complete(fresh_conn.cursor(), result_id, fresh.lease_token, ["fresh"], now=at(13))
    run = queries.get_task_run(fresh_conn.cursor(), result_id)
    assert (run.status, run.return_json, run.worker_ids) == (
        "SUCCESSFUL", ["fresh"], ["stale", "fresh"])


def test_stale_complete_blocked_behind_the_reclaiming_claim_is_lease_lost(connect):
    stale_conn, observer = connect(), connect()
    fresh_conn = transactional(connect)
    result_id, stale = enqueue_and_claim(stale_conn)
    # The re-claim (lazy reclaim + claim) is in flight: its transaction holds the row.
    [fresh] = queries.claim(fresh_conn.cursor(), "fresh", ["default"], 1, 10, now=at(11))
    outcome = {}

    def complete_stale():
        try:
            queries.complete(stale_conn.cursor(), result_id, stale.lease_token, 1, now=at(12))
            outcome["result"] = "completed"
        except LeaseLost as exc:
            outcome["result"] = exc

    thread = threading.Thread(target=complete_stale)
    thread.start()
    wait_for(lambda: waits_on_a_lock(observer, stale_conn.info.backend_pid),
             message="the stale complete to wait for the claim's row lock")
    fresh_conn.commit()
    thread.join(timeout=30)
    assert isinstance(outcome["result"], LeaseLost)
    queries.complete(observer.cursor(), result_id, fresh.lease_token, 2, now=at(13))


def test_claim_skips_a_task_whose_completion_is_in_flight(connect):
    observer, claimer = connect(), connect()
    worker_conn = transactional(connect)
    result_id, task = enqueue_and_claim(observer)
    # The lease has expired, but the worker's complete holds the row: reclaim must skip it
    # (SKIP LOCKED), and the completion wins once it commits.
    queries.complete(worker_conn.cursor(), result_id, task.lease_token, 1, now=at(20))
    assert queries.claim(claimer.cursor(), "other", ["default"], 1, 10, now=at(30)) == []
    worker_conn.commit()
    assert queries.get_task_run(observer.cursor(), result_id).status == "SUCCESSFUL"
    assert queries.claim(claimer.cursor(), "other", ["default"], 1, 10, now=at(40)) == []


def test_rolled_back_claim_leaves_the_task_claimable(connect):
    observer = connect()
    claimer = transactional(connect)
    with observer.cursor() as cursor:
        result_id = queries.enqueue(cursor, "app.tasks.t", now=T0)
    queries.claim(claimer.cursor(), "w1", ["default"], 1, now=T0)
    assert queries.claim(observer.cursor(), "w2", ["default"], 1, now=T0) == []
    claimer.rollback()
    [task] = queries.claim(observer.cursor(), "w2", ["default"], 1, now=T0)
    assert task.result_id == result_id and task.attempts == 1
