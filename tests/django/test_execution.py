"""DjangoExecutor through run_once: what a runner process does with each claimed task."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.db import connection
from django.tasks import TaskResultStatus, default_task_backend
from django.tasks.signals import task_finished, task_started

from reproq_django.backend import ReproqBackend
from reproq_runner import queries
from reproq_runner.django_glue import DjangoExecutor
from reproq_runner.inprocess import run_once
from reproq_runner.outcome import Failed, Succeeded
from tests.testapp import events
from tests.testapp.models import Customer
from tests.testapp.tasks import (
    add,
    add_async,
    describe,
    exits,
    fail_always,
    interrupts,
    raises_about_a_file_name,
    raises_unprintable,
    record_call,
    remember,
    returns_cycle,
    returns_nan,
    returns_unstorable,
)

pytestmark = pytest.mark.django_db


def finished(result):
    result.refresh()
    return result


def claim_one(queue="default"):
    with connection.cursor() as cursor:
        [claimed] = queries.claim(cursor, "test-worker", [queue])
    return claimed


def test_success_stores_the_json_return_value(drain):
    result = add.enqueue(2, 3)
    assert drain() == 1
    result = finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert result.attempts == len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at == result.last_attempted_at
    assert result.finished_at >= result.started_at


def test_coroutine_tasks_run(drain):
    result = add_async.enqueue(20, 22)
    drain()
    assert finished(result).return_value == 42


def test_the_task_receives_decoded_typed_arguments(drain):
    customer = Customer.objects.create(name="Grace")
    when = datetime(2026, 5, 1, tzinfo=UTC)
    result = describe.enqueue(customer, when, timedelta(seconds=3), Decimal("1.10"),
                              note={"__reproq__": "x"})
    drain()
    value = finished(result).return_value
    assert value["args"] == ["Customer", "datetime", "timedelta", "Decimal"]
    assert value["kwargs"] == {"note": "dict"}
    assert "{'__reproq__': 'x'}" in value["repr"][-1]


def test_a_failure_records_class_message_and_full_traceback_then_retries(drain):
    result = fail_always.enqueue("bad input")
    drain()
    result = finished(result)
    assert result.status == TaskResultStatus.READY  # attempts remain: retried after backoff
    [error] = result.errors
    assert error.exception_class is ValueError
    assert 'raise ValueError(message)' in error.traceback
    assert error.traceback.endswith("ValueError: bad input\n")
    with connection.cursor() as cursor:
        [stored_error] = queries.get_task_run(cursor, int(result.id)).errors_json
    assert stored_error["message"] == "bad input"
    assert stored_error["exception_class_path"] == "builtins.ValueError"


@pytest.mark.parametrize("task, exception", [(exits, SystemExit),
                                             (interrupts, KeyboardInterrupt)])
def test_system_exit_and_keyboard_interrupt_fail_the_attempt(task, exception):
    task.enqueue()
    outcome = DjangoExecutor().execute(claim_one())
    assert isinstance(outcome, Failed) and outcome.retry
    assert outcome.error["exception_class_path"] == f"builtins.{exception.__name__}"


@pytest.mark.parametrize("task, message", [(returns_unstorable, "Unsupported type"),
                                           (returns_nan, "not storable")])
def test_an_unstorable_return_value_fails_for_good(drain, task, message):
    result = task.enqueue()
    drain()
    result = finished(result)
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert message in result.errors[0].traceback


def test_a_return_value_that_contains_itself_fails_for_good_without_running_again(drain):
    """normalize_json's RecursionError went to the executor's own-bug path, which retries:
    the function ran again for each attempt, and task_finished was never sent."""
    events.calls.clear()
    with events.received(task_finished) as finishes:
        result = returns_cycle.enqueue("once")
        drain()
    result = finished(result)
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert result.errors[0].exception_class_path == "builtins.RecursionError"
    assert events.calls == ["once"]
    assert [r.status for r in finishes] == [TaskResultStatus.FAILED]


def test_an_exception_whose_str_raises_is_recorded_as_itself(drain):
    """error_of called str(exc): the attempt was recorded as the executor's RuntimeError."""
    result = raises_unprintable.enqueue()
    drain()
    [error] = finished(result).errors
    assert error.exception_class_path == "tests.testapp.tasks.UnprintableError"
    assert "UnprintableError: <exception str() failed>" in error.traceback
    with connection.cursor() as cursor:
        run = queries.get_task_run(cursor, int(result.id))
    assert run.status == "READY" and run.errors_json[0]["message"] == "<exception str() failed>"


