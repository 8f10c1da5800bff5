"""``ReproqBackend``: a ``django.tasks`` backend whose queue is PostgreSQL.

Enqueue runs ``reproq.enqueue_many`` on the Django connection of the queue's database alias,
so it commits or rolls back with the caller's ``transaction.atomic()``. All SQL goes through
``reproq_runner.queries``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields
from functools import cached_property
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.tasks import Task
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.inspect import get_func_args
from django.utils.module_loading import import_string

from reproq_django import conf, serialization
from reproq_django.results import (
    ReproqTaskResult,
    parse_result_id,
    public_result_id,
    task_result_from_run,
)
from reproq_runner import queries

logger = logging.getLogger("reproq")

# Enqueue keyword arguments reproq consumes; a task cannot have parameters with these names.
RESERVED_KWARGS = ("run_after", "lock_key", "priority", "concurrency_key", "concurrency_limit")


@dataclass(frozen=True)
class BackendOptions:
    """The backend's ``OPTIONS``, validated (see :func:`option_problems`)."""

    DEDUP_ACTIVE: bool = True
    TIMEOUT_SECONDS: int = 900
    MAX_ATTEMPTS: int = 3
    EXPIRES_IN: timedelta | None = None
    CODE_REF: str | None = None
    PIP_LOCK_HASH: str | None = None


def option_problems(options: dict[str, Any]) -> list[str]:
    """Every problem with a backend's OPTIONS, as messages; empty when valid."""
    known = {f.name for f in fields(BackendOptions)}
    problems = [f"unknown option {name!r} (known: {', '.join(sorted(known))})"
                for name in options if name not in known]
    checks = {
        "DEDUP_ACTIVE": (lambda v: isinstance(v, bool), "must be True or False"),
        "TIMEOUT_SECONDS": (lambda v: _whole(v, 1, 31536000),
                            "must be a whole number of seconds from 1 to 31536000"),
        "MAX_ATTEMPTS": (lambda v: _whole(v, 1, 1000), "must be a whole number from 1 to 1000"),
        "EXPIRES_IN": (lambda v: v is None or (isinstance(v, timedelta) and v > timedelta(0)),
                       "must be a positive timedelta or None"),
        "CODE_REF": (lambda v: v is None or (isinstance(v, str) and v != ""),
                     "must be a non-empty string or None"),
        "PIP_LOCK_HASH": (lambda v: v is None or (isinstance(v, str) and v != ""),
                          "must be a non-empty string or None"),
    }
    for name, (is_valid, rule) in checks.items():
        if name in options and not is_valid(options[name]):
            problems.append(f"{name} {rule}, got {options[name]!r}")
    return problems


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class _Prepared:
    """One task ready to store: its task object, its encoded arguments, the enqueue options
    of ``reproq_runner.queries`` (queue_name, priority, run_after, …) and its database."""

    task: Task
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    alias: str

    @property
    def item(self) -> dict[str, Any]:
        """This task as one item of ``reproq.enqueue_many``."""
        return queries.task_item(self.task.module_path, self.args, self.kwargs, **self.options)


class ReproqBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    # Defaults of OPTIONS; test façades override them without touching ``self.options``.
    default_options: dict[str, Any] = {}

    # -- validation ---------------------------------------------------------------------------

    @cached_property
    def config(self) -> BackendOptions:
        """The validated OPTIONS; computed once per backend instance (OPTIONS do not change)."""
        options = {**self.default_options, **self.options}
        problems = option_problems(options)
        if problems:
            from django.tasks.exceptions import InvalidTaskBackend

            raise InvalidTaskBackend(f"TASKS[{self.alias!r}]['OPTIONS']: {'; '.join(problems)}")
        return BackendOptions(**options)

    def validate_task(self, task: Task) -> None:
        """Django's rules, plus: ``run_after`` may be a ``timedelta``, and the function may
        not have parameters named like reproq's reserved enqueue kwargs."""
        if isinstance(task.run_after, timedelta):
            task = _with_fields(task, run_after=None)
        super().validate_task(task)
        clashing = sorted(set(get_func_args(task.func)) & set(RESERVED_KWARGS))
        if clashing:
            raise InvalidTask(
                f"Task parameters {clashing} clash with reproq's reserved enqueue keyword "
                f"arguments {list(RESERVED_KWARGS)}; rename them."
            )

    def check(self, **kwargs):
        from reproq_django.checks import backend_checks

        return backend_checks(self)

    # -- enqueue --------------------------------------------------------------------------------

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> ReproqTaskResult:
        [result] = self.bulk_enqueue([(task, args, kwargs)])
        return result

    def bulk_enqueue(self, calls: Iterable[tuple[Task, Sequence[Any], dict[str, Any]]]
                     ) -> list[ReproqTaskResult]:
        """Enqueue many ``(task, args, kwargs)`` in one ``reproq.enqueue_many`` call per queue
        database: all or nothing, dedup-aware, results in input order."""
        config = self.config
        prepared = [self._prepare(task, args, kwargs, config) for task, args, kwargs in calls]
        if not prepared:
            return []
        runs = self._store(prepared, config)
        results = [task_result_from_run(p.task, run, self.alias,
                                        public_result_id(p.alias, run.result_id))
                   for p, run in zip(prepared, runs)]
        for result in results:
            task_enqueued.send(type(self), task_result=result)
        return results

    async def abulk_enqueue(self, calls) -> list[ReproqTaskResult]:
        return await sync_to_async(self.bulk_enqueue, thread_sensitive=True)(list(calls))

    def _prepare(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any],
                 config: BackendOptions) -> _Prepared:
        kwargs = dict(kwargs)
        reserved = {name: kwargs.pop(name) for name in RESERVED_KWARGS if name in kwargs}
        task = self._task_for_call(task, reserved)
        self.validate_task(task)
        encoded_args = serialization.encode(list(args))
        encoded_kwargs = serialization.encode(kwargs)
        run_after = _resolve_run_after(task.run_after)
        options = dict(
            queue_name=task.queue_name,
            priority=task.priority,
            run_after=run_after,
            max_attempts=config.MAX_ATTEMPTS,
            timeout_seconds=config.TIMEOUT_SECONDS,
            lock_key=_optional_text("lock_key", reserved.get("lock_key")),
            concurrency_key=_concurrency_key(reserved.get("concurrency_key"), args, kwargs),
            concurrency_limit=reserved.get("concurrency_limit"),
            expires_at=_expires_at(run_after, config.EXPIRES_IN),
            metadata=_enqueue_metadata(config),
        )
        return _Prepared(task, encoded_args, encoded_kwargs, options,
                         conf.database_for_queue(task.queue_name))

    @staticmethod
    def _task_for_call(task: Task, reserved: dict[str, Any]) -> Task:
        changes = {name: reserved[name] for name in ("priority", "run_after") if name in reserved}
        return task.using(**changes) if changes else task

    def _store(self, prepared: list[_Prepared], config: BackendOptions) -> list[queries.TaskRun]:
        by_alias: dict[str, list[int]] = {}
        for index, p in enumerate(prepared):
            by_alias.setdefault(p.alias, []).append(index)
        runs: list[queries.TaskRun | None] = [None] * len(prepared)
        with ExitStack() as stack:
            if len(by_alias) > 1 or _in_transaction(next(iter(by_alias))):
                # Several queue databases roll back together; inside the caller's transaction
                # a savepoint keeps it usable if the database refuses the enqueue. A lone
                # statement in autocommit is atomic by itself and needs neither.
                for alias in by_alias:
                    stack.enter_context(transaction.atomic(using=alias))
            for alias, indexes in by_alias.items():
                group = [prepared[i] for i in indexes]
                with connections[alias].cursor() as cursor:
                    enqueued = _enqueue(cursor, group, config.DEDUP_ACTIVE)
                    # A new row is exactly its input; only dedup hits need reading back.
                    existing = {run.result_id: run for run in queries.get_task_runs(
                        cursor, sorted({e.result_id for e in enqueued if not e.created}))}
                for e in enqueued:
                    runs[indexes[e.position - 1]] = (
                        _new_run(group[e.position - 1].item, e) if e.created
                        else existing[e.result_id])
        return runs

    # -- results --------------------------------------------------------------------------------

    def get_result(self, result_id: str) -> ReproqTaskResult:
        alias, number = parse_result_id(result_id, conf.default_db_alias(),
                                        conf.all_queue_aliases())
        with connections[alias].cursor() as cursor:
            run = queries.get_task_run(cursor, number)
        if run is None:
            raise TaskResultDoesNotExist(str(result_id))
        task = self._stored_task(run)
        return task_result_from_run(task, run, self.alias, public_result_id(alias, number))

    def _stored_task(self, run: queries.TaskRun) -> Task:
        """The Task a row names: imported only when inside the allow-list."""
        if not conf.is_allowed_task_path(run.task_path, conf.allowed_task_modules()):
            raise TaskResultDoesNotExist(
                f"{run.result_id}: task path {run.task_path!r} is outside "
                "REPROQ_ALLOWED_TASK_MODULES, so it is not imported")
        try:
            task = import_string(run.task_path)
        except ImportError as exc:
            raise TaskResultDoesNotExist(f"{run.result_id}: cannot import {run.task_path!r}: "
                                         f"{exc}") from exc
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"{run.result_id}: {run.task_path!r} is not a Task")
        return task

    # -- reproq extensions ----------------------------------------------------------------------

    def cancel(self, result_id: str) -> str:
        """Cancel a task (READY/WAITING at once, RUNNING on its next heartbeat); returns the
        stored status after the call."""
        alias, number = parse_result_id(result_id, conf.default_db_alias(),
                                        conf.all_queue_aliases())
        with connections[alias].cursor() as cursor:
            return queries.cancel(cursor, number)


