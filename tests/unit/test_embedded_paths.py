"""The embedded PostgreSQL (``make demo``, the test suite, ``dump-schema``): in a folder whose
path has a space (its DSN quoted the socket folder, and every connection failed), and after a
crash whose ``postmaster.pid`` names a PID that another process has since taken."""

import os
import subprocess

import psycopg

from reproq_runner.embedded import EmbeddedPostgres


def test_a_cluster_in_a_path_with_a_space_accepts_connections(tmp_path):
    cluster = EmbeddedPostgres(tmp_path / "with space" / "pg").start()
    try:
        with psycopg.connect(cluster.dsn()) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
    finally:
        cluster.stop()


def test_a_pid_file_naming_another_live_process_of_the_server_user_is_stale(tmp_path):
    """start() believed the server was running (pg_ctl status saw the PID alive) and returned
    without starting it, so `make demo` after a crash and a reboot could not connect."""
    cluster = EmbeddedPostgres(tmp_path / "pg").start()
    cluster.stop()
    other = subprocess.Popen(["sleep", "300"],
                             user="postgres" if os.geteuid() == 0 else None)
    try:
        stale = cluster.data_dir / "postmaster.pid"
        stale.write_text(f"{other.pid}\n{cluster.data_dir}\n")
        assert cluster.running()  # what pg_ctl reports: the reason it stayed down
        cluster.start()
        with psycopg.connect(cluster.dsn()) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
        assert stale.read_text().split("\n", 1)[0] != str(other.pid)  # the new server's
        cluster.start()  # running, and its own pid file is left alone
        with psycopg.connect(cluster.dsn()) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
    finally:
        other.kill()
        cluster.stop()
