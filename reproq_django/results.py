"""Stored task runs as Django ``TaskResult`` objects, and the context a running task sees.

One function, :func:`task_result_from_run`, turns a ``reproq.task_runs`` row into a result;
the backend (enqueue, get_result) and the executor (signals, context) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from django.conf import settings
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from reproq_django import conf, serialization
from reproq_runner.queries import ClaimedTask, TaskRun

# reproq's statuses as Django's: WAITING is not runnable yet, CANCELLED did not succeed.
DJANGO_STATUS = {
    "READY": TaskResultStatus.READY,
    "WAITING": TaskResultStatus.READY,
    "RUNNING": TaskResultStatus.RUNNING,
    "SUCCESSFUL": TaskResultStatus.SUCCESSFUL,
    "FAILED": TaskResultStatus.FAILED,
    "CANCELLED": TaskResultStatus.FAILED,
}

# Attributes TaskResult.refresh() copies, plus reproq's own.
REFRESH_ATTRS = ("errors", "_return_value", "finished_at", "started_at", "last_attempted_at",
                 "status", "enqueued_at", "worker_ids", "raw_status", "metadata")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReproqTaskResult(TaskResult):
    """Django's TaskResult plus reproq's ``raw_status`` (e.g. ``"CANCELLED"``) and the task's
    saved ``metadata``. ``args``/``kwargs`` hold decoded values (see serialization), already
    as JSON shapes them, so they are not normalised again."""

    raw_status: str = "READY"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        pass

    def refresh(self):
        self._copy_from(self.task.get_backend().get_result(self.id))

    async def arefresh(self):
        self._copy_from(await self.task.get_backend().aget_result(self.id))

    def _copy_from(self, other: TaskResult) -> None:
        for attr in REFRESH_ATTRS:
            if hasattr(other, attr):
                object.__setattr__(self, attr, getattr(other, attr))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReproqTaskContext(TaskContext):
    """What a ``takes_context=True`` task receives: ``attempt``, ``task_result``, and reproq's
    ``metadata`` dict, persisted by ``save_metadata()`` (fenced by the attempt's lease)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    _saver: Callable[[dict[str, Any]], None] | None = None

    def save_metadata(self) -> None:
        if self._saver is None:
            raise RuntimeError("this context is not attached to a running reproq task")
        self._saver(self.metadata)


def public_result_id(alias: str, result_id: int) -> str:
    """The id Django code sees: ``"123"``, or ``"alias:123"`` (see :func:`ids_name_alias`)."""
    return f"{alias}:{result_id}" if ids_name_alias(alias) else str(result_id)


def ids_name_alias(alias: str) -> bool:
    """Whether result ids of tasks in ``alias`` read ``alias:id``: with
    REPROQ_RESULT_ID_WITH_ALIAS, and always outside the default queue database, where a plain
    id is looked up (a plain id of another database would name a task there)."""
    return conf.result_id_with_alias() or alias != conf.default_db_alias()


def parse_result_id(result_id: Any, default_alias: str, known_aliases: list[str]) -> tuple[str, int]:
    """``"123"`` or ``"alias:123"`` as (alias, id); anything else does not exist."""
    text = str(result_id)
    alias, _, number = text.rpartition(":")
    alias = alias or default_alias
    if alias not in known_aliases or not number.isascii() or not number.isdigit():
        raise TaskResultDoesNotExist(text)
    value = int(number)
    if not 0 < value < 2**63:
        raise TaskResultDoesNotExist(text)
    return alias, value


def django_time(value):
    """``value`` as Django's own connection reads a timestamptz: with ``USE_TZ = False`` naive
    in the default time zone (a runner's claims come from a plain psycopg connection, aware;
    a caller may pass an aware run_after), otherwise unchanged."""
    if value is None or settings.USE_TZ or timezone.is_naive(value):
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def task_as_stored(task: Task, run: TaskRun | ClaimedTask, backend_alias: str) -> Task:
    """``task`` as this run was enqueued (queue, priority, run_after), without validating it
    again: a stored row is a fact, not a request."""
    stored = object.__new__(type(task))
    for task_field in fields(task):
        object.__setattr__(stored, task_field.name, getattr(task, task_field.name))
    deferred = django_time(run.run_after) if run.run_after != run.enqueued_at else None
    for name, value in (("queue_name", run.queue_name), ("priority", run.priority),
                        ("run_after", deferred), ("backend", backend_alias)):
        object.__setattr__(stored, name, value)
    return stored


def task_result_from_run(task: Task, run: TaskRun, backend_alias: str,
                         result_id: str) -> ReproqTaskResult:
    return _new_result(
        task=task_as_stored(task, run, backend_alias), id=result_id,
        status=DJANGO_STATUS[run.status], raw_status=run.status,
        enqueued_at=run.enqueued_at, started_at=run.started_at,
        last_attempted_at=run.last_attempted_at, finished_at=run.finished_at,
        args=serialization.decode(run.spec_json["args"], fetch_models=False),
        kwargs=serialization.decode(run.spec_json["kwargs"], fetch_models=False),
        backend=backend_alias, errors=[task_error(entry) for entry in run.errors_json],
        worker_ids=list(run.worker_ids), metadata=dict(run.metadata_json),
        return_value=run.return_json if run.status == "SUCCESSFUL" else None,
    )


def enqueued_task_result(task: Task, result_id: str, enqueued_at, args: list[Any],
                         kwargs: Any, metadata: dict[str, Any] | None,
                         backend_alias: str) -> ReproqTaskResult:
    """What :func:`task_result_from_run` returns for a row enqueue has just inserted, without
    reading it back: ``task`` is already as stored (see :func:`task_as_stored`), ``args`` and
    ``kwargs`` are decoded (``serialization.encode_call``)."""
    return _new_result(
        task=task, id=result_id, status=TaskResultStatus.READY, raw_status="READY",
        enqueued_at=enqueued_at, started_at=None, last_attempted_at=None, finished_at=None,
        args=args, kwargs=kwargs, backend=backend_alias, errors=[], worker_ids=[],
        metadata=dict(metadata) if metadata else {}, return_value=None,
    )


def running_task_result(stored_task: Task, claimed: ClaimedTask, backend_alias: str,
                        result_id: str) -> ReproqTaskResult:
    """What :func:`task_result_from_run` returns for a task a runner has just claimed, built
    from the claim itself: ``stored_task`` is the task as stored (:func:`task_as_stored`)."""
    return _new_result(
        task=stored_task, id=result_id, status=TaskResultStatus.RUNNING, raw_status="RUNNING",
        enqueued_at=django_time(claimed.enqueued_at), started_at=django_time(claimed.started_at),
        last_attempted_at=django_time(claimed.last_attempted_at), finished_at=None,
        args=serialization.decode(claimed.args, fetch_models=False),
        kwargs=serialization.decode(claimed.kwargs, fetch_models=False),
        backend=backend_alias, errors=[task_error(entry) for entry in claimed.errors_json],
        worker_ids=list(claimed.worker_ids), metadata=dict(claimed.metadata_json),
        return_value=None,
    )


# Enqueue and the runner build a result per task: the frozen dataclass __init__ (one
# object.__setattr__ per field) is half the cost of building one. When the fields are the ones
# this module knows (Django 6.0 and 6.1), results are filled through the slots directly.
_NEW_RESULT_FIELDS = ("task", "id", "status", "enqueued_at", "started_at", "finished_at",
                  "last_attempted_at", "args", "kwargs", "backend", "errors", "worker_ids",
                  "_return_value", "raw_status", "metadata")
_NEW_RESULT_SETTERS = (
    tuple(getattr(ReproqTaskResult, name).__set__ for name in _NEW_RESULT_FIELDS)
    if tuple(f.name for f in fields(ReproqTaskResult)) == _NEW_RESULT_FIELDS else None)


def _new_result(*, return_value: Any, **values: Any) -> ReproqTaskResult:
    """A ReproqTaskResult of ``values`` (every init field) and ``return_value``."""
    if _NEW_RESULT_SETTERS is None:
        result = ReproqTaskResult(**values)
        if return_value is not None:
            object.__setattr__(result, "_return_value", return_value)
        return result
    values["_return_value"] = return_value
    result = object.__new__(ReproqTaskResult)
    for name, setter in zip(_NEW_RESULT_FIELDS, _NEW_RESULT_SETTERS):
        setter(result, values[name])
    return result


def task_error(entry: dict[str, Any]) -> TaskError:
    return TaskError(exception_class_path=entry.get("exception_class_path", ""),
                     traceback=entry.get("traceback", ""))
