"""Every SQL statement reproq's Python code sends, one typed function per SQL function.

Each function takes any DB-API cursor (psycopg 3, or Django's cursor so that enqueue joins the
caller's transaction) and returns frozen dataclasses (a named tuple for the claimed task), built
from a select list made from their fields. Database errors with a reproq SQLSTATE come out as
the named exceptions of ``reproq_runner.errors``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from reproq_runner.errors import InvalidArgument, InvalidSpec, translate

NOTIFY_CHANNEL = "reproq"
MIGRATION_LOCK_KEY = 0x72657072  # "repr": one advisory lock for every schema applier

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Row types


@dataclass(frozen=True, slots=True)
class Enqueued:
    position: int
    result_id: int
    created: bool
    enqueued_at: datetime


class ClaimedTask(NamedTuple):
    """One leased attempt, as reproq.claim returns it. A named tuple rather than a frozen
    dataclass: the runner builds, pickles and rebuilds one per task, and a frozen dataclass's
    ``__init__`` alone costs several microseconds for these 17 fields."""

    result_id: int
    task_path: str
    spec_json: dict
    queue_name: str
    priority: int
    attempts: int
    max_attempts: int
    timeout_seconds: int
    lease_token: uuid.UUID
    leased_until: datetime
    metadata_json: dict
    enqueued_at: datetime
    started_at: datetime
    run_after: datetime
    last_attempted_at: datetime
    worker_ids: list[str]
    errors_json: list[dict]

    @property
    def args(self) -> list:
        return self.spec_json["args"]

    @property
    def kwargs(self) -> dict:
        return self.spec_json["kwargs"]


@dataclass(frozen=True, slots=True)
class TaskRun:
    result_id: int
    queue_name: str
    priority: int
    run_after: datetime
    task_path: str
    spec_json: dict
    status: str
    attempts: int
    max_attempts: int
    timeout_seconds: int
    lock_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    worker_ids: list[str]
    return_json: Any
    errors_json: list[dict]
    metadata_json: dict
    leased_by: str | None
    leased_until: datetime | None
    lease_token: uuid.UUID | None
    cancel_requested: bool
    expires_at: datetime | None
    logs_uri: str | None
    enqueued_at: datetime
    started_at: datetime | None
    last_attempted_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


_JSON_FIELDS = {"spec_json", "return_json", "errors_json", "metadata_json"}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """The fields of a row type (a dataclass or a named tuple), in order."""
    names = getattr(cls, "_fields", None)
    return names if names is not None else tuple(f.name for f in fields(cls))


@functools.cache
def _select_list(cls: type) -> str:
    """The columns of a row type; jsonb ones as text, which every driver hands back alike
    (psycopg would decode jsonb itself, Django's cursor would not), then decoded by
    _select_rows."""
    return ", ".join(f"{name}::text as {name}" if name in _JSON_FIELDS else name
                     for name in _field_names(cls))


@functools.cache
def _json_positions(cls: type) -> tuple[int, ...]:
    return tuple(index for index, name in enumerate(_field_names(cls)) if name in _JSON_FIELDS)


# ---------------------------------------------------------------------------------------------
# Plumbing


_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_UNESCAPED_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"),
                                           ensure_ascii=False)


def dumps_json(value: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts; NaN, Infinity, NUL characters and lone surrogates
    are refused."""
    try:
        text = _JSON_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(f"value is not storable as JSON: {exc}") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidSpec("value is not storable as JSON: strings may not contain NUL (\\x00)")
    if "\\ud" in text:  # a character outside the BMP, or a lone surrogate jsonb refuses
        try:
            _UNESCAPED_JSON_ENCODER.encode(value).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidSpec("value is not storable as JSON: strings may not contain lone "
                              f"surrogates ({exc.object[exc.start:exc.end]!r})") from exc
    return text


def storable_diagnostics(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys too) written as ``\\x00`` and
    every lone surrogate as its ``\\udcXX`` escape: for diagnostics (error messages,
    tracebacks), which must be stored whatever they contain (a message built from a file name
    with ``os.fsdecode`` holds surrogates); task data is refused instead (:func:`dumps_json`)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\\x00")
        if not value.isascii():
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {storable_diagnostics(k): storable_diagnostics(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_diagnostics(v) for v in value]
    return value


# Most rows carry empty metadata and errors: no parser needed for those.
_EMPTY_JSON: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list, "null": lambda: None}


def _loads(value: str | None) -> Any:
    if value is None:
        return None
    empty = _EMPTY_JSON.get(value)
    return empty() if empty is not None else json.loads(value)


def _select_rows(cursor, cls: type[T], rest: str, params: Sequence[Any] = ()) -> list[T]:
    """``select <cls's fields> <rest>``: rows of ``cls``, built positionally (the runner's
    claim path builds one per task), jsonb text decoded. The select list is made from ``cls``,
    so columns and fields cannot disagree."""
    _execute(cursor, f"select {_select_list(cls)} {rest}", params)
    json_positions = _json_positions(cls)
    rows = []
    for values in cursor.fetchall():
        if json_positions:
            values = list(values)
            for index in json_positions:
                values[index] = _loads(values[index])
        rows.append(cls(*values))
    return rows


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate(exc)
        if translated is exc:
            raise
        raise translated from exc


def _execute(cursor, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
    with _translated_errors():
        cursor.execute(sql, params)


def _scalar(cursor, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
    _execute(cursor, sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


def _column(cursor, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
    _execute(cursor, sql, params)
    return [row[0] for row in cursor.fetchall()]


def _spec(args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"args": list(args), "kwargs": dict(kwargs)}


# ---------------------------------------------------------------------------------------------
# Enqueue


def task_item(task_path: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
              **options: Any) -> dict[str, Any]:
    """One task object for :func:`enqueue_many`; ``options`` are its optional fields
    (queue_name, priority, run_after, max_attempts, timeout_seconds, lock_key,
    concurrency_key, concurrency_limit, expires_at, metadata, dedup). None means default."""
    item = {"task_path": task_path, "spec": _spec(args, kwargs or {})}
    for name, value in options.items():
        if value is not None:
            item[name] = _iso(value) if isinstance(value, datetime) else value
    return item


def _iso(value: datetime) -> str:
    """An aware time in UTC: a zone's historic offset in seconds ("+05:53:28") is no ISO 8601
    offset, and enqueue_many would refuse it. A naive one stays without an offset, which
    enqueue_many refuses (it cannot know the zone)."""
    if value.utcoffset() is not None:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            pass  # past Python's years in UTC: as written, for enqueue_many to refuse (RQ003)
    return value.isoformat()


_ONE_TASK_ARGUMENTS = (
    "%s, %s::jsonb, p_queue => %s, p_priority => %s, p_run_after => %s,"
    " p_max_attempts => %s, p_timeout_seconds => %s, p_lock_key => %s,"
    " p_concurrency_key => %s, p_concurrency_limit => %s, p_expires_at => %s,"
    " p_metadata => %s::jsonb, p_dedup => %s, p_now => %s"
)


def _one_task_params(task_path: str, args: Sequence[Any] = (),
                     kwargs: dict[str, Any] | None = None, *, queue_name: str = "default",
                     priority: int = 0, run_after: datetime | None = None,
                     max_attempts: int = 3, timeout_seconds: int = 900,
                     lock_key: str | None = None, concurrency_key: str | None = None,
                     concurrency_limit: int | None = None, expires_at: datetime | None = None,
                     metadata: dict[str, Any] | None = None, dedup: bool = True,
                     now: datetime | None = None) -> tuple:
    """The parameters of reproq.enqueue and reproq.enqueue_one, in _ONE_TASK_ARGUMENTS order."""
    return (task_path, dumps_json(_spec(args, kwargs or {})), queue_name, priority, run_after,
            max_attempts, timeout_seconds, lock_key, concurrency_key, concurrency_limit,
            expires_at, dumps_json(metadata) if metadata else "{}", dedup, now)


def enqueue(cursor, task_path: str, args: Sequence[Any] = (),
            kwargs: dict[str, Any] | None = None, **options: Any) -> int:
    """reproq.enqueue: one task; returns its result id (an existing one when deduplicated).
    ``options``: queue_name, priority, run_after, max_attempts, timeout_seconds, lock_key,
    concurrency_key, concurrency_limit, expires_at, metadata, dedup, now."""
    return _scalar(cursor, f"select reproq.enqueue({_ONE_TASK_ARGUMENTS})",
                   _one_task_params(task_path, args, kwargs, **options))


def enqueue_one(cursor, task_path: str, args: Sequence[Any] = (),
                kwargs: dict[str, Any] | None = None, **options: Any) -> Enqueued:
    """reproq.enqueue_one: like :func:`enqueue`, but returns the whole :class:`Enqueued` row
    (``created``, ``enqueued_at``), so a new row need not be read back."""
    return _select_rows(cursor, Enqueued, f"from reproq.enqueue_one({_ONE_TASK_ARGUMENTS})",
                        _one_task_params(task_path, args, kwargs, **options))[0]


def enqueue_many(cursor, items: Iterable[dict[str, Any]], *, dedup: bool = True,
                 now: datetime | None = None) -> list[Enqueued]:
    """reproq.enqueue_many: many tasks (see :func:`task_item`) in one atomic statement."""
    return _select_rows(cursor, Enqueued,
                        "from reproq.enqueue_many(%s::jsonb, p_dedup => %s, p_now => %s)",
                        (dumps_json(list(items)), dedup, now))


# ---------------------------------------------------------------------------------------------
# Claim, heartbeat, outcomes


def claim(cursor, worker_id: str, queues: Sequence[str], limit: int = 1,
          lease_seconds: int = 60, now: datetime | None = None) -> list[ClaimedTask]:
    """reproq.claim: lease up to ``limit`` due tasks to ``worker_id``."""
    return _select_rows(cursor, ClaimedTask, "from reproq.claim(%s, %s, %s, %s, %s)",
                        (worker_id, queue_list(queues), limit, lease_seconds, now))


def queue_list(queues: Sequence[str]) -> list[str]:
    """``queues`` as a list; a lone string is refused, where ``list()`` would have made one
    queue of each of its letters (and claimed nothing, silently)."""
    if isinstance(queues, str):
        raise InvalidArgument(f"queues must be a list of queue names, not the string "
                              f"{queues!r}")
    return list(queues)


def heartbeat(cursor, worker_id: str, lease_seconds: int = 60,
              now: datetime | None = None, *, held: Iterable[int] | None = None) -> list[int]:
    """reproq.heartbeat: extend the worker's spent leases, only those of ``held`` when given
    (the runner's form; without it, every lease of the worker, as runners before 0006 did);
    returns the ids whose cancellation was requested."""
    if held is None:
        return _column(cursor, "select reproq.heartbeat(%s, %s, %s)",
                       (worker_id, lease_seconds, now))
    return _column(cursor, "select reproq.heartbeat(%s, %s::bigint[], %s, %s)",
                   (worker_id, _array_literal(held), lease_seconds, now))


def complete(cursor, result_id: int, lease_token: uuid.UUID, return_value: Any = None,
             now: datetime | None = None) -> None:
    """reproq.complete: one task SUCCESSFUL; raises LeaseLost when fenced out."""
    _execute(cursor, "select reproq.complete(%s, %s, %s::jsonb, %s)",
             (result_id, lease_token, dumps_json(return_value), now))


def complete_many(cursor, outcomes: Sequence[tuple[int, uuid.UUID, str]],
                  now: datetime | None = None) -> set[int]:
    """reproq.complete_many: ``outcomes`` are (result_id, lease_token, return value as JSON
    text from :func:`dumps_json`); returns the ids accepted (the others had lost their lease)."""
    if not outcomes:
        return set()
    ids, tokens, values = zip(*outcomes)
    # Array literals and one JSON array built here cost a fraction of adapting three Python
    # lists element by element.
    return set(_column(
        cursor,
        "select reproq.complete_many(%s::bigint[], %s::uuid[],"
        " array(select v.value from jsonb_array_elements(%s::jsonb) with ordinality as v"
        " order by v.ordinality), %s)",
        (_array_literal(ids), _array_literal(tokens), f"[{','.join(values)}]", now),
    ))


def _array_literal(values: Iterable[int | uuid.UUID]) -> str:
    """``{1,2,3}``: a PostgreSQL array literal of values whose text needs no quoting."""
    return "{" + ",".join(map(str, values)) + "}"


def fail(cursor, result_id: int, lease_token: uuid.UUID, error: dict[str, Any], *,
         retry: bool = True, retry_in_seconds: float | None = None,
         now: datetime | None = None) -> str:
    """reproq.fail: record a failed attempt; returns the task's new status."""
    return _scalar(cursor, "select reproq.fail(%s, %s, %s::jsonb, %s, %s, %s)",
                   (result_id, lease_token, dumps_json(error), retry, retry_in_seconds, now))


def release(cursor, leases: Sequence[tuple[int, uuid.UUID]],
            now: datetime | None = None) -> set[int]:
    """reproq.release: hand tasks back to READY without spending an attempt."""
    if not leases:
        return set()
    ids, tokens = zip(*leases)
    return set(_column(cursor, "select reproq.release(%s, %s, %s)",
                       (list(ids), list(tokens), now)))


def cancel(cursor, result_id: int, now: datetime | None = None) -> str:
    """reproq.cancel: returns the status after the call."""
    return _scalar(cursor, "select reproq.cancel(%s, %s)", (result_id, now))


def reclaim(cursor, now: datetime | None = None) -> int:
    """reproq.reclaim: expire lost leases now; returns how many tasks it touched."""
    return _scalar(cursor, "select reproq.reclaim(%s)", (now,))


def save_metadata(cursor, result_id: int, lease_token: uuid.UUID,
                  metadata: dict[str, Any]) -> None:
    """reproq.save_metadata: replace a running task's metadata."""
    _execute(cursor, "select reproq.save_metadata(%s, %s, %s::jsonb)",
             (result_id, lease_token, dumps_json(metadata)))


def set_logs_uri(cursor, result_id: int, lease_token: uuid.UUID, logs_uri: str) -> None:
    """reproq.set_logs_uri: where this attempt's output log lives."""
    _execute(cursor, "select reproq.set_logs_uri(%s, %s, %s)", (result_id, lease_token, logs_uri))


def set_logs_uris(cursor, entries: Sequence[tuple[int, uuid.UUID, str]]) -> set[int]:
    """reproq.set_logs_uris: (result_id, lease_token, uri) for many freshly claimed tasks in one
    round trip; returns the ids accepted (the others had lost their lease)."""
    if not entries:
        return set()
    ids, tokens, uris = zip(*entries)
    return set(_column(cursor, "select reproq.set_logs_uris(%s, %s, %s)",
                       (list(ids), list(tokens), list(uris))))


# ---------------------------------------------------------------------------------------------
# Workers and queues


def register_worker(cursor, worker_id: str, hostname: str, pid: int, queues: Sequence[str],
                    concurrency: int, version: str, now: datetime | None = None) -> None:
    _execute(cursor, "select reproq.register_worker(%s, %s, %s, %s, %s, %s, %s)",
             (worker_id, hostname, pid, list(queues), concurrency, version, now))


def unregister_worker(cursor, worker_id: str) -> None:
    _execute(cursor, "select reproq.unregister_worker(%s)", (worker_id,))


def pause_queue(cursor, queue_name: str, now: datetime | None = None) -> None:
    _execute(cursor, "select reproq.pause_queue(%s, %s)", (queue_name, now))


def resume_queue(cursor, queue_name: str, now: datetime | None = None) -> None:
    _execute(cursor, "select reproq.resume_queue(%s, %s)", (queue_name, now))


def listen(cursor) -> None:
    """Subscribe the cursor's connection to enqueue notifications."""
    _execute(cursor, f"listen {NOTIFY_CHANNEL}")


# ---------------------------------------------------------------------------------------------
# Reads (no state changes)


def get_task_run(cursor, result_id: int) -> TaskRun | None:
    rows = _select_rows(cursor, TaskRun, "from reproq.task_runs where result_id = %s",
                        (result_id,))
    return rows[0] if rows else None


def get_task_runs(cursor, result_ids: Sequence[int]) -> list[TaskRun]:
    if not result_ids:
        return []
    return _select_rows(cursor, TaskRun,
                        "from reproq.task_runs where result_id = any(%s) order by result_id",
                        (list(result_ids),))


def status_counts(cursor) -> dict[str, int]:
    _execute(cursor, "select status, count(*) from reproq.task_runs group by status")
    return {status: count for status, count in cursor.fetchall()}


def count_due(cursor, queues: Sequence[str], now: datetime | None = None) -> int:
    """READY tasks in ``queues`` due by ``now``: what a burst run still has to drain."""
    return _scalar(cursor, "select count(*) from reproq.task_runs where status = 'READY'"
                           " and queue_name = any(%s) and run_after <= coalesce(%s, now())",
                   (queue_list(queues), now))


def reproq_functions_without_comment(cursor) -> list[str]:
    return _column(
        cursor,
        "select p.oid::regprocedure::text from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'reproq' and obj_description(p.oid, 'pg_proc') is null"
        " order by 1",
    )


# ---------------------------------------------------------------------------------------------
# Schema migrations (bookkeeping for reproq_runner.migrate; not queue state)


def lock_migrations(cursor) -> None:
    """Serialise appliers: held until the surrounding transaction ends."""
    _execute(cursor, "select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def try_lock_migrations(cursor) -> bool:
    """:func:`lock_migrations` if no other applier holds the lock now; False otherwise."""
    return _scalar(cursor, "select pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def transaction_isolation(cursor) -> str:
    """The current transaction's isolation level, as PostgreSQL names it ("read committed")."""
    return _scalar(cursor, "select current_setting('transaction_isolation')")


def ensure_migration_table(cursor) -> None:
    _execute(cursor, "create schema if not exists reproq")
    _execute(cursor, "comment on schema reproq is"
                     " 'reproq: the task queue; see docs/sql-api.md'")
    _execute(
        cursor,
        "create table if not exists reproq.schema_migrations ("
        " version integer primary key, name text not null, checksum text not null,"
        " applied_at timestamptz not null default now())",
    )
    _execute(cursor, "comment on table reproq.schema_migrations is"
                     " 'One row per applied sql/migrations file, written in the transaction"
                     " that applied it'")


def migration_table_exists(cursor) -> bool:
    return _scalar(cursor, "select to_regclass('reproq.schema_migrations') is not null")


def applied_migrations(cursor) -> list[AppliedMigration]:
    """Applied migrations, or an empty list when the bookkeeping table does not exist."""
    if not migration_table_exists(cursor):
        return []
    return _select_rows(cursor, AppliedMigration,
                        "from reproq.schema_migrations order by version")


def run_script(cursor, sql_text: str) -> None:
    """Execute a migration file as one multi-statement string (no parameters)."""
    with _translated_errors():
        cursor.execute(sql_text)


def record_migration(cursor, version: int, name: str, checksum: str) -> None:
    _execute(cursor, "insert into reproq.schema_migrations (version, name, checksum)"
                     " values (%s, %s, %s)", (version, name, checksum))


# ---------------------------------------------------------------------------------------------
# Cluster administration (embedded PostgreSQL, tests)


def create_database(cursor, name: str, template: str | None = None) -> None:
    sql = f'create database "{name}"' + (f' template "{template}"' if template else "")
    _execute(cursor, sql)


def drop_database(cursor, name: str) -> None:
    _execute(cursor, f'drop database if exists "{name}" with (force)')


def database_exists(cursor, name: str) -> bool:
    return bool(_scalar(cursor, "select 1 from pg_database where datname = %s", (name,)))
