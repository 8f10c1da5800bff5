"""reproq.complete and reproq.complete_many: success, return values, fencing."""

import uuid

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, LeaseLost, TaskNotFound
from tests.sql.helpers import T0, at, claim_one, enqueue, run, snapshot


def test_complete_records_success_and_ends_the_lease(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    queries.complete(cur, result_id, task.lease_token, {"sent": [1, 2]}, now=at(7))
    row = run(cur, result_id)
    assert (row.status, row.return_json, row.finished_at) == ("SUCCESSFUL", {"sent": [1, 2]}, at(7))
    assert (row.leased_by, row.leased_until, row.lease_token) == (None, None, None)
    assert (row.attempts, row.worker_ids) == (1, ["w1"])


def test_a_json_null_return_value_is_kept(cur):
    result_id = enqueue(cur)
    queries.complete(cur, result_id, claim_one(cur).lease_token, None, now=at(1))
    cur.execute("select return_json = 'null'::jsonb from reproq.task_runs where result_id = %s",
                (result_id,))
    assert cur.fetchone()[0] is True


@pytest.mark.parametrize("value", ["fresh", "", 0, False, [None], {"k": "v"}])
def test_return_values_of_every_json_type_read_back_equal(cur, value):
    result_id = enqueue(cur)
    queries.complete(cur, result_id, claim_one(cur).lease_token, value, now=at(1))
    assert run(cur, result_id).return_json == value


def test_second_completion_is_refused(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    queries.complete(cur, result_id, task.lease_token, 1, now=at(1))
    before = snapshot(cur)
    with pytest.raises(LeaseLost, match="status now SUCCESSFUL"):
        queries.complete(cur, result_id, task.lease_token, 2, now=at(2))
    assert snapshot(cur) == before


def test_wrong_token_is_refused_and_nothing_written(cur):
    result_id = enqueue(cur)
    claim_one(cur)
    before = snapshot(cur)
    with pytest.raises(LeaseLost) as info:
        queries.complete(cur, result_id, uuid.uuid4(), 1)
    assert info.value.sqlstate == "RQ005"
    assert snapshot(cur) == before


def test_stale_worker_is_fenced_out_after_reclaim_and_reclaim_by_another(cur):
    result_id = enqueue(cur)
    stale = claim_one(cur, "w1", now=T0, lease_seconds=10)
    fresh = claim_one(cur, "w2", now=at(11))  # lazy reclaim, then the same task again
    assert fresh.result_id == result_id and fresh.attempts == 2
    with pytest.raises(LeaseLost):
        queries.complete(cur, result_id, stale.lease_token, ["stale"], now=at(12))
    queries.complete(cur, result_id, fresh.lease_token, ["fresh"], now=at(13))
    assert run(cur, result_id).return_json == ["fresh"]


def test_an_expired_lease_that_nobody_reclaimed_still_completes(cur):
    result_id = enqueue(cur)
    task = claim_one(cur, now=T0, lease_seconds=10)
    queries.complete(cur, result_id, task.lease_token, 1, now=at(3600))
    assert run(cur, result_id).status == "SUCCESSFUL"


def test_unknown_task_is_refused(cur):
    with pytest.raises(TaskNotFound, match="task 999 does not exist"):
        queries.complete(cur, 999, uuid.uuid4(), 1)


def test_complete_many_returns_the_accepted_ids_and_skips_lost_leases(cur):
    ids = [enqueue(cur, [i]) for i in range(3)]
    tasks = queries.claim(cur, "w", ["default"], 3, now=T0)
    outcomes = [(t.result_id, t.lease_token, queries.dumps_json(t.args[0] * 10)) for t in tasks]
    outcomes[1] = (outcomes[1][0], uuid.uuid4(), outcomes[1][2])
    outcomes.append((424242, uuid.uuid4(), "1"))
    assert queries.complete_many(cur, outcomes, now=at(5)) == {ids[0], ids[2]}
    rows = queries.get_task_runs(cur, ids)
    assert [(r.status, r.return_json) for r in rows] == [
        ("SUCCESSFUL", 0), ("RUNNING", None), ("SUCCESSFUL", 20)]


def test_complete_many_refuses_arrays_of_different_lengths(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    before = snapshot(cur)
    with pytest.raises(InvalidArgument, match="equally long"):
        queries._execute(cur, "select reproq.complete_many(%s, %s, %s::jsonb[])",
                         ([result_id], [task.lease_token, task.lease_token], ["1"]))
    assert snapshot(cur) == before


@pytest.mark.parametrize("case", ["other value", "one token wrong", "same outcome twice",
                                  "first repeat named"])
def test_complete_many_refuses_a_repeated_id_and_writes_nothing(cur, case):
    ids = [enqueue(cur, [i]) for i in range(3)]
    tasks = queries.claim(cur, "w", ["default"], 3, now=T0)
    first, second, third = [(t.result_id, t.lease_token, queries.dumps_json(t.result_id))
                            for t in tasks]
    outcomes, repeated = {
        "other value": ([first, second, third, (ids[1], tasks[1].lease_token, '"again"')],
                        ids[1]),
        "one token wrong": ([third, (ids[2], uuid.uuid4(), '"stale"'), first], ids[2]),
        "same outcome twice": ([first, first], ids[0]),
        "first repeat named": ([third, second, first, second, third], ids[2]),
    }[case]
    before = snapshot(cur)
    with pytest.raises(InvalidArgument) as info:
        queries.complete_many(cur, outcomes, now=at(5))
    assert info.value.sqlstate == "RQ003"
    assert str(info.value) == f"p_result_ids must not repeat an id, got {repeated} more than once"
    assert snapshot(cur) == before
    assert queries.complete_many(cur, [first, second, third], now=at(6)) == set(ids)
