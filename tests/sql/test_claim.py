"""reproq.claim: order, due-ness, lease fields, limits, queues, bad input."""

from datetime import timedelta

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument
from tests.sql.helpers import T0, at, claim_one, count_rows, enqueue, run, snapshot


def test_claim_sets_the_lease_and_the_first_attempt(cur):
    result_id = enqueue(cur, [1], {"k": "v"}, metadata={"m": 1})
    task = claim_one(cur, "w1", now=at(5), lease_seconds=30)
    assert (task.result_id, task.task_path, task.args, task.kwargs) == (
        result_id, "app.tasks.t", [1], {"k": "v"})
    assert (task.attempts, task.max_attempts, task.timeout_seconds) == (1, 3, 900)
    assert task.leased_until == at(35) and task.started_at == at(5)
    assert task.metadata_json == {"m": 1} and task.enqueued_at == T0
    row = run(cur, result_id)
    assert (row.status, row.attempts, row.worker_ids, row.leased_by) == (
        "RUNNING", 1, ["w1"], "w1")
    assert row.lease_token == task.lease_token and row.last_attempted_at == at(5)


def test_later_attempts_keep_started_at_and_append_the_worker(cur):
    result_id = enqueue(cur)
    first = claim_one(cur, "w1", now=T0)
    queries.fail(cur, result_id, first.lease_token, {"message": "boom"}, retry_in_seconds=0,
                 now=at(1))
    second = claim_one(cur, "w2", now=at(2))
    assert second.attempts == 2 and second.started_at == T0
    assert second.lease_token != first.lease_token
    row = run(cur, result_id)
    assert row.worker_ids == ["w1", "w2"] and row.last_attempted_at == at(2)


def test_priority_descending_then_fifo(cur):
    low = enqueue(cur, [1], priority=-5)
    late_high = enqueue(cur, [2], priority=10, run_after=at(-10))
    early_high = enqueue(cur, [3], priority=10, run_after=at(-20))
    mid_a = enqueue(cur, [4])
    mid_b = enqueue(cur, [5])
    claimed = queries.claim(cur, "w", ["default"], 10, now=T0)
    assert [t.result_id for t in claimed] == [early_high, late_high, mid_a, mid_b, low]


def test_only_due_tasks_are_claimed(cur):
    later = enqueue(cur, run_after=at(60))
    assert queries.claim(cur, "w", ["default"], 10, now=at(59)) == []
    assert [t.result_id for t in queries.claim(cur, "w", ["default"], 10, now=at(60))] == [later]


def test_future_high_priority_tasks_do_not_hide_due_ones(cur):
    for i in range(20):
        enqueue(cur, [i], priority=50, run_after=at(3600))
    due = enqueue(cur, ["due"], priority=-50)
    assert [t.result_id for t in queries.claim(cur, "w", ["default"], 5, now=T0)] == [due]


def test_limit_is_respected_across_priority_levels(cur):
    ids = [enqueue(cur, [i], priority=p) for i, p in enumerate([3, 3, 2, 2, 1, 1])]
    first = queries.claim(cur, "w", ["default"], 3, now=T0)
    second = queries.claim(cur, "w", ["default"], 3, now=T0)
    assert [t.result_id for t in first] == ids[:3]
    assert [t.result_id for t in second] == ids[3:]
    assert queries.claim(cur, "w", ["default"], 3, now=T0) == []


def test_claims_only_from_the_named_queues_merging_their_order(cur):
    a1 = enqueue(cur, [1], queue_name="a", run_after=at(-3))
    b1 = enqueue(cur, [2], queue_name="b", run_after=at(-2))
    a2 = enqueue(cur, [3], queue_name="a", run_after=at(-1))
    other = enqueue(cur, [4], queue_name="c")
    claimed = queries.claim(cur, "w", ["a", "b", "a"], 10, now=T0)
    assert [t.result_id for t in claimed] == [a1, b1, a2]
    assert run(cur, other).status == "READY"


def test_each_task_is_claimed_once(cur):
    for i in range(5):
        enqueue(cur, [i])
    first = queries.claim(cur, "w1", ["default"], 3, now=T0)
    second = queries.claim(cur, "w2", ["default"], 3, now=T0)
    assert len(first) == 3 and len(second) == 2
    assert not {t.result_id for t in first} & {t.result_id for t in second}
    assert count_rows(cur, "status = 'RUNNING'") == 5


@pytest.mark.parametrize("status", ["SUCCESSFUL", "FAILED", "CANCELLED", "WAITING"])
def test_tasks_that_are_not_ready_are_not_claimed(cur, status):
    result_id = enqueue(cur)
    finished = "null" if status == "WAITING" else "now()"
    cur.execute(f"update reproq.task_runs set status = %s, finished_at = {finished}"
                " where result_id = %s", (status, result_id))
    assert queries.claim(cur, "w", ["default"], 10, now=at(1)) == []


def test_lease_length_comes_from_the_injected_clock(cur):
    enqueue(cur)
    task = claim_one(cur, now=at(100), lease_seconds=3600)
    assert task.leased_until == at(100) + timedelta(hours=1)


@pytest.mark.parametrize(("args", "match"), [
    (("", ["default"], 1, 60), "p_worker_id"),
    ((None, ["default"], 1, 60), "p_worker_id"),
    (("w", [], 1, 60), "p_queues"),
    (("w", None, 1, 60), "p_queues"),
    (("w", ["default"], 0, 60), "p_limit"),
    (("w", ["default"], 10001, 60), "p_limit"),
    (("w", ["default"], None, 60), "p_limit"),
    (("w", ["default"], 1, 0), "p_lease_seconds"),
    (("w", ["default"], 1, None), "p_lease_seconds"),
])
def test_bad_input_is_refused_and_nothing_is_claimed(cur, args, match):
    enqueue(cur)
    before = snapshot(cur)
    with pytest.raises(InvalidArgument, match=match) as info:
        queries._execute(cur, "select * from reproq.claim(%s, %s, %s, %s, %s)", (*args, T0))
    assert info.value.sqlstate == "RQ003"
    assert snapshot(cur) == before
