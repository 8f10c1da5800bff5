"""Executors for runner tests: pass with ``--executor tests.acceptance.executors:NAME``."""

from __future__ import annotations

from reproq_runner.outcome import Succeeded
from reproq_runner.queries import ClaimedTask


class NoopExecutor:
    """Succeeds at once without importing anything: measures the runner's own overhead."""

    def __init__(self, allowed_task_modules=None, database=None) -> None:
        pass

    def setup(self) -> None:
        pass

    def execute(self, task: ClaimedTask) -> Succeeded:
        return Succeeded("null")
