"""Executors for runner tests: pass with ``--executor tests.acceptance.executors:NAME``."""

from __future__ import annotations

import os
import time
from pathlib import Path

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


class SetupFailsExecutor(NoopExecutor):
    """Its children cannot set up (as with broken settings)."""

    def setup(self) -> None:
        raise ImportError("cannot import the settings (a test's broken setup)")


def _setup_broken() -> bool:
    """The test has created the file named by ``$REPROQ_TEST_SETUP_FAILS``."""
    return os.path.exists(os.environ["REPROQ_TEST_SETUP_FAILS"])


class SetupFailsLaterExecutor(NoopExecutor):
    """Sets up until the file named by ``$REPROQ_TEST_SETUP_FAILS`` exists, then cannot: the
    children started first run tasks, their replacements fail. Tasks by the last part of their
    path: ``wait`` touches ``args[1]`` then waits for the file ``args[0]``; ``crash`` kills its
    child; any other succeeds."""

    def setup(self) -> None:
        if _setup_broken():
            raise ImportError("cannot import the settings (a test's broken setup)")

    def execute(self, task: ClaimedTask) -> Succeeded:
        kind = task.task_path.rsplit(".", 1)[-1]
        if kind == "crash":
            os._exit(7)
        if kind == "wait":
            release, marker = task.spec_json["args"]
            Path(marker).touch()
            deadline = time.monotonic() + 120
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.01)
        return Succeeded("null")


class SetupDiesLaterExecutor(SetupFailsLaterExecutor):
    """As SetupFailsLaterExecutor, but a child that cannot set up dies without a word (as
    after a crash in an import or an out-of-memory kill)."""

    def setup(self) -> None:
        if _setup_broken():
            os._exit(9)


class BrokenPromiseExecutor(NoopExecutor):
    """Returns what the Executor protocol does not allow, by the task's first argument:
    None, a string, or a Failed whose error is not a dict."""

    def execute(self, task: ClaimedTask):
        from reproq_runner.outcome import Failed

        return {"none": None, "text": "null", "failed-text": Failed("boom")}[task.args[0]]
