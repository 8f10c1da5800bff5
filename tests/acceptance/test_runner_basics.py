"""The runner runs tasks: LISTEN wake-ups, --no-listen polling, --burst, --max-tasks, the
registry, per-attempt logs, the schema check, and both entry points."""

import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from reproq_runner import queries
from reproq_runner.inprocess import run_once
from tests.acceptance.conftest import ROOT, enqueue, status_of, wait_for, worker_registered
from tests.acceptance.executors import BrokenPromiseExecutor


def test_burst_runs_what_is_due_and_exits_zero(cur, start_runner):
    ids = [enqueue(cur, "echo", [i]) for i in range(20)]
    runner = start_runner("--burst", "--concurrency", "2")
    assert runner.wait() == 0, runner.log()
    runs = queries.get_task_runs(cur, ids)
    assert [r.status for r in runs] == ["SUCCESSFUL"] * 20
    assert [r.return_json for r in runs] == list(range(20))
    assert all(r.worker_ids == ["runner-1"] for r in runs)
    assert not worker_registered(cur, "runner-1")


def test_listen_wakeup_runs_tasks_without_polling(cur, start_runner):
    runner = start_runner("--concurrency", "2", "--poll-interval", "3600")
    first = enqueue(cur, "echo", [1])
    wait_for(lambda: status_of(cur, first) == "SUCCESSFUL", message="first task")
    # Polling is hourly: only the NOTIFY of this enqueue can wake the runner now.
    second = enqueue(cur, "echo", [2])
    wait_for(lambda: status_of(cur, second) == "SUCCESSFUL", message="NOTIFY wake-up")
    assert worker_registered(cur, runner.worker_id)
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.log()
    assert not worker_registered(cur, runner.worker_id)


def test_no_listen_polls(cur, start_runner):
    runner = start_runner("--concurrency", "1", "--no-listen", "--poll-interval", "0.1")
    ids = [enqueue(cur, "echo", [i]) for i in range(3)]
    wait_for(lambda: all(status_of(cur, i) == "SUCCESSFUL" for i in ids), message="polling")
    cur.execute("select count(*) from pg_stat_activity where datname = current_database()"
                " and query ilike 'listen%%'")
    assert cur.fetchone()[0] == 0
    runner.signal(signal.SIGINT)
    assert runner.wait() == 0, runner.log()


def test_max_tasks_exits_after_that_many(cur, start_runner):
    ids = [enqueue(cur, "echo", [i]) for i in range(5)]
    runner = start_runner("--concurrency", "1", "--max-tasks", "2")
    assert runner.wait() == 0, runner.log()
    assert sorted(r.status for r in queries.get_task_runs(cur, ids)) == (
        ["READY"] * 3 + ["SUCCESSFUL"] * 2)


def test_worker_row_is_kept_current(cur, start_runner):
    runner = start_runner("--concurrency", "3", "--queues", "default,other")
    wait_for(lambda: worker_registered(cur, runner.worker_id), message="registration")
    cur.execute("select pid, queues, concurrency, last_seen_at from reproq.workers"
                " where worker_id = %s", (runner.worker_id,))
    pid, queues, concurrency, first_seen = cur.fetchone()
    assert (pid, queues, concurrency) == (runner.pid, ["default", "other"], 3)

    def seen_again():
        cur.execute("select last_seen_at from reproq.workers where worker_id = %s",
                    (runner.worker_id,))
        return cur.fetchone()[0] > first_seen

    wait_for(seen_again, message="heartbeat updating last_seen_at")


def test_async_task_and_other_queue(cur, start_runner):
    coroutine = queries.enqueue(cur, "tests.testapp.tasks.add_async", [2, 3], dedup=False)
    other = enqueue(cur, "echo", [7], queue_name="other")
    runner = start_runner("--burst", "--queues", "default,other")
    assert runner.wait() == 0, runner.log()
    assert queries.get_task_run(cur, coroutine).return_json == 5
    assert queries.get_task_run(cur, other).status == "SUCCESSFUL"


def test_logs_dir_captures_each_attempt(cur, start_runner, tmp_path):
    result_id = enqueue(cur, "chatty", ["hello"])
    runner = start_runner("--burst", "--logs-dir", str(tmp_path / "logs"))
    assert runner.wait() == 0, runner.log()
    run = queries.get_task_run(cur, result_id)
    assert run.status == "SUCCESSFUL"
    log_file = Path(urlparse(run.logs_uri).path)
    assert log_file.is_relative_to(tmp_path / "logs") and log_file.name.endswith("-attempt-1.log")
    text = log_file.read_text()
    assert "stdout says hello" in text and "stderr says hello" in text
    assert "raw fd write" in text
    assert "stdout says" not in runner.log()


