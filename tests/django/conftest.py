"""Fixtures of the Django tests: draining the queue in-process and unique queue names."""

from __future__ import annotations

import itertools

import pytest
from django.db import connections

from reproq_runner.django_glue import DjangoExecutor
from reproq_runner.inprocess import run_once

_queue_numbers = itertools.count()


@pytest.fixture
def queue_name():
    """A queue no other test uses: tests that commit rows stay independent of each other."""
    return f"q{next(_queue_numbers)}"


@pytest.fixture
def drain():
    """Run every due task of ``queues`` in this process, as the runner would."""

    def _drain(*queues: str, executor: DjangoExecutor | None = None, alias: str = "default"):
        return run_once(connections[alias], executor or DjangoExecutor(),
                        queues or ("default",))

    return _drain
