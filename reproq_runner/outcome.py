"""What running one claimed task produced, and the executor interface that produces it.

The runner core knows nothing about Django: it hands each :class:`ClaimedTask` to an
:class:`Executor` and records the :data:`Outcome` through the SQL functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from reproq_runner.queries import ClaimedTask


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The task returned; ``return_json`` is its JSON text (see ``queries.dumps_json``)."""

    return_json: str

    def __reduce__(self):  # cheap pickling between runner and child processes
        return Succeeded, (self.return_json,)


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed. ``error`` is appended to the run's errors_json; it carries at least
    ``exception_class_path``, ``message`` and ``traceback``. ``retry=False`` fails for good."""

    error: dict[str, Any] = field(default_factory=dict)
    retry: bool = True

    def __reduce__(self):
        return Failed, (self.error, self.retry)


Outcome = Succeeded | Failed


class Executor(Protocol):
    """Runs claimed tasks in the current process."""

    def setup(self) -> None:
        """Prepare the process once, before its first task (for Django: django.setup())."""

    def execute(self, task: ClaimedTask) -> Outcome:
        """Run one attempt of ``task``. Never raises: every failure becomes :class:`Failed`."""
