"""The claim's plans: index range scans that stop after p_limit rows, whatever the backlog.

auto_explain (log_level = notice) sends the plan of every statement run inside reproq.claim
to this client, with actual rows and buffers, so we can read the real plans PL/pgSQL used,
custom and generic ones alike. Buffer counts are deterministic, unlike timings.
"""


from reproq_runner import queries
from tests.sql.helpers import T0, task_runs_scans

BACKLOG = 20_000


def fill(cur):
    # A backlog that is READY but not due, at a higher priority than the due rows: the worst
    # case for an index ordered (priority desc, run_after), which a claim must not scan.
    for priority, run_after in ((50, "1 day"), (0, "-1 day")):
        cur.execute(f"""
            insert into reproq.task_runs
                (queue_name, priority, run_after, task_path, spec_json, spec_hash, dedup,
                 enqueued_at)
            select 'default', {priority}, %s + interval '{run_after}', 'app.tasks.t',
                   jsonb_build_object('args', jsonb_build_array(i), 'kwargs', '{{}}'::jsonb),
                   sha256(int8send(i)), false, %s
            from generate_series(1, {BACKLOG}) as i
        """, (T0, T0))
    cur.execute("analyze reproq.task_runs")


def claim_batches(cur, calls):
    claimed = []
    for _ in range(calls):
        claimed += queries.claim(cur, "w", ["default"], 5, now=T0)
    return claimed


def test_claim_uses_the_claim_index_and_reads_a_few_pages(conn, cur):
    fill(cur)
    cur.execute("show enable_seqscan")
    assert cur.fetchone()[0] == "on"
    # 8 calls: past PL/pgSQL's switch to generic plans.
    claimed, scans = task_runs_scans(conn, lambda c: claim_batches(c, calls=8))
    assert len(claimed) == 40 and {t.priority for t in claimed} == {0}

    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"]
    claim_scans = [n for n in scans if n.get("Index Name") == "task_runs_claim_idx"]
    assert claim_scans
    for node in claim_scans:
        assert node["Actual Rows"] <= 5
        # The index holds 40 000 entries (hundreds of pages); a claim touches a handful.
        assert node["Shared Hit Blocks"] + node["Shared Read Blocks"] <= 10, node
