"""Wake-ups: one LISTEN connection per runner (channel ``reproq``, payload = the comma-joined
queue names of an enqueue call), or nothing at all when polling only (``--no-listen``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from reproq_runner import queries
from reproq_runner.database import Database

log = logging.getLogger("reproq.runner")


class PollingNotifier:
    """No wake-ups: the runner finds work by polling (PgBouncer transaction pooling)."""

    listening = False

    def fileno(self) -> int | None:
        return None

    def ensure_connected(self) -> bool:
        return True

    def seconds_until_retry(self) -> float | None:
        return None

    def wakeups(self) -> bool:
        return False

    def close(self) -> None:
        pass


class ListenNotifier:
    """Listens on ``reproq``; :meth:`wakeups` says whether one of our queues got work."""

    listening = True

    def __init__(self, dsn: str, queues: Sequence[str]) -> None:
        self.queues = set(queues)
        self.database = Database(dsn, name="listen", on_connect=queries_listen)
        self.just_connected = False

    def fileno(self) -> int | None:
        return self.database.connection.fileno() if self.database.healthy else None

    def ensure_connected(self) -> bool:
        was_healthy = self.database.healthy
        connected = self.database.ensure_connected()
        if connected and not was_healthy:
            # Notifications sent while we were away are lost: look for work once.
            self.just_connected = True
        return connected

    def seconds_until_retry(self) -> float | None:
        return None if self.database.healthy else self.database.seconds_until_retry()

    def wakeups(self) -> bool:
        """Drain pending notifications; True when one names a queue we serve (or after a
        reconnect). A broken connection is closed and retried with backoff."""
        woke, self.just_connected = self.just_connected, False
        if not self.database.healthy:
            return woke
        pgconn = self.database.connection.pgconn
        try:
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                woke = woke or self._names_our_queue(notify.extra.decode())
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the listening connection is broken")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.database._lost(exc)
            return True
        return woke

    def _names_our_queue(self, payload: str) -> bool:
        return not payload or not self.queues.isdisjoint(payload.split(","))

    def close(self) -> None:
        self.database.close()


def queries_listen(connection: psycopg.Connection) -> None:
    with connection.cursor() as cursor:
        queries.listen(cursor)
