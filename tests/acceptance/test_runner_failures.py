"""Tasks that crash, hang, get cancelled or refused, and runners that get killed or stopped:
the runner process survives and every task ends in the state the rules give it."""

import functools
import os
import signal
from pathlib import Path

import pytest

from reproq_runner import queries
from reproq_runner.runner import Runner, RunnerConfig
from tests import pg
from tests.acceptance.executors import NoopExecutor
from tests.acceptance.conftest import enqueue, status_of, task_path, wait_for


def last_error(cur, result_id):
    return queries.get_task_run(cur, result_id).errors_json[-1]


def assert_runner_still_works(cur):
    probe = enqueue(cur, "echo", [{"probe": True}])
    wait_for(lambda: status_of(cur, probe) == "SUCCESSFUL", message="probe task after failure")


def test_sigkilled_runner_task_is_finished_by_another_runner(cur, start_runner, tmp_path):
    marker = tmp_path / "started"
    result_id = enqueue(cur, "sleep_once", [60, str(marker)], max_attempts=2)
    doomed = start_runner("--lease-seconds", "5")
    wait_for(marker.exists, message="task start in the first runner")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    rescuer = start_runner("--lease-seconds", "5")
    wait_for(lambda: status_of(cur, result_id) == "SUCCESSFUL", message="rescue")
    run = queries.get_task_run(cur, result_id)
    assert run.attempts == 2 and run.worker_ids == [doomed.worker_id, rescuer.worker_id]
    assert run.return_json == {"attempt": 2}
    assert run.errors_json[0]["exception_class_path"] == "reproq.LeaseExpired"


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, not yet reaped by whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_a_sigkilled_runners_busy_children_die_with_it(cur, start_runner, tmp_path):
    """Else a child would run its task on after the runner is gone, while the lease runs out
    and another runner starts the task again: twice at once. (Each child held a copy of the
    pipe whose end tells the forkserver that the runner is gone, so the forkserver, and the
    children that die with it, lived on.)"""
    marker = tmp_path / "pid"
    enqueue(cur, "sleep_writing_pid", [300, str(marker)])
    runner = start_runner("--concurrency", "2")
    wait_for(lambda: marker.exists() and marker.read_text() != "", message="task start")
    child = int(marker.read_text())
    runner.signal(signal.SIGKILL)
    runner.wait()
    wait_for(lambda: process_gone(child), timeout=20,
             message=f"child {child} to die with its SIGKILLed runner")


def test_a_sigterm_to_the_whole_process_group_lets_running_tasks_finish(cur, start_runner,
                                                                         tmp_path):
    """systemd's KillMode=control-group, dumb-init and ``kill -TERM -<pgid>`` signal every
    process of the group: the forkserver must not die of it (its children would die with it)."""
    marker = tmp_path / "started"
    result_id = enqueue(cur, "sleep", [2, str(marker)])
    runner = start_runner("--concurrency", "2", "--shutdown-timeout", "60", own_group=True)
    wait_for(marker.exists, message="task start")
    os.killpg(runner.pid, signal.SIGTERM)
    assert runner.wait() == 0, runner.log()
    run = queries.get_task_run(cur, result_id)
    assert (run.status, run.attempts, run.errors_json) == ("SUCCESSFUL", 1, []), runner.log()


def last_seen(cur, worker_id: str):
    cur.execute("select last_seen_at from reproq.workers where worker_id = %s", (worker_id,))
    return cur.fetchone()[0]


def test_a_held_row_locked_by_another_transaction_does_not_stop_the_runner(cur, connect,
                                                                            start_runner,
                                                                            tmp_path):
    """An uncommitted cancel() in a web request holds the row of a running task: the
    heartbeat passes over it (SQL 0008) instead of stopping the runner's loop, which must go
    on claiming, running and stopping tasks meanwhile."""
    marker = tmp_path / "started"
    held = enqueue(cur, "sleep", [300, str(marker)])
    runner = start_runner("--concurrency", "2", "--lease-seconds", "6")
    wait_for(marker.exists, message="task start")
    other = connect()
    other.execute("begin")
    other.execute("select reproq.cancel(%s)", (held,))  # uncommitted: the row stays locked
    cur.execute("select now() + interval '2 seconds'")
    later = cur.fetchone()[0]
    try:
        # Its lease is due for renewal 1.5 s after the claim, and a heartbeat runs every
        # second: one that has marked the worker seen 2 s after the lock met the locked row.
        wait_for(lambda: last_seen(cur, runner.worker_id) > later, timeout=15,
                 message="a heartbeat that met the locked row and returned")
        probe = enqueue(cur, "echo", [{"probe": True}])
        wait_for(lambda: status_of(cur, probe) == "SUCCESSFUL", timeout=15,
                 message="a task run while a held row is locked")
    finally:
        other.execute("commit")
    wait_for(lambda: status_of(cur, held) == "CANCELLED",
             message="the cancellation, once committed")


