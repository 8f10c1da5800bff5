"""Many tasks, several runners, and a PostgreSQL restart under a running runner."""

import pytest

from reproq_runner import queries
from tests import pg
from tests.acceptance.conftest import (counter, enqueue, free_port, get, status_of, task_path,
                                       wait_for)


def enqueue_noops(cur, count: int, queue_name: str = "default") -> list[int]:
    items = [queries.task_item(task_path("echo"), [i], queue_name=queue_name, dedup=False)
             for i in range(count)]
    return [row.result_id for row in queries.enqueue_many(cur, items)]


def all_successful_once(cur, ids):
    cur.execute("select count(*) filter (where status = 'SUCCESSFUL' and attempts = 1"
                " and cardinality(worker_ids) = 1), count(*) from reproq.task_runs"
                " where result_id = any(%s)", (ids,))
    return cur.fetchone()


@pytest.mark.slow
def test_two_runners_run_each_of_2000_tasks_exactly_once(cur, start_runner):
    ids = enqueue_noops(cur, 2000)
    first = start_runner("--burst", "--concurrency", "4")
    second = start_runner("--burst", "--concurrency", "4")
    assert first.wait(240) == 0, first.log()
    assert second.wait(240) == 0, second.log()
    assert all_successful_once(cur, ids) == (2000, 2000)
    runs = queries.get_task_runs(cur, ids)
    assert [r.return_json for r in runs] == list(range(2000))
    assert {r.worker_ids[0] for r in runs} <= {first.worker_id, second.worker_id}


@pytest.mark.slow
def test_tasks_whose_durations_cross_the_pacing_thresholds_each_run_once(cur, start_runner):
    """Fast tasks, then a stretch of 30 ms ones, then 150 ms ones (the runners' average crosses
    20 ms and then 0.1 s: children holding deep queues drop to two tasks each, then to one;
    claims and flushes change pace), then fast ones again: every task still runs exactly once
    and its outcome is stored."""
    def items(name, args_list):
        return [queries.task_item(task_path(name), args, dedup=False) for args in args_list]

    batches = [items("echo", [[i] for i in range(300)]),
               items("sleep", [[0.03, None]] * 80),
               items("sleep", [[0.15, None]] * 60),
               items("echo", [[i] for i in range(300, 600)])]
    ids = [row.result_id for batch in batches for row in queries.enqueue_many(cur, batch)]
    first = start_runner("--burst", "--concurrency", "3")
    second = start_runner("--burst", "--concurrency", "3")
    assert first.wait(240) == 0, first.log()
    assert second.wait(240) == 0, second.log()
    assert all_successful_once(cur, ids) == (len(ids), len(ids))
    runs = queries.get_task_runs(cur, ids)
    assert [r.return_json for r in runs[:300] + runs[440:]] == list(range(600))
    assert all(r.return_json == {"slept": 0.03} for r in runs[300:380])
    assert all(r.return_json == {"slept": 0.15} for r in runs[380:440])


@pytest.mark.slow
def test_tasks_queued_behind_a_task_that_turns_out_slow_run_in_the_other_child(
        cur, start_runner, tmp_path):
    """Fast tasks make children hold queues; one task among them then waits for a file. The
    tasks queued behind it in its child are taken back and run by the other child while it
    still waits (before, they waited for it)."""
    release, started = tmp_path / "release", tmp_path / "started"
    fast = enqueue_noops(cur, 300)
    slow = enqueue(cur, "wait_for_file", [str(release), str(started)])
    fast += enqueue_noops(cur, 300)
    runner = start_runner("--concurrency", "2")
    wait_for(lambda: all_successful_once(cur, fast) == (600, 600), timeout=60,
             message="the fast tasks, while the slow one waits")
    assert started.exists() and status_of(cur, slow) == "RUNNING"
    release.touch()
    wait_for(lambda: status_of(cur, slow) == "SUCCESSFUL", message="the slow task")
    assert "took back" in runner.log()


