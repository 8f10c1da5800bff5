"""The embedded PostgreSQL (``make demo``, the test suite, ``dump-schema``) in a folder whose
path has a space: its DSN quoted the socket folder, and every connection failed."""

import psycopg

from reproq_runner.embedded import EmbeddedPostgres


def test_a_cluster_in_a_path_with_a_space_accepts_connections(tmp_path):
    cluster = EmbeddedPostgres(tmp_path / "with space" / "pg").start()
    try:
        with psycopg.connect(cluster.dsn()) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
    finally:
        cluster.stop()
