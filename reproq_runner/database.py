"""The runner's database connections: autocommit psycopg connections that are reopened with
backoff after an outage, so a PostgreSQL restart costs a pause, never a task."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from reproq_runner.logs import password_of, redact_text

log = logging.getLogger("reproq.runner")
T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5
# TCP settings for a peer that vanishes without closing the connection (a host gone, a NAT or
# firewall dropping an idle connection): keepalive probes after 30 s idle, every 10 s, 3 of
# them; data unacknowledged for 60 s fails the call. Without them a call on such a connection
# waits for the kernel's retransmissions (about 15 minutes) and LISTEN never hears of it. The
# DSN's own values win; unix sockets ignore them.
TCP_DEFAULTS = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                "keepalives_count": "3", "tcp_user_timeout": "60000"}


# What makes a call fail whatever it sends, until the database is reachable and writable
# again: the connection (and the server's state, classes 08, 53, 57: psycopg's
# OperationalError), and a read-only server (25006: a failover that reached a standby,
# default_transaction_read_only during maintenance). The call is retried on a new connection
# after the backoff; what it carried (claimed tasks, finished outcomes) is kept meanwhile.
# Any other error is about what the call sent.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError,
               psycopg.errors.ReadOnlySqlTransaction)


def too_large(exc: BaseException) -> bool:
    """Class 54, program limit exceeded, which psycopg counts an OperationalError: for the
    outcomes the recorder stores, a value or a batch too large for PostgreSQL ("total size of
    jsonb array elements exceeds the maximum"), which would fail however often it was sent.
    (For calls that notify, 54000 is also a full NOTIFY queue, which passes: an outage.)"""
    return (getattr(exc, "sqlstate", None) or "").startswith("54")


class Backoff:
    """Capped exponential delays with jitter: 0.1 s, 0.2 s, 0.4 s ... at most ``cap``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base, self.cap = base, cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.failures = 0


def connect(dsn: str, *, prepare: bool = True) -> psycopg.Connection:
    given = conninfo_to_dict(dsn)
    defaults = {"connect_timeout": str(CONNECT_TIMEOUT_SECONDS), **TCP_DEFAULTS}
    if "service" in given:
        defaults = {}  # the service file's values (not read here) must win too
    connection = psycopg.connect(dsn, autocommit=True,
                                 **{k: v for k, v in defaults.items() if k not in given})
    if not prepare:
        # Transaction-pooling PgBouncer cannot keep server-side prepared statements.
        connection.prepare_threshold = None
    return connection


class Database:
    """One connection, opened lazily; a failed call closes it and schedules a reconnect.

    ``call`` returns ``(True, result)`` or ``(False, None)`` after a connection-level error,
    so the runner keeps supervising its children while the database is away.
    """

    def __init__(self, dsn: str, *, name: str = "main", prepare: bool = True,
                 on_connect: Callable[[psycopg.Connection], None] | None = None,
                 refused: Callable[[BaseException], bool] = lambda exc: False) -> None:
        """``refused`` picks the :data:`UNAVAILABLE` errors that are about what was sent all
        the same: ``call`` raises those instead of waiting for the database."""
        self.dsn = dsn
        self.refused = refused
        self.name = name
        self.prepare = prepare
        self.on_connect = on_connect
        self.connection: psycopg.Connection | None = None
        self.backoff = Backoff()
        self.retry_at = 0.0
        self.outage_started: float | None = None

    @property
    def healthy(self) -> bool:
        return self.connection is not None and not self.connection.closed

    def seconds_until_retry(self) -> float:
        return max(0.0, self.retry_at - time.monotonic())

    def ensure_connected(self) -> bool:
        if self.healthy:
            return True
        if time.monotonic() < self.retry_at:
            return False
        try:
            self.connection = connect(self.dsn, prepare=self.prepare)
            if self.on_connect is not None:
                self.on_connect(self.connection)
        except psycopg.Error as exc:
            self._lost(exc)
            return False
        if self.outage_started is not None:
            log.info("%s database connection restored after %.1f s", self.name,
                     time.monotonic() - self.outage_started)
        self.outage_started = None
        self.backoff.reset()
        return True

    def call(self, action: Callable[..., T], *args, **kwargs) -> tuple[bool, T | None]:
        """Run ``action(cursor, *args, **kwargs)``; connection problems become (False, None)."""
        if not self.ensure_connected():
            return False, None
        try:
            with self.connection.cursor() as cursor:
                return True, action(cursor, *args, **kwargs)
        except UNAVAILABLE as exc:
            if self.refused(exc):
                raise
            self._lost(exc)
            return False, None

    def _lost(self, exc: BaseException) -> None:
        if self.outage_started is None:
            self.outage_started = time.monotonic()
            log.warning("%s database connection lost: %s; reconnecting with backoff",
                        self.name, redact_text(str(exc).strip(), password_of(self.dsn)))
        self.close()
        self.retry_at = time.monotonic() + self.backoff.next_delay()

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self.connection = None
