"""The claim's plans: index range scans that stop after p_limit rows, whatever the backlog.

auto_explain (log_level = notice) sends the plan of every statement run inside reproq.claim
to this client, with actual rows and buffers, so we can read the real plans PL/pgSQL used,
custom and generic ones alike. Buffer counts are deterministic, unlike timings.
"""

import json

from reproq_runner import queries
from tests.sql.helpers import T0

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


def plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def claim_plans(conn, calls):
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    with conn.cursor() as cur:
        cur.execute("load 'auto_explain'")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_analyze", "on"), ("log_buffers", "on"),
                               ("log_format", "json"), ("log_level", "notice")):
            cur.execute(f"set auto_explain.{setting} = {value}")
        claimed = []
        for _ in range(calls):
            claimed += queries.claim(cur, "w", ["default"], 5, now=T0)
        cur.execute("set auto_explain.log_min_duration = -1")
    plans = [json.loads(n.split("plan:", 1)[1])["Plan"] for n in notices if "plan:" in n]
    return claimed, plans


def test_claim_uses_the_claim_index_and_reads_a_few_pages(conn, cur):
    fill(cur)
    cur.execute("show enable_seqscan")
    assert cur.fetchone()[0] == "on"
    claimed, plans = claim_plans(conn, calls=8)  # past PL/pgSQL's switch to generic plans
    assert len(claimed) == 40 and {t.priority for t in claimed} == {0}

    scans = [node for plan in plans for node in plan_nodes(plan)
             if node.get("Relation Name") == "task_runs"]
    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"]
    claim_scans = [n for n in scans if n.get("Index Name") == "task_runs_claim_idx"]
    assert claim_scans
    for node in claim_scans:
        assert node["Actual Rows"] <= 5
        # The index holds 40 000 entries (hundreds of pages); a claim touches a handful.
        assert node["Shared Hit Blocks"] + node["Shared Read Blocks"] <= 10, node
