"""Django's own ``tests/tasks`` suite, run against ReproqBackend.

The test files come from the Django sdist matching the installed version (``pip download
django==<version> --no-binary :all:``), cached under ``<venv>/reproq-django-tests/<version>``
so later runs neither download nor extract again. Two thin façades stand in for the built-in
backends, by rewriting only their dotted paths in the fetched files:

* ``DummyBackend``     → :class:`EnqueueOnlyBackend`: ReproqBackend plus DummyBackend's
  ``.results``/``.clear()`` view over the results this instance enqueued;
* ``ImmediateBackend`` → :class:`DrainingBackend`: ReproqBackend that, after each enqueue,
  drains the queue with the real claim/execute/complete path (``run_once`` +
  ``DjangoExecutor``) in this process, then returns the stored result.

``SimpleTestCase`` classes run as ``TestCase`` (each test in a rolled-back transaction) because
the backend's state lives in the database. :data:`DIVERGENCES` lists the tests skipped and
why; docs/django.md repeats the list.
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
import tarfile
import unittest
from pathlib import Path

import django
from django.db import connections
from django.tasks.exceptions import TaskResultDoesNotExist
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings

from reproq_django import conf
from reproq_django.backend import ReproqBackend
from reproq_runner import queries
from reproq_runner.django_glue import DjangoExecutor
from reproq_runner.inprocess import run_once

MODULES = ("test_tasks", "test_dummy_backend", "test_immediate_backend")
FILES = ("__init__.py", "tasks.py", *(f"{name}.py" for name in MODULES))
REWRITES = {
    "from django.tasks.backends.dummy import DummyBackend":
        "from tests.django.conformance import EnqueueOnlyBackend as DummyBackend",
    "from django.tasks.backends.immediate import ImmediateBackend":
        "from tests.django.conformance import DrainingBackend as ImmediateBackend",
    "django.tasks.backends.dummy.DummyBackend": "tests.django.conformance.EnqueueOnlyBackend",
    "django.tasks.backends.immediate.ImmediateBackend":
        "tests.django.conformance.DrainingBackend",
}

_INMEMORY = "inherent to an in-memory backend"
DIVERGENCES = {
    ("TaskTestCase", "test_refresh_result"):
        f"{_INMEMORY}: the async test calls the synchronous refresh(), which Django forbids "
        "from an event loop when it touches the database (arefresh() is covered and passes)",
    ("DummyBackendTestCase", "test_refresh_result"):
        f"{_INMEMORY}: it mutates the stored object in memory; reproq's store is a table",
    ("DummyBackendTestCase", "test_refresh_result_async"):
        f"{_INMEMORY}: it mutates the stored object in memory; reproq's store is a table",
    ("ImmediateBackendTestCase", "test_cannot_get_result"):
        "ImmediateBackend cannot get results; reproq can (supports_get_result)",
    ("ImmediateBackendTestCase", "test_cannot_refresh_result"):
        "ImmediateBackend cannot refresh results; reproq can (supports_get_result)",
    ("ImmediateBackendTestCase", "test_cannot_pass_run_after"):
        "ImmediateBackend cannot defer; reproq can (supports_defer)",
    ("ImmediateBackendTestCase", "test_throws_keyboard_interrupt"):
        "ImmediateBackend runs the task inside enqueue() and lets KeyboardInterrupt reach the "
        "caller; reproq runs tasks in a runner, where a KeyboardInterrupt raised by a task is "
        "a failed attempt (the runner must survive its tasks)",
}


# ---------------------------------------------------------------------------------------------
# Façades


_live_facades: list[ReproqBackend] = []


class EnqueueOnlyBackend(ReproqBackend):
    """DummyBackend's view: ``results`` lists what this instance enqueued (as enqueue returned
    it, in memory like DummyBackend's list, so async tests can read it); ``get_result`` finds
    only those ids, reading the database; ``clear()`` forgets them. Every enqueue is a new
    task, as with DummyBackend."""

    default_options = {"DEDUP_ACTIVE": False}

    def __init__(self, alias, params):
        super().__init__(alias, params)
        self.results = []
        _live_facades.append(self)

    @property
    def result_ids(self) -> list[str]:
        return [result.id for result in self.results]

    def bulk_enqueue(self, calls):
        results = super().bulk_enqueue(calls)
        self.results.extend(copy.deepcopy(results))
        return results

    def get_result(self, result_id):
        if str(result_id) not in self.result_ids:
            raise TaskResultDoesNotExist(str(result_id))
        return super().get_result(result_id)

    def clear(self):
        cancel_ready(self.result_ids)
        self.results.clear()


class DrainingBackend(ReproqBackend):
    """ImmediateBackend's behaviour: enqueue, then run the queue with the real runner code in
    this process (one attempt, like ImmediateBackend) and return the stored outcome."""

    default_options = {"DEDUP_ACTIVE": False, "MAX_ATTEMPTS": 1}

    def bulk_enqueue(self, calls):
        results = super().bulk_enqueue(calls)
        executor = DjangoExecutor()
        for queue_name in {result.task.queue_name for result in results}:
            alias = conf.database_for_queue(queue_name)
            run_once(connections[alias], executor, [queue_name])
        return [self.get_result(result.id) for result in results]


def cancel_ready(result_ids: list[str]) -> None:
    """Leave no READY task behind for other tests' runners to pick up."""
    with connections["default"].cursor() as cursor:
        for run in queries.get_task_runs(cursor, [int(result_id) for result_id in result_ids]):
            if run.status == "READY":
                queries.cancel(cursor, run.result_id)