@pytest.mark.slow
def test_a_runner_whose_children_are_all_stuck_hands_its_claimed_tasks_back(
        cur, start_runner, tmp_path):
    """Both children of the first runner are held by slow tasks: the fast tasks it had claimed
    ahead go back to the queue, and a second runner runs them while the slow ones still wait."""
    release = tmp_path / "release"
    markers = [tmp_path / "first", tmp_path / "second"]
    fast = enqueue_noops(cur, 300)
    slow = [enqueue(cur, "wait_for_file", [str(release), str(m)]) for m in markers]
    fast += enqueue_noops(cur, 300)
    port = free_port()
    stuck = start_runner("--concurrency", "2", "--metrics-addr", f"127.0.0.1:{port}")
    wait_for(lambda: all(m.exists() for m in markers), message="both slow tasks started")
    start_runner("--concurrency", "1")
    wait_for(lambda: all_successful_once(cur, fast) == (600, 600), timeout=60,
             message="the fast tasks, while the slow ones wait")
    assert [status_of(cur, s) for s in slow] == ["RUNNING", "RUNNING"]
    assert "handing" in stuck.log()
    # Its metrics: every claim counts, and claimed - handed_back is the attempts it spent.
    echo = {"queue": "default", "task": task_path("echo")}
    cur.execute("select count(*) from reproq.task_runs where result_id = any(%s)"
                " and worker_ids = array[%s]", (fast, stuck.worker_id))
    ran_here = cur.fetchone()[0]

    def counters_match() -> bool:
        metrics = get(port, "/metrics")[1].decode()
        claimed = counter(metrics, "reproq_tasks_claimed_total", echo)
        handed_back = counter(metrics, "reproq_tasks_handed_back_total", echo)
        return handed_back > 0 and claimed - handed_back == ran_here

    wait_for(counters_match,
             message=f"claimed - handed_back == {ran_here}, the tasks the stuck runner ran")
    release.touch()
    wait_for(lambda: [status_of(cur, s) for s in slow] == ["SUCCESSFUL"] * 2,
             message="the slow tasks")


@pytest.mark.slow
def test_a_burst_runner_runs_the_tasks_it_handed_back_before_it_exits(cur, start_runner):
    """Its only child is held by a slow task long enough that the runner hands the tasks
    claimed behind it back to the queue; once the child is free it claims them again, and
    --burst exits only when the queue is empty."""
    fast = enqueue_noops(cur, 200)
    slow = enqueue(cur, "sleep", [1.5])
    fast += enqueue_noops(cur, 40)
    runner = start_runner("--burst", "--concurrency", "1")
    assert runner.wait(120) == 0, runner.log()
    assert "handing" in runner.log()
    assert all_successful_once(cur, fast) == (240, 240)
    assert status_of(cur, slow) == "SUCCESSFUL"


@pytest.mark.slow
def test_runner_survives_a_postgresql_restart(dsn, connect, start_runner):
    with connect().cursor() as cur:
        before = enqueue_noops(cur, 50)
    runner = start_runner("--concurrency", "2", "--poll-interval", "0.2")
    with connect().cursor() as cur:
        wait_for(lambda: all_successful_once(cur, before)[0] == 50, message="first batch")
    pg.cluster().restart()
    with connect().cursor() as cur:
        after = enqueue_noops(cur, 50, queue_name="default")
        wait_for(lambda: all_successful_once(cur, after)[0] == 50, timeout=30,
                 message="tasks enqueued after the restart")
        cur.execute("select count(*) from reproq.workers where worker_id = %s",
                    (runner.worker_id,))
        assert cur.fetchone()[0] == 1
    assert runner.process.poll() is None, runner.log()
    assert "connection lost" in runner.log()


@pytest.mark.slow
def test_restart_while_tasks_run_loses_nothing(dsn, connect, start_runner, tmp_path):
    with connect().cursor() as cur:
        items = [queries.task_item(task_path("sleep"), [0.05, str(tmp_path / f"m{i}")],
                                   dedup=False) for i in range(100)]
        ids = [row.result_id for row in queries.enqueue_many(cur, items)]
    runner = start_runner("--concurrency", "4", "--poll-interval", "0.2")
    wait_for(lambda: len(list(tmp_path.glob("m*"))) >= 10, message="some tasks started")
    pg.cluster().restart()
    with connect().cursor() as cur:
        wait_for(lambda: queries.status_counts(cur).get("SUCCESSFUL", 0) == 100, timeout=90,
                 message="every task finished")
        runs = queries.get_task_runs(cur, ids)
    assert {r.status for r in runs} == {"SUCCESSFUL"}
    assert runner.process.poll() is None


@pytest.mark.slow
def test_a_stopping_runner_whose_database_is_gone_gives_up(connect, start_runner, tmp_path):
    """--max-tasks reached, and the database down when the last outcome is due: the runner
    does not wait forever (shutdown timeout + grace); it says what it could not store, and
    the task's lease expires later; exit 1, since something was left unstored."""
    marker = tmp_path / "started"
    with connect().cursor() as cur:
        result_id = enqueue(cur, "sleep", [1, str(marker)])
    runner = start_runner("--max-tasks", "1", "--shutdown-timeout", "1")
    wait_for(marker.exists, message="task start")
    pg.cluster().stop()
    try:
        assert runner.wait(60) == 1, runner.log()
    finally:
        pg.cluster().start()
    assert "1 outcome(s) and 0 hand-back(s) not stored" in runner.log()
    with connect().cursor() as cur:
        assert queries.get_task_run(cur, result_id).status == "RUNNING"
