"""``ReproqBackend``: a ``django.tasks`` backend whose queue is PostgreSQL.

Enqueue runs ``reproq.enqueue_many`` on the Django connection of the queue's database alias,
so it commits or rolls back with the caller's ``transaction.atomic()``. All SQL goes through
``reproq_runner.queries``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, fields
from functools import cached_property
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.tasks import Task
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.inspect import get_func_args
from django.utils.module_loading import import_string

from reproq_django import conf, serialization
from reproq_django.results import (
    ReproqTaskResult,
    django_time,
    enqueued_task_result,
    parse_result_id,
    public_result_id,
    task_result_from_run,
)
from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, TaskNotFound

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


class _Plan:
    """What enqueue derives from a task object alone (its path, database, the options every
    call shares, how results show it), computed once per backend and equal task, and again
    when a REPROQ_* setting changes (``conf.generation``)."""

    __slots__ = ("stored_task", "task_path", "alias", "validation_cached", "one_options",
                 "item_template", "metadata", "generation")

    def __init__(self, backend: ReproqBackend, task: Task, config: BackendOptions,
                 validation_cached: bool):
        self.generation = conf.generation
        # The task as task_as_stored shows a row that is not deferred.
        if task.run_after is None and task.backend == backend.alias:
            self.stored_task = task
        else:
            self.stored_task = _with_fields(task, run_after=None, backend=backend.alias)
        self.task_path = task.module_path
        _refuse_unrunnable(self.task_path)
        self.alias = conf.database_for_queue(task.queue_name)
        self.validation_cached = validation_cached
        self.metadata = _enqueue_metadata(config)
        # int(): Django accepts a whole float (5.0), the SQL functions take an integer.
        self.one_options = dict(queue_name=task.queue_name, priority=int(task.priority),
                                max_attempts=config.MAX_ATTEMPTS,
                                timeout_seconds=config.TIMEOUT_SECONDS, metadata=self.metadata)
        self.item_template = queries.task_item(self.task_path, **self.one_options)


class _Prepared:
    """One task call ready to store: its plan, the task as called, its encoded arguments (and
    decoded, as its result shows them), and the options of this call alone (run_after,
    lock_key, …; only those that are set)."""

    __slots__ = ("plan", "task", "args", "kwargs", "result_args", "result_kwargs",
                 "run_after", "extra")

    def __init__(self, plan: _Plan, task: Task, encoded: tuple, run_after: datetime | None,
                 extra: dict[str, Any]):
        self.plan = plan
        self.task = task
        self.args, self.kwargs, self.result_args, self.result_kwargs = encoded
        self.run_after = run_after
        self.extra = extra

    @property
    def item(self) -> dict[str, Any]:
        """This task as one item of ``reproq.enqueue_many`` (see ``queries.task_item``)."""
        if not self.extra:
            return {**self.plan.item_template, "spec": {"args": self.args, "kwargs": self.kwargs}}
        return queries.task_item(self.plan.task_path, self.args, self.kwargs,
                                 **self.plan.one_options, **self.extra)


# Plans kept per backend; past this many distinct tasks (``task.using(...)`` in a loop makes a
# new task per call) the cache starts again.
_PLAN_CACHE_SIZE = 1024
_RESERVED = frozenset(RESERVED_KWARGS)


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
        _refuse_wrong_types(task)
        if isinstance(task.run_after, timedelta):
            task = _with_fields(task, run_after=None)
        super().validate_task(task)
        if not _TASK_PATH.match(task.module_path):
            raise InvalidTask(
                f"Task path {task.module_path!r} is not a dotted path of ASCII identifiers, "
                "the only task paths reproq stores (its SQL functions refuse others)")
        if isinstance(task.queue_name, str):
            _storable_text("queue_name", task.queue_name)
            if "," in task.queue_name or task.queue_name != task.queue_name.strip():
                raise InvalidTask(
                    f"queue_name {task.queue_name!r} contains a comma or has spaces at an end: "
                    "a runner's --queues (a comma-separated list) could not name it")
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

    @cached_property
    def _plans(self) -> dict[Task, _Plan]:
        """Plans of the tasks this backend enqueued, by task (see :meth:`_plan`)."""
        return {}

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> ReproqTaskResult:
        if type(self).bulk_enqueue is not ReproqBackend.bulk_enqueue:
            # A subclass hooks bulk_enqueue: every enqueue goes through it.
            [result] = self.bulk_enqueue([(task, args, kwargs)])
            return result
        config = self.config
        [result] = self._store([self._prepare(task, args, kwargs, config)], config)
        task_enqueued.send(type(self), task_result=result)
        return result

    def bulk_enqueue(self, calls: Iterable[tuple[Task, Sequence[Any], dict[str, Any]]]
                     ) -> list[ReproqTaskResult]:
        """Enqueue many ``(task, args, kwargs)`` in one ``reproq.enqueue_many`` call per queue
        database: all or nothing, dedup-aware, results in input order."""
        config = self.config
        prepare = self._prepare
        prepared = [prepare(task, args, kwargs, config) for task, args, kwargs in calls]
        if not prepared:
            return []
        results = self._store(prepared, config)
        send, sender = task_enqueued.send, type(self)
        for result in results:
            send(sender, task_result=result)
        return results

    async def abulk_enqueue(self, calls) -> list[ReproqTaskResult]:
        return await sync_to_async(self.bulk_enqueue, thread_sensitive=True)(list(calls))

    def _prepare(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any],
                 config: BackendOptions) -> _Prepared:
        kwargs = dict(kwargs)
        reserved = None
        if kwargs and not _RESERVED.isdisjoint(kwargs):
            reserved = {name: kwargs.pop(name) for name in RESERVED_KWARGS if name in kwargs}
            task = self._task_for_call(task, reserved)
        plan = self._plan(task, config)
        encoded = serialization.encode_call(args, kwargs)
        run_after = task.run_after
        extra: dict[str, Any] = {}
        if run_after is not None:
            run_after = _resolve_run_after(run_after)
            extra["run_after"] = _storable_time("run_after", run_after)
        if reserved:
            for name, value in (
                    ("lock_key", _optional_text("lock_key", reserved.get("lock_key"))),
                    ("concurrency_key", _concurrency_key(reserved.get("concurrency_key"),
                                                         args, kwargs)),
                    ("concurrency_limit", _concurrency_limit(reserved.get("concurrency_limit")))):
                if value is not None:
                    extra[name] = value
        if config.EXPIRES_IN is not None:
            extra["expires_at"] = _storable_time(
                "expires_at", _expires_at(run_after, config.EXPIRES_IN))
        return _Prepared(plan, task, encoded, run_after, extra)

    def _plan(self, task: Task, config: BackendOptions) -> _Plan:
        """``task``'s plan, validating the task (once, when the result can be kept)."""
        try:
            plan = self._plans.get(task)
        except TypeError:  # an unhashable Task subclass: nothing to keep it by
            self.validate_task(task)
            return _Plan(self, task, config, validation_cached=False)
        if plan is not None and plan.generation == conf.generation:
            if not plan.validation_cached:
                self.validate_task(task)
            return plan
        self.validate_task(task)
        # Validation depends on the task's fields only, except that an aware-datetime
        # run_after is checked against USE_TZ; a subclass may validate differently.
        cached = (type(self).validate_task is ReproqBackend.validate_task
                  and not isinstance(task.run_after, datetime))
        plan = _Plan(self, task, config, validation_cached=cached)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[task] = plan
        return plan

    @staticmethod
    def _task_for_call(task: Task, reserved: dict[str, Any]) -> Task:
        changes = {name: reserved[name] for name in ("priority", "run_after") if name in reserved}
        return task.using(**changes) if changes else task

    def _store(self, prepared: list[_Prepared], config: BackendOptions
               ) -> list[ReproqTaskResult]:
        """Store ``prepared`` (one statement per queue database) and return their results."""
        first_alias = prepared[0].plan.alias
        if all(p.plan.alias == first_alias for p in prepared):
            connection = connections[first_alias]
            if not _in_transaction(connection):
                # A lone statement in autocommit is atomic by itself.
                return self._store_on(first_alias, connection, prepared, config)
            # Inside the caller's transaction a savepoint keeps it usable if the database
            # refuses the enqueue.
            with transaction.atomic(using=first_alias):
                return self._store_on(first_alias, connection, prepared, config)
        by_alias: dict[str, list[int]] = {}
        for index, p in enumerate(prepared):
            by_alias.setdefault(p.plan.alias, []).append(index)
        results: list[ReproqTaskResult | None] = [None] * len(prepared)
        with ExitStack() as stack:
            # Several queue databases roll back together. They are written in one fixed order:
            # two bulks holding each other's uncommitted rows in two databases would wait for
            # each other forever, a deadlock no one database can see.
            ordered = sorted(by_alias.items())
            for alias, _ in ordered:
                stack.enter_context(transaction.atomic(using=alias))
            for alias, indexes in ordered:
                try:
                    stored = self._store_on(alias, connections[alias],
                                            [prepared[i] for i in indexes], config)
                except InvalidArgument as exc:
                    raise _numbered_as_called(exc, indexes) from exc
                for index, result in zip(indexes, stored):
                    results[index] = result
        return results

    def _store_on(self, alias: str, connection, group: list[_Prepared],
                  config: BackendOptions) -> list[ReproqTaskResult]:
        """One statement on one database: reproq.enqueue_one's single-row statement for one
        task, one reproq.enqueue_many call for several. A new row is exactly its input; only
        dedup hits are read back."""
        with _enqueue_cursor(connection) as cursor:
            if len(group) == 1:
                [one] = group
                enqueued = [queries.enqueue_one(cursor, one.plan.task_path, one.args,
                                                one.kwargs, dedup=config.DEDUP_ACTIVE,
                                                **one.plan.one_options, **one.extra)]
            else:
                enqueued = queries.enqueue_many(cursor, [p.item for p in group],
                                                dedup=config.DEDUP_ACTIVE)
            hits = sorted({e.result_id for e in enqueued if not e.created})
            existing = ({run.result_id: run for run in queries.get_task_runs(cursor, hits)}
                        if hits else {})
        results: list[ReproqTaskResult | None] = [None] * len(group)
        backend_alias = self.alias
        for e in enqueued:
            p = group[e.position - 1]
            result_id = public_result_id(alias, e.result_id)
            if e.created:
                run_after = django_time(p.run_after)
                task = p.plan.stored_task
                if run_after is not None and run_after != e.enqueued_at:
                    task = _with_fields(task, run_after=run_after)
                results[e.position - 1] = enqueued_task_result(
                    task, result_id, e.enqueued_at, p.result_args, p.result_kwargs,
                    p.plan.metadata, backend_alias)
            else:
                results[e.position - 1] = task_result_from_run(
                    p.task, existing[e.result_id], backend_alias, result_id)
        return results

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
        connection = connections[alias]
        # Inside the caller's transaction a savepoint keeps it usable if the id is unknown.
        in_savepoint = (transaction.atomic(using=alias) if _in_transaction(connection)
                        else nullcontext())
        try:
            with in_savepoint, connection.cursor() as cursor:
                return queries.cancel(cursor, number)
        except TaskNotFound as exc:
            raise TaskResultDoesNotExist(str(result_id)) from exc


