"""reproq's runner: Django-free core that claims tasks through the ``reproq.*`` SQL functions
and runs them (``reproq-runner worker``), plus :func:`run_once` for in-process draining."""

from reproq_runner.inprocess import run_once

__all__ = ["run_once"]
