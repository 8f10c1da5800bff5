"""reproq.heartbeat: renews one worker's spent leases, reports cancellations, marks it seen."""

import psycopg
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


def lease_row(cur, result_id):
    """(xmin, leased_until): xmin changes whenever anything writes the row."""
    cur.execute("select xmin::text, leased_until from reproq.task_runs where result_id = %s",
                (result_id,))
    return cur.fetchone()


def test_a_fresh_lease_is_left_as_it_is_until_a_quarter_of_it_is_spent(cur):
    result_id = enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, 60, now=T0)
    claimed = lease_row(cur, result_id)
    # A 60 s lease is renewed once 10 s of it are spent (a quarter, at most 10 s).
    for seconds in (0, 1, 5, 9.999):
        assert queries.heartbeat(cur, "w1", 60, now=at(seconds)) == []
        assert lease_row(cur, result_id) == claimed
    queries.heartbeat(cur, "w1", 60, now=at(10))
    renewed = lease_row(cur, result_id)
    assert renewed[1] == at(70) and renewed[0] != claimed[0]
    queries.heartbeat(cur, "w1", 60, now=at(11))
    assert lease_row(cur, result_id) == renewed


@pytest.mark.parametrize(("lease_seconds", "fresh_until"), [(4, 1), (1, 0.25), (120, 10)])
def test_a_lease_is_renewed_after_a_quarter_of_it_at_most_10_seconds(cur, lease_seconds,
                                                                      fresh_until):
    result_id = enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, lease_seconds, now=T0)
    claimed = lease_row(cur, result_id)
    queries.heartbeat(cur, "w1", lease_seconds, now=at(fresh_until - 0.001))
    assert lease_row(cur, result_id) == claimed
    queries.heartbeat(cur, "w1", lease_seconds, now=at(fresh_until))
    assert lease_row(cur, result_id)[1] == at(fresh_until + lease_seconds)


def test_a_lease_longer_than_the_heartbeats_is_not_shortened(cur):
    result_id = enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, 3600, now=T0)
    queries.heartbeat(cur, "w1", 60, now=at(30))
    assert run(cur, result_id).leased_until == at(3600)


def test_a_cancellation_is_reported_whether_the_lease_is_renewed_or_not(cur):
    spent, fresh, quiet = enqueue(cur, [1]), enqueue(cur, [2]), enqueue(cur, [3])
    queries.claim(cur, "w1", ["default"], 1, 10, now=T0)      # at(9): 9 s of 10 spent
    queries.claim(cur, "w1", ["default"], 1, 60, now=at(8))   # at(9): 1 s of 60 spent
    queries.claim(cur, "w2", ["default"], 1, 60, now=T0)
    assert {run(cur, i).leased_until for i in (fresh, spent)} == {at(68), at(10)}
    for result_id in (fresh, spent):
        queries.cancel(cur, result_id, now=at(8.5))
    untouched = lease_row(cur, fresh)
    assert sorted(queries.heartbeat(cur, "w1", 60, now=at(9))) == sorted([fresh, spent])
    assert lease_row(cur, fresh) == untouched
    assert run(cur, spent).leased_until == at(69)
    assert run(cur, quiet).leased_until == at(60)


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


# -- the form with the ids the runner holds (0006) -------------------------------------------

def test_the_held_form_renews_only_the_listed_leases(cur):
    """A task leased to the worker that the runner does not list (a claim whose reply was lost)
    is not renewed: its lease runs out and reclaim makes it READY again."""
    held, lost, theirs = enqueue(cur, [1]), enqueue(cur, [2]), enqueue(cur, [3])
    queries.claim(cur, "w1", ["default"], 2, 10, now=T0)
    queries.claim(cur, "w2", ["default"], 1, 10, now=T0)
    assert queries.heartbeat(cur, "w1", 30, now=at(8), held=[held, theirs]) == []
    assert run(cur, held).leased_until == at(38)
    assert run(cur, lost).leased_until == at(10)
    assert run(cur, theirs).leased_until == at(10)  # listed, but not this worker's
    assert queries.reclaim(cur, now=at(20)) == 2
    assert [run(cur, i).status for i in (held, lost, theirs)] == ["RUNNING", "READY", "READY"]


def test_the_held_form_keeps_the_quarter_rule_and_reports_every_cancellation(cur):
    listed, unlisted = enqueue(cur, [1]), enqueue(cur, [2])
    queries.claim(cur, "w1", ["default"], 2, 60, now=T0)
    for result_id in (listed, unlisted):
        queries.cancel(cur, result_id, now=at(1))
    fresh = lease_row(cur, listed)
    assert sorted(queries.heartbeat(cur, "w1", 60, now=at(5), held=[listed])) == sorted(
        [listed, unlisted])
    assert lease_row(cur, listed) == fresh  # 5 s of 60 spent: left as it is
    queries.heartbeat(cur, "w1", 60, now=at(10), held=[listed])
    assert run(cur, listed).leased_until == at(70)


def test_the_held_form_with_nothing_held_marks_the_worker_seen(cur):
    register(cur, "w1")
    result_id = enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, 10, now=T0)
    assert queries.heartbeat(cur, "w1", 10, now=at(9), held=[]) == []
    assert run(cur, result_id).leased_until == at(10)
    cur.execute("select last_seen_at from reproq.workers where worker_id = 'w1'")
    assert cur.fetchone()[0] == at(9)


def test_the_held_form_refuses_a_missing_list_and_writes_nothing(cur):
    register(cur, "w1")
    enqueue(cur)
    queries.claim(cur, "w1", ["default"], 1, now=T0)
    before = snapshot(cur)
    with pytest.raises(psycopg.Error, match="p_result_ids must be an array") as refused:
        cur.execute("select reproq.heartbeat('w1', null::bigint[], 60, %s)", (at(30),))
    assert refused.value.sqlstate == "RQ003"
    assert snapshot(cur) == before
    cur.execute("select last_seen_at from reproq.workers")
    assert cur.fetchone()[0] == T0


def test_the_held_form_passes_over_a_row_another_transaction_holds_locked(cur, connect):
    """Since 0008: a held row locked by another transaction (an uncommitted cancel() in a web
    request, say) is renewed by a later call instead of stopping this one until that
    transaction ends; the runner calls heartbeat from the loop that supervises its children."""
    locked, free = enqueue(cur, [1]), enqueue(cur, [2])
    queries.claim(cur, "w1", ["default"], 2, 60, now=T0)
    other = connect()
    other.execute("begin")
    other.execute("select 1 from reproq.task_runs where result_id = %s for update", (locked,))
    try:
        cur.execute("set statement_timeout = '10s'")  # a regression fails, it does not hang
        assert queries.heartbeat(cur, "w1", 60, now=at(30), held=[locked, free]) == []
        assert (run(cur, locked).leased_until, run(cur, free).leased_until) == (at(60), at(90))
    finally:
        other.execute("rollback")
    assert queries.heartbeat(cur, "w1", 60, now=at(31), held=[locked, free]) == []
    assert (run(cur, locked).leased_until, run(cur, free).leased_until) == (at(91), at(90))