try:
    from django.db.backends.postgresql.base import DatabaseWrapper as _PostgresWrapper
    from django.db.backends.postgresql.psycopg_any import is_psycopg3, register_tzloader
except ImportError:  # no psycopg at all: never a PostgreSQL connection
    is_psycopg3 = False
_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid
_TEXT = psycopg.pq.Format.TEXT


def _enqueue_cursor(connection):
    """``connection.cursor()``, binding the parameters server-side.

    Django's psycopg cursors bind client-side (unless ``OPTIONS["server_side_binding"]``):
    each enqueue would quote its parameters into the SQL text (a bulk enqueue: megabytes of
    JSON) for the server to parse again. reproq's statements are fixed text, so this is
    Django's cursor (``BaseDatabaseWrapper._cursor``: health check, connection, error
    wrapping, thread check, ``CursorWrapper`` with its execute wrappers and broken-transaction
    check, the time zone of ``create_cursor``) over a psycopg cursor that sends the parameters
    apart. It prepares statements only when the connection's ``prepare_threshold`` asks, as
    Django's own server-side cursors do. While queries are logged (``DEBUG``,
    ``assertNumQueries``) Django's cursor is used as it is, so the log shows the values, and
    so it is for a connection whose ``OPTIONS`` name a ``cursor_factory`` of their own."""
    options = connection.settings_dict["OPTIONS"]
    if (not is_psycopg3 or connection.vendor != "postgresql" or connection.queries_logged
            or options.get("server_side_binding") is True
            or options.get("cursor_factory") is not None  # a tracing or binding choice
            or not _makes_cursors_as_django_does(connection)):
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection
        cursor = psycopg.Cursor(raw)
        if connection.timezone != raw.adapters.get_loader(_TIMESTAMPTZ_OID, _TEXT).timezone:
            register_tzloader(connection.timezone, cursor)
        connection.validate_thread_sharing()
        return connection.make_cursor(cursor)


