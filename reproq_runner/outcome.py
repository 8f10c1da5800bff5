"""What running one claimed task produced, and the executor interface that produces it.

The runner core knows nothing about Django: it hands each :class:`ClaimedTask` to an
:class:`Executor` and records the :data:`Outcome` through the SQL functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from traceback import format_exception
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


def error_of(exc: BaseException) -> dict[str, str]:
    """The error a :class:`Failed` carries for ``exc``: class path, message, traceback."""
    cls = type(exc)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "message": _message_of(exc),
        "traceback": "".join(format_exception(exc)),
    }


def _message_of(exc: BaseException) -> str:
    """``str(exc)``; an exception whose ``__str__`` raises is still recorded as itself, as
    the traceback module shows it."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


class Executor(Protocol):
    """Runs claimed tasks in the current process."""

    def setup(self) -> None:
        """Prepare the process once, before its first task (for Django: django.setup())."""

    def execute(self, task: ClaimedTask) -> Outcome:
        """Run one attempt of ``task``. Never raises: every failure becomes :class:`Failed`."""