def test_a_lone_surrogate_in_an_error_message_is_stored_escaped_and_retried(drain):
    """A message built with os.fsdecode holds a lone surrogate, which jsonb refuses: the
    outcome could not be stored (UnstorableOutcome in a runner, the real error lost and no
    retry; run_once raised InvalidSpec and left the batch RUNNING)."""
    other = add.enqueue(1, 2)
    result = raises_about_a_file_name.enqueue()
    drain()
    assert finished(other).status == TaskResultStatus.SUCCESSFUL
    with connection.cursor() as cursor:
        run = queries.get_task_run(cursor, int(result.id))
    assert run.status == "READY" and run.attempts == 1
    [error] = run.errors_json
    assert error["exception_class_path"] == "builtins.FileNotFoundError"
    assert error["message"] == "missing input report-\\udcff.csv"


def test_task_finished_sees_the_metadata_the_task_saved(drain):
    with events.received(task_finished) as seen:
        result = remember.enqueue("hello")
        drain()
    assert [r.metadata for r in seen] == [{"note": "hello", "attempt": 1}]
    assert finished(result).metadata == {"note": "hello", "attempt": 1}


@pytest.mark.django_db(transaction=True)
@override_settings(USE_TZ=False, TIME_ZONE="America/New_York")
def test_without_use_tz_a_runner_shows_the_naive_local_times_get_result_shows(queue_name):
    """A runner claims on a plain psycopg connection (aware times): the running result showed
    UTC-aware times beside a naive local finished_at (subtracting them raised TypeError)."""
    import psycopg

    due_since = datetime(2000, 1, 1, 7)  # naive: the default time zone's, and due at once
    result = add.using(queue_name=queue_name, run_after=due_since).enqueue(1, 2)
    settings = connection.settings_dict
    with events.received(task_finished) as seen, psycopg.connect(
            dbname=settings["NAME"], host=settings["HOST"], port=settings["PORT"],
            user=settings["USER"], autocommit=True) as runner_connection:
        assert run_once(runner_connection, DjangoExecutor(), [queue_name]) == 1
    [running] = seen
    stored = default_task_backend.get_result(result.id)
    names = ("enqueued_at", "started_at", "last_attempted_at")
    assert [getattr(running, name) for name in names] == [getattr(stored, name) for name in names]
    assert running.task.run_after == stored.task.run_after == due_since
    assert running.finished_at - running.started_at >= timedelta(0)


def test_context_attempt_result_and_saved_metadata(drain):
    result = remember.enqueue("hello")
    drain()
    result = finished(result)
    assert result.return_value == {"attempt": 1, "id": result.id, "status": "RUNNING"}
    assert result.metadata == {"note": "hello", "attempt": 1}


def test_signals_fire_in_the_running_process_with_the_backend_class(drain):
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.status, task_result.id))

    task_started.connect(receiver)
    task_finished.connect(receiver)
    try:
        result = add.enqueue(1, 1)
        drain()
    finally:
        task_started.disconnect(receiver)
        task_finished.disconnect(receiver)
    assert seen == [(ReproqBackend, TaskResultStatus.RUNNING, result.id),
                    (ReproqBackend, TaskResultStatus.SUCCESSFUL, result.id)]


def test_a_raising_receiver_is_logged_and_does_not_change_the_outcome(drain, caplog):
    def broken(sender, task_result, **kwargs):
        raise RuntimeError("receiver bug")

    task_finished.connect(broken)
    try:
        result = add.enqueue(4, 4)
        with caplog.at_level(logging.ERROR, logger="reproq"):
            drain()
    finally:
        task_finished.disconnect(broken)
    assert finished(result).return_value == 8
    [record] = [r for r in caplog.records if r.name == "reproq"]
    assert "task_finished receiver" in record.getMessage()
    assert "receiver bug" in str(record.exc_info[1])


