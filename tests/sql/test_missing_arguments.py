"""A null argument is refused with RQ003 naming it, and the call writes nothing (since 0007).

Before 0007, fail(p_retry => null) retried, heartbeat(null, …) renewed nothing without a word,
a fenced call with a null id or token answered RQ004 or RQ005, register_worker / pause_queue /
resume_queue left the table to answer 23502, and backoff_seconds and spec_hash computed
something from nulls. Each function's other checks have tests of their own beside it.
"""

import re

import psycopg
import pytest

from reproq_runner import errors
from tests.sql.helpers import T0, claim_one, enqueue

EMPTY_SPEC = """'{{"args": [], "kwargs": {{}}}}'::jsonb"""  # braces doubled for format()

# (call with {id} and {token} of a claimed task, the message it must raise)
NULL_ARGUMENTS = [
    ("reproq.complete(null, {token})", "p_result_id must not be null"),
    ("reproq.complete({id}, null)", "p_lease_token must not be null"),
    ("reproq.fail(null, {token}, '{{}}')", "p_result_id must not be null"),
    ("reproq.fail({id}, null, '{{}}')", "p_lease_token must not be null"),
    ("reproq.fail({id}, {token}, '{{}}', p_retry => null)", "p_retry must be true or false"),
    ("reproq.save_metadata(null, {token}, '{{}}')", "p_result_id must not be null"),
    ("reproq.save_metadata({id}, null, '{{}}')", "p_lease_token must not be null"),
    ("reproq.set_logs_uri(null, {token}, 'file:///x')", "p_result_id must not be null"),
    ("reproq.set_logs_uri({id}, null, 'file:///x')", "p_lease_token must not be null"),
    ("reproq.cancel(null)", "p_result_id must not be null"),
    ("reproq.heartbeat(null, array[{id}]::bigint[])", "p_worker_id must be a non-empty string"),
    ("reproq.heartbeat('', array[{id}]::bigint[])", "p_worker_id must be a non-empty string"),
    ("reproq.register_worker(null, 'h', 1, '{{q}}', 1, 'v')",
     "p_worker_id must be a non-empty string"),
    ("reproq.register_worker('w', null, 1, '{{q}}', 1, 'v')", "p_hostname must not be null"),
    ("reproq.register_worker('w', 'h', null, '{{q}}', 1, 'v')",
     "p_pid must be a positive integer, got <NULL>"),
    ("reproq.register_worker('w', 'h', 1, null, 1, 'v')", "p_queues must be a one-dimensional"),
    ("reproq.register_worker('w', 'h', 1, '{{q}}', null, 'v')",
     "p_concurrency must be a positive integer, got <NULL>"),
    ("reproq.register_worker('w', 'h', 1, '{{q}}', 1, null)", "p_version must not be null"),
    ("reproq.pause_queue(null)", "p_queue_name must be a non-empty string"),
    ("reproq.resume_queue(null)", "p_queue_name must be a non-empty string"),
    ("reproq.backoff_seconds(null)", "p_attempt must not be null"),
    ("reproq.backoff_seconds(1, null)", "p_base_seconds must be from 0 to 31536000, got <NULL>"),
    ("reproq.backoff_seconds(1, 2, null)", "p_cap_seconds must be from 0 to 31536000, got <NULL>"),
    ("reproq.backoff_seconds(1, 'NaN')", "p_base_seconds must be from 0 to 31536000, got NaN"),
    ("reproq.backoff_seconds(1, 2, '-Infinity')",
     "p_cap_seconds must be from 0 to 31536000, got -Infinity"),
    (f"reproq.spec_hash(null, 'q', {EMPTY_SPEC})", "p_task_path, p_queue_name and p_spec must not"),
    (f"reproq.spec_hash('a.b', null, {EMPTY_SPEC})", "p_task_path, p_queue_name and p_spec must not"),
    ("reproq.spec_hash('a.b', 'q', null)", "p_task_path, p_queue_name and p_spec must not"),
]


def everything(cur) -> list:
    """Every row of every reproq table a call could write."""
    rows = []
    for table in ("task_runs", "workers", "queue_controls"):
        cur.execute(f"select to_jsonb(x) from reproq.{table} as x order by 1")
        rows.append(cur.fetchall())
    return rows


@pytest.mark.parametrize(("call", "message"), NULL_ARGUMENTS,
                         ids=[call.split("(")[0] + str(i) for i, (call, _) in
                              enumerate(NULL_ARGUMENTS)])
def test_a_null_argument_is_refused_with_rq003_and_nothing_written(cur, call, message):
    enqueue(cur)
    task = claim_one(cur)
    cur.execute("select reproq.register_worker('w1', 'h', 1, '{default}', 1, 'v', %s)", (T0,))
    before = everything(cur)
    sql = "select " + call.format(id=task.result_id, token=f"'{task.lease_token}'::uuid")
    with pytest.raises(psycopg.Error) as info:
        cur.execute(sql)
    assert info.value.sqlstate == "RQ003"
    assert re.match(re.escape(message), info.value.diag.message_primary)
    assert isinstance(errors.translate(info.value), errors.InvalidArgument)
    assert everything(cur) == before


def test_a_wrong_token_is_still_a_lost_lease_and_an_unknown_id_still_rq004(cur):
    """The null checks sit on the path a fenced call takes once it matched nothing: the
    answers for a real id with a stale token, and for an id no task has, are as before."""
    enqueue(cur)
    task = claim_one(cur)
    with pytest.raises(psycopg.Error) as info:
        cur.execute("select reproq.complete(%s, gen_random_uuid())", (task.result_id,))
    assert info.value.sqlstate == "RQ005"
    with pytest.raises(psycopg.Error) as info:
        cur.execute("select reproq.complete(%s, %s)", (task.result_id + 1000, task.lease_token))
    assert info.value.sqlstate == "RQ004"


def test_fail_with_p_retry_false_still_fails_for_good(cur):
    enqueue(cur)
    task = claim_one(cur)
    cur.execute("select reproq.fail(%s, %s, '{}', p_retry => false, p_now => %s)",
                (task.result_id, task.lease_token, T0))
    assert cur.fetchone()[0] == "FAILED"