def test_sigterm_finishes_short_tasks_and_hands_back_long_ones(cur, start_runner, tmp_path):
    short_marker, long_marker = tmp_path / "short", tmp_path / "long"
    short = enqueue(cur, "sleep", [1, str(short_marker)])
    long = enqueue(cur, "sleep", [600, str(long_marker)])
    runner = start_runner("--concurrency", "2", "--shutdown-timeout", "4")
    wait_for(lambda: short_marker.exists() and long_marker.exists(), message="both started")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.log()
    assert status_of(cur, short) == "SUCCESSFUL"
    handed_back = queries.get_task_run(cur, long)
    assert (handed_back.status, handed_back.attempts, handed_back.worker_ids) == ("READY", 0, [])
    assert handed_back.errors_json == []
    # Once: the loop logged it again on every turn until the killed child's exit was read.
    assert runner.log().count("shutdown timeout reached: stopping 1 running task(s)") == 1


def test_sigterm_hands_back_the_tasks_queued_in_a_child_too(cur, start_runner, tmp_path):
    """Under 0.1 s a child holds its next task as well; on a stop signal that one goes back to
    the queue with the runner's own claimed tasks, and only the running task finishes."""
    warm_up = [queries.task_item(task_path("sleep"), [0.06], dedup=False) for _ in range(45)]
    warm_up_ids = [row.result_id for row in queries.enqueue_many(cur, warm_up)]
    runner = start_runner("--concurrency", "1", "--shutdown-timeout", "30")
    wait_for(lambda: all(status_of(cur, i) == "SUCCESSFUL" for i in warm_up_ids), timeout=60,
             message="the warm-up tasks (the runner learns they take about 60 ms)")
    release, marker = tmp_path / "release", tmp_path / "started"
    items = [queries.task_item(task_path("wait_for_file"), [str(release), str(marker)],
                               dedup=False),
             *(queries.task_item(task_path("sleep"), [0.06], dedup=False) for _ in range(3))]
    running, *behind = [row.result_id for row in queries.enqueue_many(cur, items)]
    wait_for(marker.exists, message="the waiting task started")
    runner.signal(signal.SIGTERM)
    wait_for(lambda: "handed" in runner.log(), message="the hand-back")
    release.touch()
    assert runner.wait() == 0, runner.log()
    assert status_of(cur, running) == "SUCCESSFUL"
    for result_id in behind:
        task = queries.get_task_run(cur, result_id)
        assert (task.status, task.attempts) == ("READY", 0), runner.log()
    assert "handed 3 task(s) back" in runner.log()


def test_sigterm_during_a_max_tasks_stop_still_bounds_the_wait(cur, start_runner, tmp_path):
    """--max-tasks reached starts a stop with no deadline; a signal then still gives the
    running task the shutdown timeout and hands it back."""
    marker = tmp_path / "started"
    long = enqueue(cur, "sleep", [600, str(marker)])
    runner = start_runner("--max-tasks", "1", "--shutdown-timeout", "1")
    wait_for(marker.exists, message="task start")
    wait_for(lambda: "--max-tasks reached" in runner.log(), message="max-tasks stop begun")
    runner.signal(signal.SIGTERM)
    assert runner.wait(60) == 0, runner.log()
    run = queries.get_task_run(cur, long)
    assert (run.status, run.attempts, run.errors_json) == ("READY", 0, [])


def test_second_signal_stops_at_once(cur, start_runner, tmp_path):
    marker = tmp_path / "started"
    result_id = enqueue(cur, "sleep", [600, str(marker)])
    runner = start_runner("--shutdown-timeout", "600")
    wait_for(marker.exists, message="task start")
    runner.signal(signal.SIGTERM)
    wait_for(lambda: "no more claims" in runner.log(), message="graceful stop begun")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 1
    run = queries.get_task_run(cur, result_id)
    assert (run.status, run.attempts) == ("READY", 0)