_CURSOR_METHODS = ("cursor", "_cursor", "create_cursor", "make_cursor", "_prepare_cursor")


def _makes_cursors_as_django_does(connection) -> bool:
    """False for a connection whose class or instance changes how cursors are made (metrics,
    tracing or multi-tenant backends, patched methods): those get ``connection.cursor()``."""
    for name in _CURSOR_METHODS:
        method = getattr(connection, name, None)
        if getattr(method, "__func__", None) is not getattr(_PostgresWrapper, name, None):
            return False
    return True


def _in_transaction(connection) -> bool:
    return connection.in_atomic_block or not connection.get_autocommit()


def _refuse_wrong_types(task: Task) -> None:
    """What Django's validate_task compares without checking the type first (a string
    priority, a date run_after: TypeError or AttributeError there) is an InvalidTask here."""
    priority = task.priority
    try:
        finite = math.isfinite(priority)  # any real number type: int, float, Decimal, Fraction
    except TypeError:
        finite = False
    if not finite:
        raise InvalidTask(f"priority must be a whole number between {TASK_MIN_PRIORITY} and "
                          f"{TASK_MAX_PRIORITY}, not {priority!r}")
    if task.run_after is not None and not isinstance(task.run_after, datetime | timedelta):
        raise InvalidTask("run_after must be an aware datetime or a timedelta, not "
                          f"{type(task.run_after).__name__} {task.run_after!r}")


