"""reproq.register_worker and reproq.unregister_worker."""

import re

import psycopg
import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument
from tests.sql.helpers import T0, at


def workers(cur):
    cur.execute("select worker_id, hostname, pid, queues, concurrency, version, started_at,"
                " last_seen_at from reproq.workers order by worker_id")
    return cur.fetchall()


def test_register_records_the_worker(cur):
    queries.register_worker(cur, "w1", "host-a", 42, ["default", "emails"], 8, "0.1.0", now=T0)
    assert workers(cur) == [("w1", "host-a", 42, ["default", "emails"], 8, "0.1.0", T0, T0)]


def test_registering_again_refreshes_the_row(cur):
    queries.register_worker(cur, "w1", "host-a", 42, ["default"], 8, "0.1.0", now=T0)
    queries.register_worker(cur, "w1", "host-b", 43, ["q"], 2, "0.2.0", now=at(60))
    assert workers(cur) == [("w1", "host-b", 43, ["q"], 2, "0.2.0", at(60), at(60))]


def test_unregister_removes_only_that_worker(cur):
    for worker_id in ("w1", "w2"):
        queries.register_worker(cur, worker_id, "h", 1, ["default"], 1, "v", now=T0)
    queries.unregister_worker(cur, "w1")
    queries.unregister_worker(cur, "unknown")
    assert [row[0] for row in workers(cur)] == ["w2"]


@pytest.mark.parametrize(("args", "message"), [
    (("", "h", 1, ["default"], 1, "v"), "p_worker_id must be a non-empty string"),
    (("w", "h", 0, ["default"], 1, "v"), "p_pid must be a positive integer, got 0"),
    (("w", "h", 1, [], 1, "v"), "p_queues must be a one-dimensional array naming at least"),
    (("w", "h", 1, ["default", None], 1, "v"), "p_queues must be a one-dimensional array"),
    (("w", "h", 1, [["a"], ["b"]], 1, "v"), "p_queues must be a one-dimensional array"),
    (("w", "h", 1, ["default"], 0, "v"), "p_concurrency must be a positive integer, got 0"),
])
def test_bad_worker_rows_are_refused_with_rq003(cur, args, message):
    """Since 0007 the function refuses them itself (before, the table's constraints refused the
    empty id, the pid and the concurrency with 23514, and the queue lists were stored)."""
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        queries.register_worker(cur, *args)
    assert workers(cur) == []


@pytest.mark.parametrize("constraint", ["workers_worker_id_not_empty", "workers_pid_positive",
                                        "workers_concurrency_positive"])
def test_the_table_keeps_its_constraints_for_direct_writes(cur, constraint):
    row = {"workers_worker_id_not_empty": ("", 1, 1), "workers_pid_positive": ("w", 0, 1),
           "workers_concurrency_positive": ("w", 1, 0)}[constraint]
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        cur.execute("insert into reproq.workers (worker_id, hostname, pid, queues, concurrency,"
                    " version, started_at, last_seen_at)"
                    " values (%s, 'h', %s, '{default}', %s, 'v', now(), now())", row)
    assert info.value.diag.constraint_name == constraint