def test_timeout_kills_the_task(cur, start_runner):
    result_id = enqueue(cur, "sleep", [600], timeout_seconds=1, max_attempts=1)
    start_runner("--concurrency", "1")
    wait_for(lambda: status_of(cur, result_id) == "FAILED", message="timeout")
    error = last_error(cur, result_id)
    assert error["exception_class_path"] == "reproq.TaskTimeout"
    assert "timeout of 1 s" in error["message"]
    assert_runner_still_works(cur)


def test_a_timed_out_task_is_settled_though_a_process_it_forked_holds_its_pipe(
        cur, start_runner, tmp_path):
    """The runner learnt that a child died from its result pipe's end of file, which never
    comes while a process the task forked holds the pipe: the task stayed RUNNING, its child's
    place was lost, and a stop waited for that process. The child's exit is watched too."""
    pidfile = tmp_path / "grandchild"
    result_id = enqueue(cur, "fork_then_sleep", [120, 120, str(pidfile)], timeout_seconds=2,
                        max_attempts=1)
    runner = start_runner("--concurrency", "1")
    try:
        wait_for(lambda: status_of(cur, result_id) == "FAILED", timeout=30,
                 message="the timed-out task settled")
        assert last_error(cur, result_id)["exception_class_path"] == "reproq.TaskTimeout"
        assert_runner_still_works(cur)  # its only child was replaced
        runner.signal(signal.SIGTERM)
        assert runner.wait(30) == 0, runner.log()
    finally:
        if pidfile.exists() and pidfile.read_text():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_timeout_follows_retry_rules(cur, start_runner):
    result_id = enqueue(cur, "sleep", [600], timeout_seconds=1, max_attempts=2)
    start_runner("--concurrency", "1")
    wait_for(lambda: len(queries.get_task_run(cur, result_id).errors_json) == 1,
             message="first timeout")
    assert queries.get_task_run(cur, result_id).status in ("READY", "RUNNING")


def test_cancel_of_a_running_task_kills_it(cur, start_runner, tmp_path):
    marker = tmp_path / "started"
    result_id = enqueue(cur, "sleep", [600, str(marker)])
    start_runner("--concurrency", "1")
    wait_for(marker.exists, message="task start")
    assert queries.cancel(cur, result_id) == "RUNNING"
    wait_for(lambda: status_of(cur, result_id) == "CANCELLED", timeout=15,
             message="cancellation")
    run = queries.get_task_run(cur, result_id)
    assert run.errors_json[-1]["exception_class_path"] == "reproq.TaskCancelled"
    assert run.finished_at is not None
    assert_runner_still_works(cur)


def test_crashing_children_fail_only_their_task(cur, start_runner):
    exits = enqueue(cur, "exit_process", [7], max_attempts=1)
    segfaults = enqueue(cur, "segfault", max_attempts=1)
    system_exit = enqueue(cur, "raise_system_exit", max_attempts=1)
    fine = [enqueue(cur, "echo", [i]) for i in range(5)]
    start_runner("--concurrency", "2")
    wait_for(lambda: {status_of(cur, i) for i in (exits, segfaults, system_exit)} == {"FAILED"},
             message="crashes recorded")
    assert "exit code 7" in last_error(cur, exits)["message"]
    assert "SIGSEGV" in last_error(cur, segfaults)["message"]
    assert last_error(cur, exits)["exception_class_path"] == "reproq.WorkerCrashed"
    assert last_error(cur, system_exit)["exception_class_path"] == "builtins.SystemExit"
    wait_for(lambda: {status_of(cur, i) for i in fine} == {"SUCCESSFUL"}, message="others")
    assert_runner_still_works(cur)


@pytest.mark.parametrize("concurrency", ["1", "3"])
def test_a_killed_forkserver_is_started_again_and_the_crash_recorded(cur, start_runner,
                                                                       concurrency):
    """Replacing the child whose forkserver died raised ConnectionRefusedError when it came
    before the dead forkserver could be reaped: the runner exited with a traceback and the
    task's crash was never recorded."""
    killer = enqueue(cur, "kill_the_forkserver", max_attempts=1)
    runner = start_runner("--concurrency", concurrency)
    wait_for(lambda: status_of(cur, killer) == "FAILED", message="the crash recorded")
    assert last_error(cur, killer)["exception_class_path"] == "reproq.WorkerCrashed"
    assert_runner_still_works(cur)
    assert runner.process.poll() is None, runner.log()
    assert "Traceback" not in runner.log()