def _refuse_unrunnable(task_path: str) -> None:
    """A task outside the allowed task modules is refused at enqueue, where the mistake is
    made: runners reading the same setting would fail it without importing it, and
    get_result() would not import it either."""
    allowed = conf.allowed_task_modules()
    if conf.is_allowed_task_path(task_path, allowed):
        return
    if conf.allowed_task_modules_configured():
        where, fix = "REPROQ_ALLOWED_TASK_MODULES", "add its module to that setting"
    else:
        where = ("the default of REPROQ_ALLOWED_TASK_MODULES (each installed app's tasks "
                 "module)")
        fix = ("move it into an installed app's tasks module, or list its module in "
               "REPROQ_ALLOWED_TASK_MODULES")
    raise InvalidTask(
        f"Task {task_path!r} is outside {where}: {list(allowed)}. Runners that use this "
        f"setting refuse to import it, and get_result() cannot read it back: {fix}.")


def _with_fields(task: Task, **changes: Any) -> Task:
    """A copy of ``task`` with ``changes``, skipping validation (used to validate the rest)."""
    copy = object.__new__(type(task))
    for task_field in fields(task):
        value = changes.get(task_field.name, getattr(task, task_field.name))
        object.__setattr__(copy, task_field.name, value)
    return copy


def _resolve_run_after(run_after: datetime | timedelta) -> datetime:
    if isinstance(run_after, timedelta):
        try:
            return timezone.now() + run_after
        except OverflowError:
            raise InvalidTask(f"run_after is too far from now: {run_after!r}") from None
    return run_after


def _expires_at(run_after: datetime | None, expires_in: timedelta) -> datetime:
    try:
        return (run_after or timezone.now()) + expires_in
    except OverflowError:
        raise InvalidTask(f"run_after plus EXPIRES_IN ({expires_in!r}) is past the year 9999"
                          ) from None


_TASK_POSITION = re.compile(r"task (\d+): ")
# reproq._task_problem's rule for a task path (RQ001).
_TASK_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


def _numbered_as_called(exc: InvalidArgument, indexes: list[int]) -> InvalidArgument:
    """``exc`` from one database's share of a bulk enqueue, naming the task by its place in
    the caller's list (the database numbered its share from 1; a share of one is unnumbered)."""
    message = str(exc)
    match = _TASK_POSITION.match(message)
    if match:
        position = indexes[int(match[1]) - 1] + 1
        message = f"task {position}: {message[match.end():]}"
    elif len(indexes) == 1:
        message = f"task {indexes[0] + 1}: {message}"
    return type(exc)(message)


# Python's datetime covers years 1 to 9999; a day inside that in UTC, so that every client
# can read the stored time back in any time zone. reproq.enqueue_one and enqueue_many refuse
# times outside it too (SQL 0008).
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


def _storable_time(name: str, value: datetime) -> datetime:
    """``value`` as stored: naive times (``USE_TZ = False``) in the default time zone, as
    Django's connection reads them; refused when outside the range every client can read."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    if not _EARLIEST <= value <= _LATEST:
        raise InvalidTask(f"{name} must be from 0001-01-02 to 9999-12-30 (UTC), got {value!r}")
    return value


def _optional_text(name: str, value: Any) -> str | None:
    if value is None:
        return value
    if isinstance(value, str) and value:
        return _storable_text(name, value)
    raise InvalidTask(f"{name} must be a non-empty string, got {value!r}")


def _storable_text(name: str, value: str) -> str:
    """``value`` if PostgreSQL's text can hold it: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise InvalidTask(f"{name} may not contain NUL (\\x00), got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTask(f"{name} may not contain lone surrogates, got {value!r}") from exc
    return value


def _concurrency_limit(limit: Any) -> int | None:
    if limit is None or _whole(limit, 1, 1_000_000):
        return limit
    raise InvalidTask(f"concurrency_limit must be a whole number from 1 to 1000000, got "
                      f"{limit!r}")


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


