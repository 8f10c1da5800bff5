"""Schema-wide rules: comments, pinned search_path, injectable clock, named constraints."""

import psycopg
import pytest

from reproq_runner import queries

FUNCTIONS = """
    select p.oid::regprocedure::text, p.proconfig, p.proargnames, p.prosrc
    from pg_proc as p
    join pg_namespace as n on n.oid = p.pronamespace
    where n.nspname = 'reproq'
    order by 1
"""


def reproq_functions(cur):
    cur.execute(FUNCTIONS)
    return cur.fetchall()


def test_the_expected_functions_exist(cur):
    names = {signature.split("(")[0] for signature, *_ in reproq_functions(cur)}
    assert {f"reproq.{name}" for name in (
        "spec_hash", "backoff_seconds", "enqueue", "enqueue_many", "reclaim", "claim",
        "complete", "complete_many", "fail", "release", "cancel", "heartbeat", "save_metadata",
        "set_logs_uri", "register_worker", "unregister_worker", "pause_queue", "resume_queue",
    )} <= names


def test_every_function_has_a_comment(cur):
    assert queries.reproq_functions_without_comment(cur) == []


def test_every_table_type_and_index_has_a_comment_where_readers_need_one(cur):
    cur.execute("""
        select c.oid::regclass::text from pg_class as c
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = 'reproq' and c.relkind in ('r', 'c')
          and obj_description(c.oid, 'pg_class') is null
          and (c.relkind = 'r' or not exists (
              select from pg_type as t where t.typrelid = c.oid and t.typtype = 'c'
              and obj_description(t.oid, 'pg_type') is not null))
    """)
    assert cur.fetchall() == []


def test_every_function_pins_its_search_path(cur):
    unpinned = [signature for signature, config, *_ in reproq_functions(cur)
                if "search_path=pg_catalog, pg_temp" not in (config or [])]
    assert unpinned == []


def test_every_function_that_reads_the_clock_takes_p_now(cur):
    clockless = [signature for signature, _, argnames, source in reproq_functions(cur)
                 if "now()" in source and "p_now" not in (argnames or [])]
    assert clockless == []


def test_every_function_uses_p_prefixed_parameters(cur):
    bad = [(signature, name) for signature, _, argnames, _ in reproq_functions(cur)
           for name in argnames or [] if not name.startswith("p_")]
    assert bad == []


BASE_ROW = {
    "queue_name": "'default'",
    "priority": "0",
    "run_after": "now()",
    "task_path": "'app.tasks.t'",
    "spec_json": """'{"args": [], "kwargs": {}}'""",
    "spec_hash": "sha256('x')",
    "enqueued_at": "now()",
}

BAD_ROWS = [
    ({"status": "'DONE'"}, "task_runs_status_known"),
    ({"priority": "101"}, "task_runs_priority_range"),
    ({"priority": "-101"}, "task_runs_priority_range"),
    ({"task_path": "''"}, "task_runs_task_path_not_empty"),
    ({"queue_name": "''"}, "task_runs_queue_name_not_empty"),
    ({"spec_json": """'{"args": {}, "kwargs": {}}'"""}, "task_runs_spec_envelope"),
    ({"spec_json": """'{"args": []}'"""}, "task_runs_spec_envelope"),
    ({"spec_json": """'{"args": [], "kwargs": {}, "x": 1}'"""}, "task_runs_spec_envelope"),
    ({"spec_json": "'[]'"}, "task_runs_spec_envelope"),
    ({"spec_hash": "'\\x00'::bytea"}, "task_runs_spec_hash_is_sha256"),
    ({"attempts": "-1"}, "task_runs_attempts_not_negative"),
    ({"max_attempts": "0"}, "task_runs_max_attempts_positive"),
    ({"attempts": "4", "worker_ids": "'{a,b,c,d}'"}, "task_runs_attempts_within_max"),
    ({"attempts": "1"}, "task_runs_worker_per_attempt"),
    ({"timeout_seconds": "0"}, "task_runs_timeout_positive"),
    ({"concurrency_limit": "0", "concurrency_key": "'k'"},
     "task_runs_concurrency_limit_positive"),
    ({"concurrency_limit": "2"}, "task_runs_concurrency_limit_needs_key"),
    ({"errors_json": "'{}'"}, "task_runs_errors_is_array"),
    ({"metadata_json": "'[]'"}, "task_runs_metadata_is_object"),
    ({"status": "'RUNNING'"}, "task_runs_lease_iff_running"),
    ({"leased_by": "'w'", "leased_until": "now()", "lease_token": "gen_random_uuid()"},
     "task_runs_lease_iff_running"),
    ({"lease_token": "gen_random_uuid()"}, "task_runs_lease_only_while_running"),
    ({"status": "'FAILED'", "finished_at": "now()", "lease_token": "gen_random_uuid()"},
     "task_runs_lease_only_while_running"),
    ({"status": "'SUCCESSFUL'"}, "task_runs_finished_iff_terminal"),
    ({"finished_at": "now()"}, "task_runs_finished_iff_terminal"),
    ({"return_json": "'1'"}, "task_runs_return_only_when_successful"),
]


@pytest.mark.parametrize(("overrides", "constraint"), BAD_ROWS,
                         ids=[f"{c}-{i}" for i, (_, c) in enumerate(BAD_ROWS)])
def test_named_constraints_reject_direct_bad_rows(cur, overrides, constraint):
    row = {**BASE_ROW, **overrides}
    sql = (f"insert into reproq.task_runs ({', '.join(row)})"
           f" values ({', '.join(row.values())})")
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        cur.execute(sql)
    assert info.value.diag.constraint_name == constraint
    cur.execute("select count(*) from reproq.task_runs")
    assert cur.fetchone()[0] == 0


def test_the_base_row_of_those_tests_is_valid(cur):
    cur.execute(f"insert into reproq.task_runs ({', '.join(BASE_ROW)})"
                f" values ({', '.join(BASE_ROW.values())})")


def test_every_check_constraint_has_a_rejection_test(cur):
    cur.execute("""select conname from pg_constraint
                   where conrelid = 'reproq.task_runs'::regclass and contype = 'c'""")
    assert {name for (name,) in cur.fetchall()} == {constraint for _, constraint in BAD_ROWS}


def test_claim_index_covers_the_claim_order(cur):
    cur.execute("select pg_get_indexdef('reproq.task_runs_claim_idx'::regclass)")
    definition = cur.fetchone()[0]
    assert "(queue_name, priority DESC, run_after, result_id)" in definition
    assert "WHERE (status = 'READY'::text)" in definition