def test_child_crash_is_retried_when_attempts_remain(cur, start_runner):
    result_id = enqueue(cur, "exit_process", [3], max_attempts=2)
    start_runner("--concurrency", "1")
    wait_for(lambda: len(queries.get_task_run(cur, result_id).errors_json) >= 1,
             message="first crash")
    assert queries.get_task_run(cur, result_id).status in ("READY", "RUNNING", "FAILED")


def test_raw_sql_row_outside_the_allow_list_never_runs(cur, start_runner, tmp_path):
    target = tmp_path / "pwned"
    cur.execute("select reproq.enqueue('os.system', jsonb_build_object('args',"
                " jsonb_build_array(%s::text), 'kwargs', '{}'::jsonb))",
                (f"touch {target}",))
    result_id = cur.fetchone()[0]
    runner = start_runner("--burst")
    assert runner.wait() == 0, runner.log()
    run = queries.get_task_run(cur, result_id)
    assert run.status == "FAILED" and run.attempts == 1  # refused for good, no retry
    assert "not imported" in run.errors_json[-1]["message"]
    assert not Path(target).exists()


def test_allow_list_flag_limits_task_modules(cur, start_runner):
    result_id = enqueue(cur, "echo", [1])
    runner = start_runner("--burst", "--allowed-task-modules", "tests.testapp.tasks")
    assert runner.wait() == 0, runner.log()
    run = queries.get_task_run(cur, result_id)
    assert run.status == "FAILED" and task_path("echo") in run.errors_json[-1]["message"]


EXECUTORS = "tests.acceptance.executors"


def test_children_that_cannot_set_up_leave_the_queue_untouched(cur, start_runner):
    """No claim before a child is ready: a runner that cannot start its children exits 1 and
    holds no lease (before, it claimed at once and each restart spent an attempt)."""
    ids = [enqueue(cur, "echo", [i]) for i in range(5)]
    runner = start_runner("--executor", f"{EXECUTORS}:SetupFailsExecutor", "--concurrency", "2")
    assert runner.wait() == 1, runner.log()
    assert "could not start" in runner.log()
    for result_id in ids:
        run = queries.get_task_run(cur, result_id)
        assert (run.status, run.attempts, run.worker_ids) == ("READY", 0, [])


@pytest.mark.parametrize("executor", ["SetupFailsLaterExecutor", "SetupDiesLaterExecutor"])
def test_a_replacement_child_that_cannot_set_up_stops_the_runner_gently(cur, start_runner,
                                                                         tmp_path, executor):
    """Children ran tasks, then a replacement fails its setup (reporting it, or dying): the
    runner stops as on SIGTERM (running tasks finish and are stored) and exits 1, instead of
    dying with them or replacing the child again and again."""
    broken, release, started = tmp_path / "broken", tmp_path / "release", tmp_path / "started"
    waiting = queries.enqueue(cur, "t.wait", [str(release), str(started)], dedup=False)
    runner = start_runner("--executor", f"{EXECUTORS}:{executor}",
                          "--concurrency", "2", "--shutdown-timeout", "60",
                          env={"REPROQ_TEST_SETUP_FAILS": str(broken)})
    wait_for(started.exists, message="the waiting task started")
    broken.touch()  # from now on a new child cannot set up
    crashing = queries.enqueue(cur, "t.crash", [], dedup=False, max_attempts=1)
    wait_for(lambda: "a new child process" in runner.log(), message="the replacement's failure")
    assert runner.process.poll() is None, runner.log()  # still waiting for the running task
    release.touch()
    assert runner.wait() == 1, runner.log()
    assert status_of(cur, waiting) == "SUCCESSFUL"
    crashed = queries.get_task_run(cur, crashing)
    assert crashed.status == "FAILED"
    assert crashed.errors_json[0]["exception_class_path"] == "reproq.WorkerCrashed"


