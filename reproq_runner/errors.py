"""Named exceptions for reproq's reserved SQLSTATEs, and the one place that maps them.

SQL functions raise class ``RQ`` SQLSTATEs on bad input (see docs/sql-api.md); Python callers
see the exceptions below instead of a bare database error.
"""

from __future__ import annotations


class ReproqError(Exception):
    """Base class of every error reproq raises on purpose."""

    sqlstate: str | None = None


class InvalidArgument(ReproqError, ValueError):
    """A reproq function was called with an argument it refuses (RQ003)."""

    sqlstate = "RQ003"


class InvalidTaskPath(InvalidArgument):
    """The task path is empty or not a dotted import path (RQ001)."""

    sqlstate = "RQ001"


class InvalidSpec(InvalidArgument):
    """The spec is not ``{"args": [...], "kwargs": {...}}`` or not storable JSON (RQ002)."""

    sqlstate = "RQ002"


class TaskNotFound(ReproqError, LookupError):
    """No task has that result id (RQ004)."""

    sqlstate = "RQ004"


class LeaseLost(ReproqError):
    """The caller's lease on a task expired and the task was reclaimed (RQ005)."""

    sqlstate = "RQ005"


class InvalidState(ReproqError):
    """The task is not in a state that allows the operation (RQ006)."""

    sqlstate = "RQ006"


class UnstorableOutcome(ReproqError):
    """The database refused a task's outcome; the attempt is recorded as failed with this."""


class FlagError(ReproqError, ValueError):
    """A flag's (or a METRICS_* variable's) value the runner cannot use: it stops at once with
    exit 2 and the message."""


class SchemaError(ReproqError):
    """The database schema is missing, older than this code, or was edited."""


class SchemaOutdated(SchemaError):
    """The database lacks migrations this code needs."""


class MigrationChecksumMismatch(SchemaError):
    """An applied migration file's recorded checksum differs from the file shipped now."""


class ConcurrentApplier(SchemaError):
    """Another applier migrated the database while this one waited, in a transaction whose
    snapshot cannot see that work (above READ COMMITTED): run it again."""


BY_SQLSTATE: dict[str, type[ReproqError]] = {
    cls.sqlstate: cls
    for cls in (InvalidTaskPath, InvalidSpec, InvalidArgument, TaskNotFound, LeaseLost,
                InvalidState)
}


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, also when wrapped by Django's database layer."""
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return state
    return None


def translate(exc: BaseException) -> BaseException:
    """The named reproq exception for a database error, or the error itself."""
    cls = BY_SQLSTATE.get(sqlstate_of(exc) or "")
    if cls is None:
        return exc
    diag = getattr(exc, "diag", None) or getattr(exc.__cause__, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc)
    return cls(message)
