"""reproq.heartbeat: extends one worker's leases, reports cancellations, marks it seen."""

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument
from tests.sql.helpers import T0, at, enqueue, run, snapshot


def register(cur, worker_id):
    queries.register_worker(cur, worker_id, "host", 123, ["default"], 4, "1.0", now=T0)


def test_heartbeat_extends_only_this_workers_leases(cur):
    mine, theirs = enqueue(cur, [1]), enqueue(cur, [2])
    queries.claim(cur, "w1", ["default"], 1, 10, now=T0)
    queries.claim(cur, "w2", ["default"], 1, 10, now=T0)
    assert queries.heartbeat(cur, "w1", 30, now=at(8)) == []
    assert run(cur, mine).leased_until == at(38)
    assert run(cur, theirs).leased_until == at(10)
    assert queries.reclaim(cur, now=at(20)) == 1
    assert (run(cur, mine).status, run(cur, theirs).status) == ("RUNNING", "READY")


def test_heartbeat_returns_the_tasks_whose_cancellation_was_requested(cur):
    ids = [enqueue(cur, [i]) for i in range(3)]
    queries.claim(cur, "w1", ["default"], 3, now=T0)
    queries.cancel(cur, ids[1], now=at(1))
    assert queries.heartbeat(cur, "w1", now=at(2)) == [ids[1]]


def test_heartbeat_marks_the_worker_seen(cur):
    register(cur, "w1")
    queries.heartbeat(cur, "w1", now=at(90))
    cur.execute("select started_at, last_seen_at from reproq.workers where worker_id = 'w1'")
    assert cur.fetchone() == (T0, at(90))


def test_heartbeat_does_not_revive_a_reclaimed_task(cur):
    result_id = enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, 10, now=T0)
    queries.reclaim(cur, now=at(11))
    assert queries.heartbeat(cur, "w1", now=at(12)) == []
    row = run(cur, result_id)
    assert (row.status, row.leased_until) == ("READY", None)


@pytest.mark.parametrize("lease_seconds", [0, -5, None, 31536001])
def test_bad_lease_length_is_refused_and_nothing_written(cur, lease_seconds):
    register(cur, "w1")
    enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, now=T0)
    before = snapshot(cur)
    with pytest.raises(InvalidArgument, match="p_lease_seconds"):
        queries.heartbeat(cur, "w1", lease_seconds, now=at(5))
    assert snapshot(cur) == before
    cur.execute("select last_seen_at from reproq.workers")
    assert cur.fetchone()[0] == T0
