"""The 0003 shapes of claim, complete_many and set_logs_uris (planned once per session), and
the 0005 and 0006 heartbeats.

They run with plan_cache_mode = force_generic_plan, so the plan a session makes first is the
one it keeps: made while the table was empty, it must still read task_runs by index once the
table is full. auto_explain (log_level = notice) shows the plans PL/pgSQL really used.
"""

import uuid

from reproq_runner import queries
from tests.sql.helpers import T0, at, enqueue, task_runs_scans


def fill_running(cur, n):
    cur.execute("""
        insert into reproq.task_runs
            (queue_name, priority, run_after, task_path, spec_json, spec_hash, dedup, status,
             attempts, worker_ids, leased_by, leased_until, lease_token, enqueued_at)
        select 'default', 0, %s, 'app.tasks.t',
               jsonb_build_object('args', jsonb_build_array(i), 'kwargs', '{}'::jsonb),
               sha256(int8send(i)), false, 'RUNNING', 1, '{w}', 'w', %s + interval '1 hour',
               gen_random_uuid(), %s
        from generate_series(1, %s) as i
    """, (T0, T0, T0, n))


def test_plans_made_on_an_empty_table_still_use_indexes_on_a_full_one(conn, cur):
    # First calls on an empty, never analyzed table: the session's generic plans are made now.
    assert queries.claim(cur, "w", ["default"], 5, now=T0) == []
    assert queries.complete_many(cur, [(1, uuid.uuid4(), "null")]) == set()
    cur.execute("select reproq.set_logs_uris(array[1::bigint], array[gen_random_uuid()],"
                " array['file:///x'])")
    fill_running(cur, 20_000)
    for i in range(200):
        enqueue(cur, [i])

    claimed, nodes = task_runs_scans(conn, lambda c: queries.claim(c, "w", ["default"], 5, now=T0))
    assert len(claimed) == 5
    assert nodes and not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes

    outcomes = [(t.result_id, t.lease_token, "1") for t in claimed]
    done, nodes = task_runs_scans(conn, lambda c: queries.complete_many(c, outcomes))
    assert done == {t.result_id for t in claimed}
    assert nodes and not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    # One primary-key lookup per id, not a walk over the 20 000 RUNNING rows.
    assert {n.get("Index Name") for n in nodes if "Index Name" in n} == {"task_runs_pkey"}
    assert sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in nodes
               if n.get("Index Name") == "task_runs_pkey") <= 5


def test_claim_with_repeated_and_null_queue_names_claims_each_task_once(cur):
    ids = {enqueue(cur, [i]) for i in range(4)}
    claimed = queries.claim(cur, "w", ["default", "default", None], 10, now=T0)
    assert sorted(t.result_id for t in claimed) == sorted(ids)


def test_claim_of_one_null_or_paused_queue_claims_nothing(cur):
    enqueue(cur, [1])
    assert queries.claim(cur, "w", [None], 10, now=T0) == []
    cur.execute("select reproq.pause_queue('default')")
    assert queries.claim(cur, "w", ["default"], 10, now=T0) == []
    cur.execute("select reproq.resume_queue('default')")
    assert len(queries.claim(cur, "w", ["default"], 10, now=T0)) == 1


def fill_finished(cur, n):
    cur.execute("""
        insert into reproq.task_runs
            (queue_name, priority, run_after, task_path, spec_json, spec_hash, dedup, status,
             attempts, worker_ids, finished_at, enqueued_at)
        select 'default', 0, %s, 'app.tasks.t', '{"args": [], "kwargs": {}}',
               sha256(int8send(-i)), false, 'SUCCESSFUL', 1, '{w}', %s, %s
        from generate_series(1, %s) as i
    """, (T0, T0, T0, n))


def test_heartbeat_reads_only_its_indexes_and_renews_only_spent_leases(conn, cur):
    # Plans made on an empty table, then a table of finished rows with 5 000 RUNNING ones of
    # another worker (leased for an hour, one of them being cancelled) and one of ours, 55 s
    # into its 60 s lease.
    for _ in range(8):
        assert queries.heartbeat(cur, "w2", 60, now=T0) == []
    fill_finished(cur, 100_000)
    fill_running(cur, 5_000)
    cur.execute("select reproq.cancel(min(result_id)) from reproq.task_runs"
                " where status = 'RUNNING'")
    mine = enqueue(cur, ["mine"])
    queries.claim(cur, "w2", ["default"], 1, 60, now=T0)
    for analyzed in (False, True):
        if analyzed:
            cur.execute("analyze reproq.task_runs")
        cancels, nodes = task_runs_scans(
            conn, lambda c: queries.heartbeat(c, "w2", 60, now=at(55 + analyzed)))
        assert cancels == []
        assert nodes and not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
        assert {n.get("Index Name") for n in nodes if n["Node Type"] != "ModifyTable"} == {
            "task_runs_lease_expiry_idx", "task_runs_cancel_requested_idx"}, nodes
        # The cancellations are looked up by worker: the other worker's one is not read.
        cancel_reads = [n for n in nodes
                        if n.get("Index Name") == "task_runs_cancel_requested_idx"]
        assert [n["Actual Rows"] for n in cancel_reads] == [0], nodes
        # The renewing UPDATE reads only the leases due for renewal: ours, the first time.
        renewing = [n for n in nodes if "<=" in n.get("Index Cond", "")]
        assert [n["Actual Rows"] for n in renewing] == [0 if analyzed else 1], nodes
    cur.execute("select leased_until from reproq.task_runs where result_id = %s", (mine,))
    assert cur.fetchone()[0] == at(115)


def index_read_by(node: dict) -> str | None:
    """The index a scan node reads: its own, or a bitmap heap scan's bitmap index scan's."""
    if node["Node Type"] == "Bitmap Heap Scan":
        [bitmap] = node["Plans"]
        return bitmap.get("Index Name")
    return node.get("Index Name")


def test_the_held_heartbeat_reads_only_the_held_rows(conn, cur):
    """The 0006 form looks the held ids up by primary key (since 0008 through a bitmap of them,
    to lock them with SKIP LOCKED first): the due leases of 20 other workers (5 000 rows) are
    not read, as the 0005 form read them, whether the session's plan was made on an empty
    table or not."""
    for _ in range(8):
        assert queries.heartbeat(cur, "w2", 60, now=T0, held=[]) == []
    fill_finished(cur, 100_000)
    fill_running(cur, 5_000)  # leased until T0 + 1 hour: due at at(3595) too
    cur.execute("update reproq.task_runs set leased_by = 'w' || (result_id % 20)"
                " where status = 'RUNNING'")
    mine = [enqueue(cur, ["mine", i]) for i in range(50)]
    assert len(queries.claim(cur, "w2", ["default"], 50, 3600, now=T0)) == 50
    for analyzed in (False, True):
        if analyzed:
            cur.execute("analyze reproq.task_runs")
        now = at(3595 + analyzed)
        cancels, nodes = task_runs_scans(
            conn, lambda c: queries.heartbeat(c, "w2", 60, now=now, held=mine))
        assert cancels == []
        reads = [n for n in nodes if n["Node Type"] != "ModifyTable"]
        assert {index_read_by(n) for n in reads} == {
            "task_runs_pkey", "task_runs_cancel_requested_idx"}, nodes
    cur.execute("select count(*) from reproq.task_runs where leased_until = %s", (at(3655),))
    assert cur.fetchone()[0] == 50  # renewed by the first call; the second found them fresh
