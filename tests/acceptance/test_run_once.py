"""reproq_runner.run_once: drains in the calling process through the runner's engine."""

import pytest

from reproq_runner import queries, run_once
from reproq_runner.errors import InvalidArgument
from reproq_runner.outcome import Failed, Succeeded
from tests.acceptance.conftest import enqueue


class RecordingExecutor:
    def __init__(self):
        self.seen = []

    def setup(self):
        pass

    # First argument -> the retry flag of the failure it returns ("unsure" leaves it None:
    # the default, retry).
    FAILURES = {"fail": False, "unsure": None}

    def execute(self, task):
        self.seen.append(task.result_id)
        if task.args and task.args[0] in self.FAILURES:
            return Failed({"exception_class_path": "x.Boom", "message": "boom",
                           "traceback": ""}, retry=self.FAILURES[task.args[0]])
        if task.args and task.args[0] == "raise":
            raise SystemExit("executor broke its promise")
        return Succeeded(queries.dumps_json({"ok": task.result_id}))


def test_run_once_runs_in_process_and_records_outcomes(conn, cur):
    ok = enqueue(cur, "echo", [1])
    failing = enqueue(cur, "echo", ["fail"])
    raising = enqueue(cur, "echo", ["raise"], max_attempts=1)
    executor = RecordingExecutor()
    assert run_once(conn, executor, batch_size=2, worker_id="tests") == 3
    assert sorted(executor.seen) == sorted([ok, failing, raising])
    assert queries.get_task_run(cur, ok).return_json == {"ok": ok}
    assert queries.get_task_run(cur, failing).status == "FAILED"
    broken = queries.get_task_run(cur, raising)
    assert broken.status == "FAILED"
    assert broken.errors_json[-1]["exception_class_path"] == "builtins.SystemExit"


def test_run_once_respects_max_tasks(conn, cur):
    ids = [enqueue(cur, "echo", [i]) for i in range(5)]
    assert run_once(conn, RecordingExecutor(), max_tasks=2) == 2
    assert sorted(queries.status_counts(cur).items()) == [("READY", 3), ("SUCCESSFUL", 2)]
    assert len(ids) == 5


def test_a_failure_whose_retry_an_executor_left_none_is_retried(conn, cur):
    """reproq.fail refuses a null p_retry since SQL 0007; the engine passes the default."""
    unsure = enqueue(cur, "echo", ["unsure"])
    assert run_once(conn, RecordingExecutor(), max_tasks=1) == 1
    run = queries.get_task_run(cur, unsure)
    assert (run.status, run.attempts) == ("READY", 1)
    assert run.errors_json[-1]["message"] == "boom"


@pytest.mark.parametrize("call", [
    lambda conn: run_once(conn, RecordingExecutor(), "emails"),
    lambda conn: run_once(conn, RecordingExecutor(), ["emails"], batch_size=0),
    lambda conn: queries.claim(conn.cursor(), "w", "emails"),
])
def test_a_queue_name_for_a_list_or_no_batch_is_refused_not_an_empty_drain(conn, cur, call):
    """A string was read as one queue per letter ("e", "m", ...), and batch_size 0 claimed
    nothing: both returned at once, with tasks due."""
    result_id = enqueue(cur, "echo", [1], queue_name="emails")
    with pytest.raises(InvalidArgument):
        call(conn)
    assert queries.get_task_run(cur, result_id).status == "READY"