def cancel_facade_leftovers() -> None:
    while _live_facades:
        facade = _live_facades.pop()
        if isinstance(facade, EnqueueOnlyBackend):
            facade.clear()


# ---------------------------------------------------------------------------------------------
# Fetching and loading


def cache_root() -> Path:
    return Path(sys.prefix) / "reproq-django-tests" / django.get_version()


def fetch_django_task_tests() -> Path:
    """The folder holding the rewritten ``tasks`` package; downloads once per version."""
    root = cache_root()
    package = root / "tasks"
    if all((package / name).exists() for name in FILES):
        return root
    sdist = _download_sdist(django.get_version())
    package.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for name in FILES:
            member = archive.extractfile(f"django-{django.get_version()}/tests/tasks/{name}")
            source = member.read().decode("utf-8")
            for old, new in REWRITES.items():
                source = source.replace(old, new)
            (package / name).write_text(source, encoding="utf-8")
    return root


def _download_sdist(version: str) -> Path:
    folder = Path(sys.prefix) / "reproq-django-sdist"
    sdist = folder / f"django-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", f"django=={version}",
                        "--no-binary", ":all:", "--no-deps", "--quiet", "-d", str(folder)],
                       check=True)
    return sdist


def conformance_test_cases() -> dict[str, type]:
    """Django's test classes, adapted to run against ReproqBackend, by name."""
    root = str(fetch_django_task_tests())
    if root not in sys.path:
        sys.path.insert(0, root)
    cases = {}
    for module_name in MODULES:
        module = importlib.import_module(f"tasks.{module_name}")
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, SimpleTestCase)
                    and value.__module__ == module.__name__):
                cases[f"Django_{name}"] = _adapted(value)
    return cases


def _adapted(case: type) -> type:
    bases = (case,) if issubclass(case, TransactionTestCase) else (case, TestCase)
    attributes = {"databases": {"default"}, "__module__": __name__,
                  "tearDown": _tear_down(case)}
    for (class_name, test_name), reason in DIVERGENCES.items():
        if class_name == case.__name__:
            attributes[test_name] = unittest.skip(f"divergence: {reason}")(
                getattr(case, test_name))
    adapted = type(f"Django_{case.__name__}", bases, attributes)
    return override_settings(REPROQ_ALLOWED_TASK_MODULES=["tasks.tasks"])(adapted)


def _tear_down(case: type):
    def tearDown(self):
        cancel_facade_leftovers()
        super(adapted_class(self), self).tearDown()

    return tearDown


def adapted_class(instance) -> type:
    return next(cls for cls in type(instance).__mro__ if cls.__name__.startswith("Django_"))
