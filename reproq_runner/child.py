"""The child process: sets its executor up once, then runs the tasks the runner sends it.

Each task arrives as an :class:`Assignment` frame on the task pipe; each result goes back as one
frame on the result pipe. The child runs one task at a time, so the runner can stop a task
(timeout, cancellation) by killing the child that runs it. Before each task the child asks its
:class:`~reproq_runner.gate.Gate` whether the runner has taken that task back; it passes over
those without a word.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reproq_runner.gate import Gate
from reproq_runner.outcome import Executor, Failed, Outcome, Succeeded, error_of
from reproq_runner.queries import ClaimedTask
from reproq_runner.wire import FrameReader, write_frame

_PR_SET_PDEATHSIG = 1


_LEASE_TOKEN = ClaimedTask._fields.index("lease_token")


def _task_values(task: ClaimedTask) -> tuple:
    # uuid.UUID pickles through Python code; its 16 bytes do not.
    return (*task[:_LEASE_TOKEN], task.lease_token.bytes, *task[_LEASE_TOKEN + 1:])


def _assignment_from_values(values: tuple, log_path: str | None) -> Assignment:
    token = uuid.UUID(bytes=values[_LEASE_TOKEN])
    return Assignment(ClaimedTask(*values[:_LEASE_TOKEN], token, *values[_LEASE_TOKEN + 1:]),
                      log_path)


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task for a child, and the file its output goes to (None: not captured)."""

    task: ClaimedTask
    log_path: str | None = None

    def __reduce__(self):
        # A plain tuple pickles several times faster than a slotted dataclass.
        return _assignment_from_values, (_task_values(self.task), self.log_path)


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class SetupFailed:
    traceback: str


@dataclass(frozen=True, slots=True)
class Done:
    result_id: int
    started: float  # time.monotonic() (system-wide on Linux, comparable across processes)
    finished: float
    outcome: Outcome

    def as_wire(self) -> tuple:
        """A plain tuple: it pickles without class lookups (one such frame per task)."""
        head = (self.result_id, self.started, self.finished)
        if isinstance(self.outcome, Succeeded):
            return (*head, self.outcome.return_json)
        return (*head, None, self.outcome.error, self.outcome.retry)

    @classmethod
    def from_wire(cls, values: tuple) -> Done:
        result_id, started, finished, return_json, *failure = values
        outcome = Succeeded(return_json) if not failure else Failed(*failure)
        return cls(result_id, started, finished, outcome)


def main(executor_factory: Callable[[], Executor], task_conn, result_conn, gate: Gate) -> None:
    """Entry point of a child process (started by the supervisor)."""
    _ignore_stop_signals()
    _die_with_parent()
    _let_go_of_the_forkserver()
    task_fd, result_fd = task_conn.fileno(), result_conn.fileno()
    executor = _set_up(executor_factory, result_fd)
    write_frame(result_fd, Ready(os.getpid()))
    reader = FrameReader(task_fd)
    number = 0  # of the next task, counted as the runner sent them
    while not reader.closed:
        for batch in reader.read_available():
            for assignment in batch:
                if gate.admit(number):
                    write_frame(result_fd, run_assignment(executor, assignment).as_wire())
                number += 1
    os._exit(0)


def _set_up(executor_factory: Callable[[], Executor], result_fd: int) -> Executor:
    try:
        executor = executor_factory()
        executor.setup()
    except BaseException:  # noqa: BLE001 - reported to the runner, which stops
        write_frame(result_fd, SetupFailed(traceback.format_exc()))
        os._exit(3)
    return executor


def run_assignment(executor: Executor, assignment: Assignment) -> Done:
    started = time.monotonic()
    if assignment.log_path is None:  # the usual case: no context manager per task
        outcome = execute_safely(executor, assignment.task)
    else:
        with _output_to(assignment.log_path):
            outcome = execute_safely(executor, assignment.task)
    return Done(assignment.task.result_id, started, time.monotonic(), outcome)


def execute_safely(executor: Executor, task: ClaimedTask) -> Outcome:
    """The executor promises not to raise, and to return a Succeeded or a Failed; a broken
    promise still becomes a failure."""
    try:
        outcome = executor.execute(task)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a task is a task failure
        return Failed(error_of(exc))
    if isinstance(outcome, Succeeded) and isinstance(outcome.return_json, str):
        return outcome
    if isinstance(outcome, Failed) and isinstance(outcome.error, dict):
        return outcome
    # Not retried: the task may have run. (It crashed the child, or the recorder's thread.)
    return Failed({
        "exception_class_path": "reproq.InvalidOutcome",
        "message": f"the executor returned {outcome!r:.300}, not Succeeded(return_json: str) "
                   "or Failed(error: dict)",
        "traceback": "",
    }, retry=False)


@contextlib.contextmanager
def _output_to(log_path: str | None) -> Iterator[None]:
    """Send file descriptors 1 and 2 (and so print(), logging, C extensions) to the log."""
    if log_path is None:
        yield
        return
    try:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError as exc:
        # A full disk or a folder made unwritable must not stop the task (before, the child
        # died on it, and every task with it): its output goes where the runner's does.
        print(f"reproq: cannot write the task's log file {log_path} ({exc}); its output "
              "goes to the runner's instead", file=sys.stderr, flush=True)
        yield
        return
    _flush_std_streams()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield
    finally:
        _flush_std_streams()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (log_fd, *saved):
            os.close(fd)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _ignore_stop_signals() -> None:
    """Ctrl-C and `systemctl stop` reach the whole process group; only the runner decides
    when a child stops (it closes the task pipe, or kills the child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _let_go_of_the_forkserver() -> None:
    """Close this child's copy of the pipe that keeps the forkserver alive.

    The forkserver exits when no process holds the write end of that pipe any more; it is
    meant to be the runner's alone, but CPython hands a copy to each child it forks. Holding
    it, a busy child would keep the forkserver (and so itself: it dies with its parent) alive
    after the runner is SIGKILLed, and its task would go on running while its lease runs out
    and another runner starts it again."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is None:  # not forked by a forkserver (the fork or spawn start method)
        return
    with contextlib.suppress(OSError):
        os.close(fd)
    server._forkserver_alive_fd = None


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent process dies, so no task outlives its runner."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
