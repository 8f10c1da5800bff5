"""Fixtures shared by every test layer. The cluster itself lives in tests/pg.py."""

from __future__ import annotations

import psycopg
import pytest

from tests import pg


@pytest.fixture
def dsn():
    """DSN of a fresh database cloned from the migrated template."""
    database = pg.new_database(migrated=True)
    yield database
    pg.drop_database(database)


@pytest.fixture
def empty_dsn():
    """DSN of a fresh database without the reproq schema."""
    database = pg.new_database(migrated=False)
    yield database
    pg.drop_database(database)


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def cur(conn):
    with conn.cursor() as cursor:
        yield cursor


@pytest.fixture
def connect(dsn):
    """Open extra autocommit connections to the test database (closed at teardown)."""
    opened = []

    def _connect(**kwargs):
        connection = psycopg.connect(dsn, autocommit=True, **kwargs)
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        connection.close()
