"""reproq.release: hand running tasks back without spending an attempt."""

import uuid

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument
from tests.sql.helpers import T0, at, claim_one, enqueue, run, snapshot


def test_release_restores_attempts_worker_ids_and_first_attempt_fields(cur):
    result_id = enqueue(cur, run_after=at(-5))
    before = run(cur, result_id)
    task = claim_one(cur, "w1", now=T0)
    assert queries.release(cur, [(result_id, task.lease_token)], now=at(3)) == {result_id}
    after = run(cur, result_id)
    assert after == before


def test_release_of_a_later_attempt_keeps_the_earlier_ones(cur):
    result_id = enqueue(cur)
    first = claim_one(cur, "w1", now=T0)
    queries.fail(cur, result_id, first.lease_token, {"m": "x"}, retry_in_seconds=0, now=at(1))
    second = claim_one(cur, "w2", now=at(2))
    queries.release(cur, [(result_id, second.lease_token)], now=at(3))
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.worker_ids, row.started_at) == (
        "READY", 1, ["w1"], T0)
    assert len(row.errors_json) == 1 and row.lease_token is None


def test_released_task_keeps_its_place_in_line(cur):
    first = enqueue(cur, [1])
    second = enqueue(cur, [2])
    task = claim_one(cur, now=T0)
    assert task.result_id == first
    queries.release(cur, [(first, task.lease_token)], now=at(1))
    assert [t.result_id for t in queries.claim(cur, "w", ["default"], 2, now=at(2))] == [
        first, second]


def test_only_matching_leases_are_released(cur):
    ids = [enqueue(cur, [i]) for i in range(2)]
    tasks = queries.claim(cur, "w", ["default"], 2, now=T0)
    released = queries.release(cur, [(tasks[0].result_id, tasks[0].lease_token),
                                     (tasks[1].result_id, uuid.uuid4())], now=at(1))
    assert released == {ids[0]}
    assert [r.status for r in queries.get_task_runs(cur, ids)] == ["READY", "RUNNING"]


def test_arrays_of_different_lengths_are_refused(cur):
    result_id = enqueue(cur)
    claim_one(cur)
    before = snapshot(cur)
    with pytest.raises(InvalidArgument, match="equally long"):
        queries._execute(cur, "select reproq.release(%s, %s)", ([result_id], []))
    assert snapshot(cur) == before


def test_a_repeated_pair_releases_the_task_once(cur):
    # release stores nothing per element, so unlike complete_many and set_logs_uris it needs
    # no refusal of repeated ids: the row is updated once, its attempt given back once.
    result_id = enqueue(cur)
    task = claim_one(cur, now=T0)
    pairs = [(result_id, task.lease_token), (result_id, uuid.uuid4()),
             (result_id, task.lease_token)]
    assert queries.release(cur, pairs, now=at(1)) == {result_id}
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.worker_ids) == ("READY", 0, [])


def test_release_notifies_the_queues_of_the_tasks_it_makes_ready(conn, connect):
    cur = conn.cursor()
    ready = enqueue(cur, [1], queue_name="q1")
    cancelled = enqueue(cur, [2], queue_name="q2")
    tasks = queries.claim(cur, "w1", ["q1", "q2"], 2, now=T0)
    queries.cancel(cur, cancelled, now=at(1))
    listener = connect()
    listener.execute("listen reproq")
    released = queries.release(cur, [(t.result_id, t.lease_token) for t in tasks], now=at(2))
    assert released == {ready, cancelled}
    assert [n.payload for n in listener.notifies(timeout=0.5)] == ["q1"]
    assert [run(cur, ready).status, run(cur, cancelled).status] == ["READY", "CANCELLED"]
