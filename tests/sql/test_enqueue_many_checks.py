"""reproq.enqueue_many's one-pass check against the validation it short-cuts (0003).

enqueue_many accepts a batch after one pass of inline checks and runs the two diagnosing passes
of 0002 (JSON shape, then reproq._task_problem) only when that pass finds an invalid item. So
the inline pass must refuse exactly what those passes refuse. The reference here is those two
passes, taken verbatim from the shipped (never edited) 0002 file; every candidate item is sent
after a valid one, and the call must fail with the reference's SQLSTATE and message, or succeed
when the reference finds nothing.
"""

import json
import re

import psycopg
import pytest

from reproq_runner import migrate, queries

OK = {"task_path": "app.tasks.t", "spec": {"args": [], "kwargs": {}}}

VARIANTS = {
    "task_path": ["a.b", "_a._b9.c", "a", "", "1a.b", "a.b.", "a..b", "a.b; drop", "é.b", 1, 1.5,
                  True, None, {"a": 1}, ["a.b"], "a.b\n"],
    "spec": [{"args": [1, "x"], "kwargs": {"k": None}}, {"args": {}, "kwargs": {}},
             {"args": []}, {"kwargs": {}}, {"args": [], "kwargs": []},
             {"args": [], "kwargs": {}, "x": 1}, [], "s", None, 1, {"args": None, "kwargs": {}}],
    "queue_name": ["q", "", "x" * 200, "x" * 201, "é" * 200, 1, True, None, {}, []],
    "priority": [0, 100, -100, 101, -101, 1.5, 1.0, "1", None, 1e3, True, []],
    "max_attempts": [1, 1000, 0, 1001, 2.5, "3", None, False],
    "timeout_seconds": [1, 31536000, 0, 31536001, 1.5, "9", None, -1],
    "lock_key": ["k", "", 1, None, {}],
    "concurrency_key": ["k", "", 5, None, []],
    "concurrency_limit": [1, 1000000, 0, 1000001, 1.5, "1", None, -3],
    "run_after": ["2030-01-01T00:00:00Z", "2030-01-01 00:00+02:00", "2030-01-01T00:00:00.5-0130",
                  "2030-01-01T00:00:00", "garbage", 5, None, True],
    "expires_at": ["2030-01-01T00:00:00+00", "2030-01-01", 7, None],
    "metadata": [{}, {"a": [1]}, [], "x", None, 1],
    "dedup": [True, False, "true", 1, None],
    "queue": ["x"],
    "other": [1, None],
}


def candidates():
    for field, values in VARIANTS.items():
        for value in values:
            yield {**OK, field: value}
    for key in (None, "k", ""):
        for limit in (None, 2, 0, 2.5):
            item = {**OK, "concurrency_key": key, "concurrency_limit": limit}
            yield {k: v for k, v in item.items() if v is not None}
    item = {**OK, "priority": 101, "max_attempts": 0, "queue_name": 3}
    yield item
    yield {k: v for k, v in OK.items() if k != "task_path"}
    yield {k: v for k, v in OK.items() if k != "spec"}
    for not_an_object in ([], "x", 1, None, [OK]):
        yield not_an_object


@pytest.fixture
def reference(cur):
    """pg_temp.reference_problem(jsonb): 0002's two diagnosing passes, verbatim."""
    [second] = [m for m in migrate.available_migrations() if m.version == 2]
    source = second.path.read_text()
    start = source.index("    select s.position, s.problem\n    into v_position, v_problem")
    end = source.index("    if v_problem is not null then\n        raise exception 'task %: %'")
    cur.execute(f"""
        create function pg_temp.reference_problem(p_tasks jsonb) returns text[]
        language plpgsql as $reference$
        declare
            v_position bigint;
            v_problem text[];
        begin
        {source[start:end]}
            if v_problem is null then
                return null;
            end if;
            return array[v_problem[1], format('task %s: %s', v_position, v_problem[2])];
        end;
        $reference$
    """)
    return cur


def outcome(conn, cur, tasks):
    """(sqlstate, message) of enqueue_many(tasks), or None when it succeeded; rolled back."""
    conn.execute("begin")
    try:
        cur.execute("select count(*) from reproq.enqueue_many(%s::jsonb)", (json.dumps(tasks),))
        return None
    except psycopg.Error as error:
        return [error.diag.sqlstate, error.diag.message_primary]
    finally:
        conn.execute("rollback")


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)")
_BOTH_TIMESTAMPS = "run_after and expires_at must be ISO 8601 timestamps"


def as_since_0006(tasks, expected):
    """0006 names the malformed timestamp field alone (0002's message named both, with a blank
    for a missing one); every other message is 0002's."""
    if expected is None or _BOTH_TIMESTAMPS not in expected[1]:
        return expected
    position = int(expected[1].split(":")[0].removeprefix("task "))
    item = tasks[position - 1]
    run_after = item.get("run_after")
    run_after_ok = run_after is None or (
        isinstance(run_after, str) and _TIMESTAMP.fullmatch(run_after) is not None)
    field = "expires_at" if run_after_ok else "run_after"
    return [expected[0], f"task {position}: {field} must be an ISO 8601 timestamp with a time "
                         f"zone offset, got {json.dumps(item[field])}"]


@pytest.mark.parametrize("candidate", list(candidates()), ids=lambda c: json.dumps(c)[:60])
def test_the_one_pass_check_refuses_exactly_what_the_diagnosis_refuses(conn, reference,
                                                                         candidate):
    for tasks in ([OK, candidate], [candidate, OK], [candidate]):
        reference.execute("select pg_temp.reference_problem(%s::jsonb)", (json.dumps(tasks),))
        expected = as_since_0006(tasks, reference.fetchone()[0])
        assert outcome(conn, reference, tasks) == expected, tasks


def test_batch_rows_carry_reproq_spec_hash(cur):
    specs = [([1, 1.0, 1.50, -0.0, 1e20], {}), (["é", "\u2603", "\"\\\n\t", None], {"b": 1, "a": 2}),
             ([{"z": [], "a": {"y": None}}], {"k" * 300: "v"}), ([], {"": ""})]
    items = [queries.task_item(path, list(args), kwargs, queue_name=queue)
             for path in ("app.tasks.t", "a_b.c9") for queue in ("default", "é q")
             for args, kwargs in specs]
    rows = queries.enqueue_many(cur, items)
    assert all(r.created for r in rows) and len(rows) == len(items)
    for path in ("app.tasks.t", "a_b.c9"):  # and enqueue_one's copy of the expression
        for queue in ("default", "é q"):
            for args, kwargs in specs:
                queries.enqueue_one(cur, path, list(args), kwargs, queue_name=queue,
                                    dedup=False)
    cur.execute("""
        select count(*) from reproq.task_runs as t
        where t.spec_hash = reproq.spec_hash(t.task_path, t.queue_name, t.spec_json)
    """)
    assert cur.fetchone()[0] == 2 * len(items)