def test_refuses_to_start_on_an_outdated_schema(empty_dsn, start_runner):
    runner = start_runner("--burst", command=[sys.executable, "-m", "reproq_runner", "worker",
                                              "--dsn", empty_dsn], with_dsn=False)
    assert runner.wait() == 3
    assert "migrate" in runner.log()


def test_manage_py_reproq_worker_uses_django_settings(cur, start_runner):
    ids = [enqueue(cur, "echo", [i]) for i in range(3)]
    runner = start_runner("--burst", command=[sys.executable, "-m", "django", "reproq",
                                              "worker"], with_dsn=False)
    assert runner.wait() == 0, runner.log()
    assert {status_of(cur, i) for i in ids} == {"SUCCESSFUL"}


def test_a_logs_dir_that_cannot_be_written_does_not_stop_the_tasks(cur, start_runner,
                                                                      tmp_path):
    """The task runs and its output goes where the runner's does; before, the child died on
    the error, and every task was recorded as a crash of the process that ran it."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    result_id = enqueue(cur, "chatty", ["hello from the task"])
    runner = start_runner("--burst", "--logs-dir", str(not_a_folder))
    assert runner.wait() == 0, runner.log()
    assert status_of(cur, result_id) == "SUCCESSFUL"
    log = runner.log()
    assert "cannot write the task's log file" in log and "hello from the task" in log


def test_dsn_password_never_logged(start_runner, dsn):
    runner = start_runner("--burst", command=[
        sys.executable, "-m", "reproq_runner", "worker",
        "--dsn", "host=/nonexistent-reproq dbname=x user=x password=hunter2",
    ], with_dsn=False)
    wait_for(lambda: "waiting for the database" in runner.log(), message="startup warning")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    assert "hunter2" not in runner.log()


def test_children_leave_django_task_info_records_unbuilt_when_no_handler_shows_them(
        cur, start_runner):
    """The test settings keep Django's default logging with DEBUG = False: the forkserver
    raises django.tasks to WARNING (reproq_runner.django_task_logs) and children inherit it."""
    result_id = enqueue(cur, "effective_log_level", ["django.tasks"])
    runner = start_runner("--burst", "--concurrency", "1")
    assert runner.wait() == 0, runner.log()
    assert queries.get_task_run(cur, result_id).return_json == 30


def test_an_executor_that_breaks_its_promise_fails_the_task_for_good(cur, start_runner, conn):
    """None or a string crashed the child (recorded as WorkerCrashed, retried although the task
    ran); a Failed whose error is not a dict killed the recorder's thread, and the runner then
    stored nothing more, renewing its leases for ever. run_once returned them unrecorded."""
    kinds = ["none", "text", "failed-text"]
    ids = [enqueue(cur, "echo", [kind]) for kind in kinds]
    runner = start_runner("--burst", "--concurrency", "1", "--executor",
                          "tests.acceptance.executors:BrokenPromiseExecutor")
    assert runner.wait() == 0, runner.log()
    more = [enqueue(cur, "echo", [kind]) for kind in kinds]
    assert run_once(conn, BrokenPromiseExecutor()) == 3
    for result_id in ids + more:
        run = queries.get_task_run(cur, result_id)
        assert (run.status, run.attempts) == ("FAILED", 1)
        assert run.errors_json[0]["exception_class_path"] == "reproq.InvalidOutcome"


@pytest.mark.parametrize("executor, message", [
    ("nosuch.module:X", "--executor 'nosuch.module:X': ModuleNotFoundError"),
    ("reproq_runner.outcome:Nope", "AttributeError"),
    ("reproq_runner.errors:BY_SQLSTATE", "is a dict, not a callable"),
    ("reproq_runner.outcome", "--executor must be module:callable"),
])
def test_an_executor_path_that_names_no_factory_is_a_bad_flag(start_runner, executor, message):
    runner = start_runner("--burst", "--executor", executor)
    assert runner.wait() == 2, runner.log()
    assert message in runner.log() and "Traceback" not in runner.log()


def test_a_dsn_libpq_cannot_read_is_a_bad_flag_and_hides_the_password(start_runner):
    """migrate printed a traceback with the password in it; the worker waited for ever."""
    bad = "postgresql://app:hunter2@[::1/app"
    runner = start_runner(command=[sys.executable, "-m", "reproq_runner", "worker",
                                   "--dsn", bad], with_dsn=False)
    assert runner.wait() == 2, runner.log()
    migrating = subprocess.run([sys.executable, "-m", "reproq_runner", "migrate", "--dsn", bad],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert migrating.returncode == 2, migrating.stderr
    for output in (runner.log(), migrating.stderr):
        assert "--dsn is not a connection string libpq can read" in output
        assert "hunter2" not in output and "Traceback" not in output
