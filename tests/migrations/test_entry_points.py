"""Django `migrate`, `reproq migrate-worker` and `python -m reproq_runner migrate`, in any order,
on a fresh or an already-migrated database, end with the same schema."""

import re

import psycopg
import pytest

from reproq_runner import migrate
from tests.migrations.helpers import ROOT, dump, recorded, run

DJANGO_MIGRATE = ["-m", "django", "migrate", "--noinput"]
MIGRATE_WORKER = ["-m", "django", "reproq", "migrate-worker"]
RUNNER_MIGRATE = ["-m", "reproq_runner", "migrate"]

ORDERS = {
    "migrate-then-worker": [DJANGO_MIGRATE, MIGRATE_WORKER],
    "worker-then-migrate": [MIGRATE_WORKER, DJANGO_MIGRATE],
    "runner-then-migrate-then-worker": [RUNNER_MIGRATE, DJANGO_MIGRATE, MIGRATE_WORKER],
    "migrate-then-runner": [DJANGO_MIGRATE, RUNNER_MIGRATE],
}


def command(args, dsn):
    return args + ["--dsn", dsn] if args is RUNNER_MIGRATE else args


def django_recorded(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("select name from django_migrations where app = 'reproq_django'"
                            " order by name").fetchall()


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_entry_points_in_any_order(empty_dsn, dsn, order):
    for step, args in enumerate(order):
        result = run(command(args, empty_dsn), empty_dsn)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        if step and args is not DJANGO_MIGRATE:
            assert "up to date" in result.stdout
    assert [v for v, _ in recorded(empty_dsn)] == [m.version for m in
                                                    migrate.available_migrations()]
    assert dump(empty_dsn) == dump(dsn)
    if DJANGO_MIGRATE in order:
        sql_names = [(f"{m.version:04d}_{m.name}",) for m in migrate.available_migrations()]
        assert set(sql_names) <= set(django_recorded(empty_dsn))


def test_django_migrate_finishes_what_an_older_applier_started(empty_dsn, dsn):
    migrate.migrate_dsn(empty_dsn, up_to=1)  # e.g. a worker of the previous release
    result = run(DJANGO_MIGRATE, empty_dsn)
    assert result.returncode == 0, result.stderr
    assert dump(empty_dsn) == dump(dsn)


def test_every_sql_file_has_exactly_one_django_migration_applying_it():
    django_dir = ROOT / "reproq_django" / "migrations"
    applying = {}
    for path in sorted(django_dir.glob("[0-9]*.py")):
        for version in re.findall(r"apply_sql_through\((\d+)\)", path.read_text()):
            applying.setdefault(int(version), []).append(path.stem)
    expected = {m.version: [f"{m.version:04d}_{m.name}"] for m in migrate.available_migrations()}
    assert applying == expected
