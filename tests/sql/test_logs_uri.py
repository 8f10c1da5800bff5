"""reproq.set_logs_uri and reproq.set_logs_uris: fenced, per attempt."""

import uuid

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, LeaseLost, TaskNotFound
from tests.sql.helpers import T0, claim_one, enqueue, run, snapshot


def test_logs_uri_is_recorded_on_the_running_attempt(cur):
    result_id = enqueue(cur)
    task = claim_one(cur)
    queries.set_logs_uri(cur, result_id, task.lease_token, "file:///logs/1-1.log")
    assert run(cur, result_id).logs_uri == "file:///logs/1-1.log"


def test_batch_form_skips_tasks_whose_lease_was_lost(cur):
    first, second = enqueue(cur, [1]), enqueue(cur, [2])
    tasks = {t.result_id: t for t in queries.claim(cur, "w1", ["default"], 2, 60, T0)}
    accepted = queries.set_logs_uris(cur, [
        (first, tasks[first].lease_token, "file:///a.log"),
        (second, uuid.uuid4(), "file:///b.log"),
    ])
    assert accepted == {first}
    assert (run(cur, first).logs_uri, run(cur, second).logs_uri) == ("file:///a.log", None)


def test_single_form_raises_when_fenced_out_and_writes_nothing(cur):
    result_id = enqueue(cur)
    claim_one(cur)
    before = snapshot(cur)
    with pytest.raises(LeaseLost):
        queries.set_logs_uri(cur, result_id, uuid.uuid4(), "file:///x.log")
    with pytest.raises(TaskNotFound):
        queries.set_logs_uri(cur, 999_999, uuid.uuid4(), "file:///x.log")
    assert snapshot(cur) == before


def test_arrays_of_different_lengths_are_refused(cur):
    with pytest.raises(InvalidArgument, match="equally long"):
        queries._execute(cur, "select reproq.set_logs_uris(%s, %s, %s)",
                         ([1, 2], [uuid.uuid4()], ["a", "b"]))


def test_batch_form_refuses_a_repeated_id_and_writes_nothing(cur):
    first, second = enqueue(cur, [1]), enqueue(cur, [2])
    tasks = {t.result_id: t for t in queries.claim(cur, "w1", ["default"], 2, 60, T0)}
    before = snapshot(cur)
    with pytest.raises(InvalidArgument) as info:
        queries.set_logs_uris(cur, [
            (first, tasks[first].lease_token, "file:///a.log"),
            (second, tasks[second].lease_token, "file:///b.log"),
            (first, tasks[first].lease_token, "file:///c.log"),
        ])
    assert info.value.sqlstate == "RQ003"
    assert str(info.value) == f"p_result_ids must not repeat an id, got {first} more than once"
    assert snapshot(cur) == before
