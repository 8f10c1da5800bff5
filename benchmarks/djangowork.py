"""Enqueue through Django's Tasks API and ``ReproqBackend.bulk_enqueue`` (in this process)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import time

_args = itertools.count(5_000_000_000, 1_000_000)


def unavailable() -> str | None:
    """Why the Django workloads cannot run yet, or None."""
    if importlib.util.find_spec("reproq_django.backend") is None:
        return "reproq_django.backend (ReproqBackend) is not built yet"
    return None


def setup() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    import django

    django.setup()


def backend():
    from django.tasks import task_backends

    return task_backends["default"]


def enqueue_one_per_call(n: int) -> float:
    """``noop.enqueue(i)`` in autocommit mode: each call is its own transaction."""
    from benchmarks.tasks import noop

    base = next(_args)
    noop.enqueue(base)  # warm: connection, prepared state
    started = time.perf_counter()
    for i in range(1, n + 1):
        noop.enqueue(base + i)
    return n / (time.perf_counter() - started)


def bulk_enqueue(n: int) -> float:
    """``backend.bulk_enqueue`` of ``n`` (task, args, kwargs) in one call."""
    from benchmarks.tasks import noop

    base = next(_args)
    started = time.perf_counter()
    results = backend().bulk_enqueue([(noop, (base + i,), {}) for i in range(n)])
    elapsed = time.perf_counter() - started
    if len(results) != n:
        raise RuntimeError(f"bulk_enqueue returned {len(results)} results for {n} tasks")
    return n / elapsed


def close_connections() -> None:
    from django.db import connections

    connections.close_all()
