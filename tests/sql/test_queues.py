"""reproq.pause_queue and reproq.resume_queue: claim skips paused queues."""

import psycopg
import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument
from tests.sql.helpers import T0, at, enqueue


def controls(cur):
    cur.execute("select queue_name, paused, updated_at from reproq.queue_controls order by 1")
    return cur.fetchall()


def test_paused_queue_is_skipped_and_still_accepts_tasks(cur):
    queries.pause_queue(cur, "emails", now=T0)
    paused = enqueue(cur, queue_name="emails")
    active = enqueue(cur, queue_name="default")
    claimed = queries.claim(cur, "w", ["emails", "default"], 10, now=at(1))
    assert [t.result_id for t in claimed] == [active]
    assert queries.claim(cur, "w", ["emails"], 10, now=at(1)) == []
    queries.resume_queue(cur, "emails", now=at(2))
    assert [t.result_id for t in queries.claim(cur, "w", ["emails"], 10, now=at(3))] == [paused]


def test_running_tasks_of_a_paused_queue_can_finish(cur):
    result_id = enqueue(cur, queue_name="q")
    [task] = queries.claim(cur, "w", ["q"], 1, now=T0)
    queries.pause_queue(cur, "q", now=at(1))
    queries.complete(cur, result_id, task.lease_token, 1, now=at(2))


def test_pause_and_resume_upsert_one_row_per_queue(cur):
    queries.pause_queue(cur, "q", now=T0)
    queries.pause_queue(cur, "q", now=at(1))
    assert controls(cur) == [("q", True, at(1))]
    queries.resume_queue(cur, "q", now=at(2))
    queries.resume_queue(cur, "never-paused", now=at(3))
    assert controls(cur) == [("never-paused", False, at(3)), ("q", False, at(2))]


@pytest.mark.parametrize("name", ["", None])
@pytest.mark.parametrize("switch", [queries.pause_queue, queries.resume_queue])
def test_a_missing_or_empty_queue_name_is_refused_with_rq003(cur, switch, name):
    """Since 0007 (before, the table refused "" with 23514 and null with 23502)."""
    with pytest.raises(InvalidArgument, match="p_queue_name must be a non-empty string"):
        switch(cur, name)
    assert controls(cur) == []


def test_the_table_keeps_its_constraint_for_direct_writes(cur):
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        cur.execute("insert into reproq.queue_controls (queue_name, updated_at) values ('', now())")
    assert info.value.diag.constraint_name == "queue_controls_queue_name_not_empty"
