"""The one schema applier: applies ``sql/migrations/NNNN_name.sql`` files in order.

Django-free. ``python -m reproq_runner migrate``, ``manage.py reproq migrate-worker`` and the
Django migrations of ``reproq_django`` all call :func:`apply_migrations`, so any order of them on
any database converges on the same schema.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from reproq_runner import queries
from reproq_runner.errors import (ConcurrentApplier, MigrationChecksumMismatch, SchemaError,
                                  SchemaOutdated)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def sql_dir() -> Path:
    """The SQL folder: packaged inside the wheel, or ``sql/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise SchemaError(f"reproq's SQL files are missing (looked in {here / 'sql'} and "
                      f"{here.parent / 'sql'})")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@cache
def available_migrations() -> tuple[Migration, ...]:
    migrations = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise SchemaError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migration versions must run 1, 2, 3… without gaps; found {versions}")
    return tuple(migrations)


def required_version() -> int:
    """The schema version this code needs: its newest migration."""
    return available_migrations()[-1].version


def _check_checksums(applied: list[queries.AppliedMigration]) -> None:
    shipped = {m.version: m for m in available_migrations()}
    for record in applied:
        migration = shipped.get(record.version)
        if migration and migration.checksum != record.checksum:
            raise MigrationChecksumMismatch(
                f"sql/migrations/{migration.path.name} differs from the copy applied to this "
                f"database (recorded checksum {record.checksum[:12]}…, file "
                f"{migration.checksum[:12]}…). Applied migrations must never be edited: "
                "restore the file and put the change in a new numbered migration."
            )


def apply_migrations(cursor, up_to: int | None = None) -> list[Migration]:
    """Apply pending migrations (through version ``up_to``) inside the caller's transaction.

    Holds a transaction-scoped advisory lock, so concurrent appliers queue up and the later
    ones find nothing to do. Returns the migrations applied by this call.

    A transaction above READ COMMITTED reads one snapshot, taken by its first statement: one
    that waited for another applier cannot see that applier's work, and is refused with
    :class:`ConcurrentApplier` (run it again) instead of applying the same files twice.
    """
    if not queries.try_lock_migrations(cursor):
        queries.lock_migrations(cursor)  # another applier is at work: wait for it
        isolation = queries.transaction_isolation(cursor)
        if isolation != "read committed":
            raise ConcurrentApplier(
                "another applier migrated this database while this one waited, and this "
                f"transaction ({isolation}) cannot see its work: run this again (or migrate "
                "under READ COMMITTED, as reproq-runner migrate does)")
    if not queries.migration_table_exists(cursor):
        # DDL only on a database never migrated: on an up-to-date one, a role that may not
        # create schemas or own the table (an app's deploy role) finds nothing to do.
        queries.ensure_migration_table(cursor)
    applied = queries.applied_migrations(cursor)
    _check_checksums(applied)
    done = {record.version for record in applied}
    pending = [m for m in available_migrations()
               if m.version not in done and (up_to is None or m.version <= up_to)]
    for migration in pending:
        queries.run_script(cursor, migration.sql)
        queries.record_migration(cursor, migration.version, migration.name, migration.checksum)
    return pending


def connect_for_migrating(dsn: str):
    """A psycopg connection for :func:`apply_migrations`; its ``with`` block is one
    transaction, committed at the end."""
    import psycopg

    conn = psycopg.connect(dsn)
    # Whatever the database's default: an applier that waits for another must see its work.
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


def migrate_dsn(dsn: str, up_to: int | None = None) -> list[Migration]:
    """Apply pending migrations to the database at ``dsn`` in one transaction."""
    with connect_for_migrating(dsn) as conn, conn.cursor() as cursor:
        return apply_migrations(cursor, up_to)


def outcome_lines(cursor, applied: list[Migration]) -> list[str]:
    """What a migrate command prints: each file applied, or that there was nothing to do, and
    whether the database holds migrations this code does not ship (a newer reproq migrated it,
    and this code is older: a rollback, or a runner not yet upgraded)."""
    lines = [f"applied {migration.path.name}" for migration in applied]
    if not applied:
        lines.append("reproq schema is up to date")
    newer = newer_versions(cursor)
    if newer:
        lines.append(f"note: {newer_schema_text(newer)}; nothing was undone (migrations only "
                     "go forward)")
    return lines


def newer_versions(cursor) -> list[int]:
    """Versions recorded in the database that this code does not ship."""
    return [record.version for record in queries.applied_migrations(cursor)
            if record.version > required_version()]


def newer_schema_text(newer: list[int]) -> str:
    return (f"this database also has migration(s) {newer}, newer than this code (which ships "
            f"1–{required_version()}): a newer reproq migrated it")


def check_schema(cursor) -> None:
    """Raise unless the database has every migration this code needs, unedited."""
    applied = queries.applied_migrations(cursor)
    _check_checksums(applied)
    missing = sorted({m.version for m in available_migrations()}
                     - {record.version for record in applied})
    if missing:
        raise SchemaOutdated(
            f"the reproq schema is at version {max((r.version for r in applied), default=0)} "
            f"but this code needs {required_version()} (missing {missing}). Run "
            "`python -m reproq_runner migrate --dsn ...` or `python manage.py reproq "
            "migrate-worker` (or `python manage.py migrate`)."
        )