def test_stop_gives_up_on_a_stuck_recorder_after_the_grace(cur, start_runner, tmp_path):
    """A stopping runner waits for the database at most --shutdown-timeout + 10 s, also when
    the recorder's call hangs (here its backend is stopped with SIGSTOP)."""
    warm = enqueue(cur, "echo", ["warm"])
    runner = start_runner("--concurrency", "1", "--shutdown-timeout", "1")
    wait_for(lambda: status_of(cur, warm) == "SUCCESSFUL", message="warm-up task")
    cur.execute("select pid from pg_stat_activity where query like '%%complete_many%%'"
                " and pid <> pg_backend_pid()")
    [(recorder_backend,)] = cur.fetchall()
    os.kill(recorder_backend, signal.SIGSTOP)
    try:
        marker = tmp_path / "started"
        enqueue(cur, "sleep", [0, str(marker)])
        wait_for(marker.exists, message="the task started")
        runner.signal(signal.SIGTERM)
        # Before: it waited for as long as the recorder's call hung. Exit 1: something was
        # left unstored.
        assert runner.wait(timeout=40) == 1, runner.log()
        assert "database unavailable" in runner.log()
    finally:
        os.kill(recorder_backend, signal.SIGCONT)


def test_a_lease_the_runner_never_received_runs_out_and_the_task_runs(cur, start_runner):
    """A claim whose reply was lost leaves a task leased to the runner's worker id that the
    runner does not hold. Its heartbeats renew only the tasks it holds, so that lease runs out
    and the task is reclaimed and run (before 0006 they renewed it for as long as it ran)."""
    result_id = enqueue(cur, "echo", ["lost"])
    [lost] = queries.claim(cur, "lost-reply", ["default"], 1, 5)
    assert lost.result_id == result_id
    start_runner("--lease-seconds", "5", worker_id="lost-reply")
    wait_for(lambda: status_of(cur, result_id) == "SUCCESSFUL", timeout=30,
             message="the lost claim's task, once its lease ran out")
    run = queries.get_task_run(cur, result_id)
    assert run.attempts == 2
    assert run.errors_json[0]["exception_class_path"] == "reproq.LeaseExpired"


def test_a_burst_runner_gives_up_on_a_database_that_stays_away(cur, dsn, start_runner,
                                                                tmp_path):
    """--burst cannot tell whether work is left without the database: after
    --shutdown-timeout seconds of outage it stops as on a signal and exits 1 (it used to
    reconnect forever). Its running task is let finish; its outcome cannot be stored."""
    release, started = tmp_path / "release", tmp_path / "started"
    enqueue(cur, "wait_for_file", [str(release), str(started)])
    runner = start_runner("--burst", "--shutdown-timeout", "2")
    wait_for(started.exists, message="the task started")
    cur.connection.close()
    pg.drop_database(dsn)  # with (force): the runner's connections go, and it cannot return
    wait_for(lambda: "unreachable for more than 2 s" in runner.log(), message="giving up")
    release.touch()
    assert runner.wait(timeout=60) == 1, runner.log()
    assert "not stored" in runner.log()


def test_a_burst_runner_does_not_wait_forever_for_a_database_that_is_not_there(start_runner):
    runner = start_runner("--burst", "--shutdown-timeout", "1", "--dsn",
                          "host=/nonexistent-socket-dir dbname=nothing connect_timeout=1",
                          with_dsn=False)
    assert runner.wait(timeout=30) == 1, runner.log()
    assert "unreachable for more than 1 s" in runner.log()


def test_a_database_lost_right_after_the_first_connect_is_waited_for(cur, dsn, connect):
    """The schema check and the registration come right after the first connect; a restart
    in between made the runner stop (ConnectionError, exit 1) instead of waiting for the
    database as it does at any other time. In-process runner; the backend it connected to is
    terminated right after that connect."""
    result_id = enqueue(cur, "echo", ["after a restart"])
    killer = connect()

    class RestartAfterTheFirstConnect(Runner):
        restarted = False

        def _wait_for_database(self) -> bool:
            connected = super()._wait_for_database()
            if connected and not self.restarted:
                self.restarted = True
                killer.execute("select pg_terminate_backend(%s)",
                               (self.db.connection.info.backend_pid,))
            return connected

    runner = RestartAfterTheFirstConnect(RunnerConfig(
        dsn=dsn, executor_factory=functools.partial(NoopExecutor), concurrency=1, burst=True,
        listen=False, worker_id="restarted-at-start"))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert runner.run() == 0
    finally:
        for signum, handler in handlers.items():  # the runner installs its own
            signal.signal(signum, handler)
    assert runner.restarted and status_of(cur, result_id) == "SUCCESSFUL"