def _enqueue(cursor, group: list[_Prepared], dedup: bool) -> list[queries.Enqueued]:
    """One task takes reproq.enqueue_one's single-row statement; several, one
    reproq.enqueue_many call."""
    if len(group) == 1:
        [one] = group
        return [queries.enqueue_one(cursor, one.task.module_path, one.args, one.kwargs,
                                    dedup=dedup, **one.options)]
    return queries.enqueue_many(cursor, [p.item for p in group], dedup=dedup)


def _in_transaction(alias: str) -> bool:
    connection = connections[alias]
    return connection.in_atomic_block or not connection.get_autocommit()


def _new_run(item: dict[str, Any], enqueued: queries.Enqueued) -> queries.TaskRun:
    """The row ``reproq.enqueue_many`` just inserted for ``item`` (see ``queries.task_item``),
    without reading it back."""
    run_after = item.get("run_after")
    expires_at = item.get("expires_at")
    return queries.TaskRun(
        result_id=enqueued.result_id, queue_name=item["queue_name"], priority=item["priority"],
        run_after=datetime.fromisoformat(run_after) if run_after else enqueued.enqueued_at,
        task_path=item["task_path"], spec_json=item["spec"], status="READY", attempts=0,
        max_attempts=item["max_attempts"], timeout_seconds=item["timeout_seconds"],
        lock_key=item.get("lock_key"), concurrency_key=item.get("concurrency_key"),
        concurrency_limit=item.get("concurrency_limit"), worker_ids=[], return_json=None,
        errors_json=[], metadata_json=item.get("metadata") or {}, leased_by=None,
        leased_until=None, lease_token=None, cancel_requested=False,
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None, logs_uri=None,
        enqueued_at=enqueued.enqueued_at, started_at=None, last_attempted_at=None,
        finished_at=None,
    )


def _with_fields(task: Task, **changes: Any) -> Task:
    """A copy of ``task`` with ``changes``, skipping validation (used to validate the rest)."""
    copy = object.__new__(type(task))
    for task_field in fields(task):
        value = changes.get(task_field.name, getattr(task, task_field.name))
        object.__setattr__(copy, task_field.name, value)
    return copy


def _resolve_run_after(run_after: datetime | timedelta | None) -> datetime | None:
    if isinstance(run_after, timedelta):
        return timezone.now() + run_after
    return run_after


def _expires_at(run_after: datetime | None, expires_in: timedelta | None) -> datetime | None:
    if expires_in is None:
        return None
    return (run_after or timezone.now()) + expires_in


def _optional_text(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise InvalidTask(f"{name} must be a non-empty string, got {value!r}")


def _concurrency_key(key: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """``concurrency_key`` as given, or computed by calling it with the task's arguments."""
    if callable(key):
        key = key(*args, **kwargs)
    return _optional_text("concurrency_key", key)


def _enqueue_metadata(config: BackendOptions) -> dict[str, str] | None:
    metadata = {name: value for name, value in (("code_ref", config.CODE_REF),
                                                ("pip_lock_hash", config.PIP_LOCK_HASH))
                if value}
    return metadata or None


