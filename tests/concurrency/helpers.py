"""Helpers for tests that race several real connections against one database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def race(count: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Run ``work(i, barrier)`` in ``count`` threads at once; re-raise the first error."""
    barrier = threading.Barrier(count, timeout=60)

    def guarded(index: int) -> Any:
        try:
            return work(index, barrier)
        except BaseException:
            barrier.abort()  # the others stop waiting for a racer that will never arrive
            raise

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(guarded, i) for i in range(count)]
        return [future.result(timeout=120) for future in futures]



def waits_on_a_lock(observer, pid: int) -> bool:
    """Whether backend ``pid`` is blocked on a lock (seen from another connection)."""
    row = observer.execute("select wait_event_type from pg_stat_activity where pid = %s",
                           (pid,)).fetchone()
    return bool(row) and row[0] == "Lock"
