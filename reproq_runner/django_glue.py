"""The Django side of running a claimed task: :class:`DjangoExecutor`.

It implements ``reproq_runner.outcome.Executor``: the runner core hands it a ``ClaimedTask``
and records the ``Succeeded``/``Failed`` it returns. One attempt goes:

1. refuse a task path outside the allow-list *without importing it*;
2. import the path and require a ``django.tasks.Task``;
3. decode the arguments (``reproq_django.serialization``; model references are fetched);
4. send ``task_started``, call the function (sync or coroutine), send ``task_finished``;
5. JSON-normalise the return value.

Retry rules: an exception raised by the task (``SystemExit`` and ``KeyboardInterrupt``
included) is a failed attempt that retries while attempts remain. Failures that the same
stored row would reproduce on every attempt do not retry: a refused or non-Task path,
arguments that cannot be decoded, and a return value that cannot be stored as JSON (the
function ran to completion, so running it again would repeat its side effects for nothing).
An import error does retry: web and runner code may briefly differ during a deploy.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import django
from django.apps import apps
from django.db import connections
from django.tasks import Task, TaskResultStatus, signals
from django.utils import module_loading, timezone
from django.utils.json import normalize_json

from reproq_django import conf, serialization
from reproq_django.results import (ReproqTaskContext, ids_name_alias, running_task_result,
                                   task_as_stored, task_error)
from reproq_runner import queries
from reproq_runner.outcome import Failed, Outcome, Succeeded, error_of
from reproq_runner.queries import ClaimedTask

logger = logging.getLogger("reproq")


class TaskNotAllowed(Exception):
    """The task path is outside the allowed task modules; it was not imported."""


class NotATask(TypeError):
    """The task path does not name a ``django.tasks.Task``."""


class DjangoExecutor:
    """Runs claimed tasks in this process with Django set up.

    ``allowed_task_modules``: task-path prefixes that may be imported (default: the
    ``REPROQ_ALLOWED_TASK_MODULES`` setting, else each installed app's ``tasks`` module).
    ``database``: the Django alias of the queue database (default: the alias the task's
    queue routes to).
    """

    def __init__(self, allowed_task_modules=None, database=None):
        self._configured_modules = (
            None if allowed_task_modules is None else tuple(allowed_task_modules)
        )
        self.database = database
        self.allowed_task_modules: tuple[str, ...] | None = None
        # Resolved once each, and forgotten when a REPROQ_* setting changes (conf.generation:
        # a runner's settings never do, a test's may).
        self._tasks: dict[str, tuple[Any, type]] = {}  # task path -> (Task, signal sender)
        self._routes: dict[str, tuple[str, bool]] = {}  # queue -> (alias, ids carry alias)
        self._stored_tasks: dict[tuple[str, str, int], Any] = {}  # see stored_task()
        self._generation = conf.generation

    def setup(self) -> None:
        if not apps.ready:
            django.setup()
        if self._configured_modules is not None:
            self.allowed_task_modules = self._configured_modules
        else:
            self.allowed_task_modules = conf.allowed_task_modules()

    def execute(self, task: ClaimedTask) -> Outcome:
        if self._generation != conf.generation:
            self._forget_settings()
        try:
            _drop_broken_connections()
            return _Attempt(self, task).run()
        except BaseException as exc:  # a bug of ours must still not kill the runner
            logger.exception("reproq: executor error on task %s", task.result_id)
            return failed(exc, retry=True)

    def _forget_settings(self) -> None:
        self._generation = conf.generation
        self._tasks.clear()
        self._routes.clear()
        self._stored_tasks.clear()
        if self._configured_modules is None and self.allowed_task_modules is not None:
            self.allowed_task_modules = conf.allowed_task_modules()

    def route(self, queue_name: str) -> tuple[str, bool]:
        """The alias holding ``queue_name`` and whether public result ids name it."""
        route = self._routes.get(queue_name)
        if route is None:
            alias = self.database or conf.database_for_queue(queue_name)
            route = self._routes[queue_name] = (alias, ids_name_alias(alias))
        return route

    def stored_task(self, task, claimed: ClaimedTask):
        """``task`` as the claimed row stores it (queue, priority, run_after), shared by the
        attempts of one (task, queue, priority) that were not deferred."""
        if claimed.run_after != claimed.enqueued_at:
            return task_as_stored(task, claimed, task.backend)
        key = (claimed.task_path, claimed.queue_name, claimed.priority)
        stored = self._stored_tasks.get(key)
        if stored is None:
            stored = self._stored_tasks[key] = task_as_stored(task, claimed, task.backend)
        return stored

    def task_for(self, attempt: _Attempt) -> tuple[Any, type]:
        """The Task of the attempt's path and its signal sender, resolved once per path
        (failures are not remembered: an import error may be a deploy in progress)."""
        path = attempt.claimed.task_path
        resolved = self._tasks.get(path)
        if resolved is None:
            task = attempt._resolve_task()
            resolved = self._tasks[path] = (task, _backend_class(task))
        return resolved


def _drop_broken_connections() -> None:
    """Close Django connections that an error left unusable (say, PostgreSQL restarted under
    the previous attempt), so this attempt reconnects. Healthy connections are kept, and only
    connections that saw an error pay for the check; none inside a transaction is touched."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or not connection.errors_occurred:
            continue
        if connection.in_atomic_block:
            continue
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


class _Attempt:
    """One attempt of one claimed task."""

    def __init__(self, executor: DjangoExecutor, claimed: ClaimedTask):
        if executor.allowed_task_modules is None:
            executor.setup()
        self.executor = executor
        self.claimed = claimed
        self.alias, self.id_with_alias = executor.route(claimed.queue_name)

    def run(self) -> Outcome:
        try:
            task, sender = self.executor.task_for(self)
        except (TaskNotAllowed, NotATask) as exc:
            logger.warning("reproq: task %s refused: %s", self.claimed.result_id, exc)
            return failed(exc, retry=False)
        except Exception as exc:
            return failed(exc, retry=True)
        try:
            args, kwargs = self._decode_arguments()
        except Exception as exc:
            return failed(exc, retry=False)
        running = self._running_result(task)
        _send(sender, "task_started", running)
        try:
            value = self._call(task, running, args, kwargs)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the attempt too
            return self._finish_failed(sender, running, exc, retry=True)
        try:
            return_json, stored_value = return_value_as_json(value)
        except (TypeError, ValueError, RecursionError) as exc:  # a cycle, or nested too deep
            # The function ran: a value JSON cannot store fails for good, never runs it again.
            return self._finish_failed(sender, running, exc, retry=False)
        _mark_succeeded(running, stored_value)
        _send(sender, "task_finished", running)
        return Succeeded(return_json)

    def _resolve_task(self):
        path = self.claimed.task_path
        allowed = self.executor.allowed_task_modules
        if not conf.is_allowed_task_path(path, allowed):
            raise TaskNotAllowed(
                f"task path {path!r} is outside the allowed task modules {list(allowed)}; it was "
                "not imported. Add its module to REPROQ_ALLOWED_TASK_MODULES (or "
                "--allowed-task-modules) if it is a real task."
            )
        target = module_loading.import_string(path)  # looked up now: tests spy on it
        if not isinstance(target, Task):
            raise NotATask(f"{path!r} is a {type(target).__name__}, not a django.tasks.Task "
                           "(decorate the function with @task)")
        return target

    def _decode_arguments(self) -> tuple[list, dict]:
        return (serialization.decode(self.claimed.args),
                serialization.decode(self.claimed.kwargs))

    def _running_result(self, task):
        claimed = self.claimed
        result_id = (f"{self.alias}:{claimed.result_id}" if self.id_with_alias
                     else str(claimed.result_id))
        return running_task_result(self.executor.stored_task(task, claimed), claimed,
                                   task.backend, result_id)

    def _call(self, task, running, args: list, kwargs: dict) -> Any:
        if task.takes_context:
            return task.call(self._context(running), *args, **kwargs)
        return task.call(*args, **kwargs)

    def _context(self, running):
        def save(metadata: dict) -> None:
            self._save_metadata(metadata)
            # task_finished receivers, and the context's task_result, see what was saved.
            object.__setattr__(running, "metadata", dict(metadata))

        return ReproqTaskContext(task_result=running, metadata=dict(running.metadata),
                                 _saver=save)

    def _save_metadata(self, metadata: dict) -> None:
        with connections[self.alias].cursor() as cursor:
            queries.save_metadata(cursor, self.claimed.result_id, self.claimed.lease_token,
                                  metadata)

    def _finish_failed(self, sender, running, exc: BaseException, retry: bool) -> Failed:
        """Called inside the ``except`` block, so ``task_finished`` receivers (Django's own
        logger among them) see the exception in ``sys.exc_info()``."""
        outcome = failed(exc, retry=retry)
        retries = retry and self.claimed.attempts < self.claimed.max_attempts
        _mark_failed(running, outcome.error, retries)
        _send(sender, "task_finished", running)
        return outcome


def return_value_as_json(value: Any) -> tuple[str, Any]:
    """The JSON text stored as the return value and the value a reader of it gets back;
    ``TypeError("Unsupported type: …")`` for values JSON cannot carry, ``InvalidSpec`` (a
    ValueError) for NaN, Infinity and NUL."""
    if value is None:
        return "null", None
    text = queries.dumps_json(normalize_json(value))
    return text, json.loads(text)


def failed(exc: BaseException, retry: bool) -> Failed:
    return Failed(error=error_of(exc), retry=retry)


def _backend_class(task) -> type:
    try:
        return type(task.get_backend())
    except Exception:
        from reproq_django.backend import ReproqBackend

        return ReproqBackend


def _send(sender: type, signal_name: str, task_result) -> None:
    """Send a django.tasks signal; a receiver that raises is logged, never propagated."""
    signal = getattr(signals, signal_name)
    try:
        responses = signal.send_robust(sender, task_result=task_result)
    except BaseException:
        logger.exception("reproq: a %s receiver raised for task %s", signal_name, task_result.id)
        return
    for receiver, response in responses:
        if isinstance(response, BaseException):
            logger.error("reproq: %s receiver %r raised for task %s", signal_name, receiver,
                         task_result.id, exc_info=response)


# The running result is updated in place for task_finished, as Django's own ImmediateBackend
# does: a receiver (or the task's context) holding it sees the final state.

def _mark_succeeded(running, return_value: Any) -> None:
    object.__setattr__(running, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(running, "raw_status", "SUCCESSFUL")
    object.__setattr__(running, "finished_at", timezone.now())
    object.__setattr__(running, "_return_value", return_value)


def _mark_failed(running, error: dict, retries: bool) -> None:
    status = "READY" if retries else "FAILED"
    object.__setattr__(running, "status", TaskResultStatus[status])
    object.__setattr__(running, "raw_status", status)
    object.__setattr__(running, "finished_at", None if retries else timezone.now())
    object.__setattr__(running, "errors", [*running.errors, task_error(error)])
