"""reproq_runner.migrate: idempotence, checksums, the stale-schema guard, the snapshot."""

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from reproq_runner import migrate
from reproq_runner.errors import MigrationChecksumMismatch, SchemaOutdated
from tests.migrations.helpers import ROOT, dbname, dump, recorded, run
from tests.waiting import wait_for

EVERY_VERSION = [m.version for m in migrate.available_migrations()]


def test_applier_is_idempotent(empty_dsn):
    assert [m.version for m in migrate.migrate_dsn(empty_dsn)] == EVERY_VERSION
    first = dump(empty_dsn)
    assert migrate.migrate_dsn(empty_dsn) == []
    assert dump(empty_dsn) == first
    assert [v for v, _ in recorded(empty_dsn)] == EVERY_VERSION


def test_each_file_is_recorded_with_its_name_and_checksum(empty_dsn):
    migrate.migrate_dsn(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute("select version, name, checksum from reproq.schema_migrations"
                            " order by version").fetchall()
    assert rows == [(m.version, m.name, m.checksum) for m in migrate.available_migrations()]


def test_applying_in_steps_converges_on_the_same_schema(empty_dsn, dsn):
    migrate.migrate_dsn(empty_dsn, up_to=1)
    assert [v for v, _ in recorded(empty_dsn)] == [1]
    migrate.migrate_dsn(empty_dsn)
    assert dump(empty_dsn) == dump(dsn)


def test_a_failing_migration_leaves_nothing_behind(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        # Simulate a clash half-way through 0002: its first object already exists.
        conn.execute("create schema reproq")
        conn.execute("create table reproq.task_runs (x integer)")
    with pytest.raises(psycopg.errors.DuplicateTable):
        migrate.migrate_dsn(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("select to_regclass('reproq.schema_migrations')").fetchone() == (
            None,)


@pytest.fixture
def tampered(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("update reproq.schema_migrations set checksum = repeat('0', 64)"
                     " where version = 1")
    return dsn


def test_checksum_mismatch_is_refused_naming_the_file(tampered):
    with pytest.raises(MigrationChecksumMismatch, match=r"sql/migrations/0001_create_schema\.sql"):
        migrate.migrate_dsn(tampered)
    with psycopg.connect(tampered) as conn, pytest.raises(MigrationChecksumMismatch,
                                                          match="must never be edited"):
        migrate.check_schema(conn.cursor())


def test_checksum_mismatch_fails_the_cli_with_the_file_name(tampered):
    result = run(["-m", "reproq_runner", "migrate", "--dsn", tampered], tampered)
    assert result.returncode == 1
    assert "0001_create_schema.sql differs from the copy applied" in result.stderr


def test_check_schema_accepts_a_current_schema(dsn):
    with psycopg.connect(dsn) as conn:
        migrate.check_schema(conn.cursor())


@pytest.mark.parametrize("up_to", [0, 1])
def test_check_schema_refuses_an_outdated_schema_with_the_fix(empty_dsn, up_to):
    if up_to:
        migrate.migrate_dsn(empty_dsn, up_to=up_to)
    with psycopg.connect(empty_dsn) as conn, pytest.raises(SchemaOutdated) as info:
        migrate.check_schema(conn.cursor())
    message = str(info.value)
    assert f"at version {up_to} but this code needs {EVERY_VERSION[-1]}" in message
    assert "python -m reproq_runner migrate" in message and "migrate-worker" in message


@pytest.fixture
def deploy_role(dsn):
    """A login role that may read the migration record and nothing more: no CREATE on the
    database, owner of nothing (an app's deploy role)."""
    role = f"deployer_{dbname(dsn)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema reproq to {role}")
        conn.execute(f"grant select on reproq.schema_migrations to {role}")
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"drop owned by {role}")
        conn.execute(f"drop role {role}")


def test_an_up_to_date_database_is_migrated_without_ddl_rights(deploy_role):
    """It failed: every run created the schema and table "if not exists" and commented them,
    which needs CREATE on the database and ownership even when there is nothing to do."""
    assert migrate.migrate_dsn(deploy_role) == []
    result = run(["-m", "reproq_runner", "migrate", "--dsn", deploy_role], deploy_role)
    assert (result.returncode, result.stdout) == (0, "reproq schema is up to date\n")


def test_a_schema_newer_than_the_code_is_reported_not_called_up_to_date(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("insert into reproq.schema_migrations (version, name, checksum)"
                     " values (%s, 'from_the_future', repeat('0', 64))", (EVERY_VERSION[-1] + 1,))
    result = run(["-m", "reproq_runner", "migrate", "--dsn", dsn], dsn)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "reproq schema is up to date",
        f"note: this database also has migration(s) [{EVERY_VERSION[-1] + 1}], newer than this "
        f"code (which ships 1–{EVERY_VERSION[-1]}): a newer reproq migrated it; nothing was "
        "undone (migrations only go forward)"]
    with psycopg.connect(dsn) as conn:
        migrate.check_schema(conn.cursor())  # the runner still starts: it may be a rollback


def test_schema_snapshot_equals_all_migrations_applied(empty_dsn):
    migrate.migrate_dsn(empty_dsn)
    snapshot = (ROOT / "sql" / "schema.sql").read_text(encoding="utf-8")
    assert dump(empty_dsn) == snapshot, (
        "sql/schema.sql is stale: run `.venv/bin/python -m reproq_runner dump-schema"
        " > sql/schema.sql`")


def test_migration_files_are_numbered_without_gaps():
    files = sorted(p.name for p in (ROOT / "sql" / "migrations").iterdir())
    assert files == [m.path.name for m in migrate.available_migrations()]
    assert EVERY_VERSION == list(range(1, len(files) + 1))


def test_0005_takes_tasks_already_being_cancelled_out_of_deduplication(empty_dsn):
    migrate.migrate_dsn(empty_dsn, up_to=4)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        [doomed, kept] = [conn.execute("select reproq.enqueue('app.tasks.t', %s::jsonb)",
                                       (f'{{"args": [{i}], "kwargs": {{}}}}',)).fetchone()[0]
                          for i in (1, 2)]
        conn.execute("select reproq.claim('w', '{default}', 2)")
        assert conn.execute("select reproq.cancel(%s)", (doomed,)).fetchone() == ("RUNNING",)
        migrate.migrate_dsn(empty_dsn)
        rows = conn.execute("select result_id, dedup from reproq.task_runs order by result_id")
        assert rows.fetchall() == [(doomed, False), (kept, True)]


def test_an_applier_that_waited_above_read_committed_is_refused_not_run_twice(empty_dsn):
    """Under REPEATABLE READ (a database default, or Django's OPTIONS["isolation_level"]) the
    snapshot is taken before the lock is granted: the applier that waited could not see the
    other's work and applied 0001 again (DuplicateTable). It now says to run it again; and
    reproq-runner migrate runs under READ COMMITTED whatever the database's default."""
    import threading

    from reproq_runner.errors import ConcurrentApplier

    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        name = admin.info.dbname
        admin.execute(f"alter database {name} set default_transaction_isolation = "
                      "'repeatable read'")
    outcome = {}
    with psycopg.connect(empty_dsn) as first:
        with first.cursor() as cursor:
            migrate.apply_migrations(cursor)  # holds the lock until `first` commits

            def second_applier():
                with psycopg.connect(empty_dsn) as second, second.cursor() as cursor:
                    outcome["isolation"] = second.execute(
                        "show transaction_isolation").fetchone()[0]
                    second.rollback()
                    try:
                        migrate.apply_migrations(cursor)
                    except Exception as exc:  # noqa: BLE001 - the test reports it
                        outcome["error"] = exc

            thread = threading.Thread(target=second_applier)
            thread.start()
            wait_for(lambda: lock_waiters(empty_dsn) == 1, message="the second applier waits")
        first.commit()
    thread.join(30)
    assert outcome["isolation"] == "repeatable read"
    assert isinstance(outcome["error"], ConcurrentApplier), outcome
    assert migrate.migrate_dsn(empty_dsn) == []  # the CLI's path: READ COMMITTED, up to date


def lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("select count(*) from pg_locks where locktype = 'advisory'"
                            " and not granted").fetchone()[0]
