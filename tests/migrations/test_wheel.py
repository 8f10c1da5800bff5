"""The built wheel ships the SQL files, and an installed copy migrates a database with them."""

import subprocess
import sys
import zipfile

import pytest

from reproq_runner import migrate
from tests.migrations.helpers import ROOT, recorded, run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    [path] = out.glob("reproq_django-*.whl")
    return path


def test_wheel_contains_every_migration_unchanged(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist()
                   if name.startswith("reproq_runner/sql/migrations/")}
    assert shipped == {f"reproq_runner/sql/migrations/{m.path.name}": m.path.read_bytes()
                       for m in migrate.available_migrations()}


def test_an_installed_copy_finds_its_sql_and_migrates(wheel, tmp_path, empty_dsn):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    where = run(["-c", "import reproq_runner.migrate as m; print(m.sql_dir())"], empty_dsn,
                cwd=elsewhere, env={"PYTHONPATH": str(site)})
    assert where.stdout.strip() == str(site / "reproq_runner" / "sql"), where.stderr
    result = run(["-m", "reproq_runner", "migrate", "--dsn", empty_dsn], empty_dsn,
                 cwd=elsewhere, env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert len(recorded(empty_dsn)) == len(migrate.available_migrations())