def test_a_psql_row_outside_the_allow_list_never_executes(drain, monkeypatch):
    ran = []
    monkeypatch.setattr("os.system", lambda command: ran.append(command))
    with connection.cursor() as cursor:
        result_id = queries.enqueue(cursor, "os.system", ["touch /tmp/pwned"])
    drain()
    with connection.cursor() as cursor:
        run = queries.get_task_run(cursor, result_id)
    assert ran == []
    assert run.status == "FAILED" and run.attempts == 1  # refused for good, not retried
    assert "outside the allowed task modules" in run.errors_json[0]["message"]
    assert run.errors_json[0]["exception_class_path"].endswith("TaskNotAllowed")


def test_an_executor_follows_settings_changes(drain):
    executor = DjangoExecutor()
    executor.setup()
    first = add.enqueue(1, 1)
    drain(executor=executor)
    assert finished(first).status == TaskResultStatus.SUCCESSFUL
    with override_settings(REPROQ_ALLOWED_TASK_MODULES=["tests.testapp.other_tasks"]):
        with connection.cursor() as cursor:  # as psql could: the backend would refuse it
            second = queries.enqueue(cursor, add.module_path, [2, 2])
        drain(executor=executor)
    with connection.cursor() as cursor:
        run = queries.get_task_run(cursor, second)
    assert run.status == "FAILED"
    assert "outside the allowed task modules" in run.errors_json[0]["message"]


def test_refusal_happens_before_import(monkeypatch):
    imported = []
    monkeypatch.setattr("reproq_runner.django_glue._Attempt._resolve_task",
                        _resolve_spy(imported), raising=True)
    with connection.cursor() as cursor:
        queries.enqueue(cursor, "tests.testapp.not_tasks.thing")
    outcome = DjangoExecutor(allowed_task_modules=["tests.testapp.tasks"]).execute(claim_one())
    assert isinstance(outcome, Failed) and not outcome.retry
    assert imported == []


def _resolve_spy(imported):
    from reproq_runner.django_glue import _Attempt

    original = _Attempt._resolve_task

    def spy(self):
        import django.utils.module_loading as loading

        real = loading.import_string
        loading.import_string = lambda path: imported.append(path) or real(path)
        try:
            return original(self)
        finally:
            loading.import_string = real

    return spy


def test_a_path_that_is_not_a_task_is_refused():
    with connection.cursor() as cursor:
        queries.enqueue(cursor, "tests.testapp.tasks.events")
    outcome = DjangoExecutor().execute(claim_one())
    assert isinstance(outcome, Failed) and not outcome.retry
    assert "not a django.tasks.Task" in outcome.error["message"]


def test_the_allow_list_defaults_to_installed_apps_tasks_modules():
    executor = DjangoExecutor()
    executor.setup()
    assert executor.allowed_task_modules == ("tests.testapp.tasks",)


def test_allow_list_prefixes_match_whole_module_names():
    from reproq_django.conf import is_allowed_task_path

    allowed = ("tests.testapp.tasks",)
    assert is_allowed_task_path("tests.testapp.tasks.add", allowed)
    assert is_allowed_task_path("tests.testapp.tasks.sub.add", allowed)
    assert not is_allowed_task_path("tests.testapp.tasks_evil.add", allowed)
    assert not is_allowed_task_path("os.system", allowed)


def test_execute_returns_outcomes_and_run_once_is_usable_in_process():
    events.calls.clear()
    result = record_call.enqueue("a")
    executor = DjangoExecutor(allowed_task_modules=["tests.testapp"], database="default")
    claimed = claim_one()
    outcome = executor.execute(claimed)
    assert outcome == Succeeded('"a"') and events.calls == ["a"]
    with connection.cursor() as cursor:
        queries.complete(cursor, claimed.result_id, claimed.lease_token, "a")
    assert finished(result).return_value == "a"
    assert run_once(connection, executor, ["default"]) == 0


def test_retries_until_max_attempts_then_failed(drain):
    result = fail_always.enqueue("again")
    claimed = claim_one()
    executor = DjangoExecutor()
    for _ in range(claimed.max_attempts):
        outcome = executor.execute(claimed)
        with connection.cursor() as cursor:
            status = queries.fail(cursor, claimed.result_id, claimed.lease_token,
                                  outcome.error, retry=outcome.retry, retry_in_seconds=0)
        if status != "READY":
            break
        claimed = claim_one()
    result = finished(result)
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == result.attempts == 3 == len(result.worker_ids)
    assert default_task_backend.get_result(result.id) == result
