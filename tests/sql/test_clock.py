"""Every function refuses a p_now whose times no client could read back (since 0009), and
writes nothing.

0008 checked p_now in the enqueue functions only. Before 0009, ``reproq.fail(...,
p_now => '-infinity')`` stored a retry due at once with run_after -infinity, which the runner
that claimed it could not decode; 'infinity' made retries never due and leases that never
expire. The functions other than enqueue take p_now up to 9998-12-30: they store times up to a
year later (the longest lease, the longest retry delay).
"""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from reproq_runner import errors, queries
from tests.sql.helpers import T0, claim_one, enqueue

BEYOND = ["-infinity", "infinity", "0001-01-01 12:00:00+00", "9999-01-01 00:00:00+00"]
LATEST = datetime(9998, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
A_YEAR = 31_536_000  # the longest lease and the longest retry delay, in seconds

# Each call takes the running task's id and lease token, and p_now, by name.
CALLS = {
    "claim": "select * from reproq.claim('w2', array['default'], 1, 60, %(now)s)",
    "heartbeat": "select reproq.heartbeat('w1', 60, %(now)s)",
    "heartbeat_held": "select reproq.heartbeat('w1', array[%(id)s]::bigint[], 60, %(now)s)",
    "complete": "select reproq.complete(%(id)s, %(token)s, 'null', %(now)s)",
    "complete_many": "select reproq.complete_many(array[%(id)s]::bigint[],"
                     " array[%(token)s]::uuid[], array['null'::jsonb], %(now)s)",
    "fail": "select reproq.fail(%(id)s, %(token)s, '{}', true, null, %(now)s)",
    "release": "select reproq.release(array[%(id)s]::bigint[], array[%(token)s]::uuid[],"
               " %(now)s)",
    "cancel": "select reproq.cancel(%(id)s, %(now)s)",
    "reclaim": "select reproq.reclaim(%(now)s)",
    "register_worker": "select reproq.register_worker('w9', 'host', 1, array['default'], 1,"
                       " 'v', %(now)s)",
    "pause_queue": "select reproq.pause_queue('default', %(now)s)",
    "resume_queue": "select reproq.resume_queue('default', %(now)s)",
}


def everything(cur) -> list:
    rows = []
    for table in ("task_runs", "workers", "queue_controls"):
        cur.execute(f"select t.* from reproq.{table} as t order by 1")
        rows.append(cur.fetchall())
    return rows


@pytest.fixture
def running(cur):
    enqueue(cur, [1])
    enqueue(cur, [2])  # READY, for claim
    queries.register_worker(cur, "w1", "host", 1, ["default"], 1, "v", T0)
    task = claim_one(cur)
    return {"id": task.result_id, "token": task.lease_token}


@pytest.mark.parametrize("value", BEYOND)
@pytest.mark.parametrize("call", CALLS)
def test_a_clock_outside_years_1_to_9998_is_refused_and_writes_nothing(cur, running, call,
                                                                          value):
    before = everything(cur)
    with pytest.raises(psycopg.Error) as info:
        cur.execute(CALLS[call], {**running, "now": value})
    assert info.value.sqlstate == "RQ003"
    assert isinstance(errors.translate(info.value), errors.InvalidArgument)
    assert info.value.diag.message_primary.startswith(
        "p_now must be from 0001-01-02 to 9998-12-30 (UTC), got ")
    assert everything(cur) == before


def test_times_a_year_past_the_latest_clock_are_read_back(cur):
    """The longest lease and the longest retry delay from the latest clock still decode."""
    enqueue(cur, [1], run_after=T0)
    task = claim_one(cur, now=LATEST, lease_seconds=A_YEAR)
    assert task.leased_until == LATEST + timedelta(seconds=A_YEAR)
    assert queries.heartbeat(cur, "w1", A_YEAR, LATEST, held=[task.result_id]) == []
    assert queries.fail(cur, task.result_id, task.lease_token, {}, retry_in_seconds=A_YEAR,
                        now=LATEST) == "READY"
    assert queries.get_task_run(cur, task.result_id).run_after == (
        LATEST + timedelta(seconds=A_YEAR))


def test_no_clock_means_the_servers(cur, running):
    cur.execute("select reproq._clock(null) = now()")
    assert cur.fetchone() == (True,)
    assert queries.cancel(cur, running["id"]) == "RUNNING"  # requested, for the next heartbeat
