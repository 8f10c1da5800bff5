"""Child processes of one runner: start them, hand each one task at a time, stop a task by
killing its child, take back tasks queued behind a slow one, notice crashes, and replace
children that died.

The supervisor knows nothing about the database: the runner gives it claimed tasks and gets
back :class:`Finished` records (outcome of a task, or the failure the supervisor observed).
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reproq_runner import child as child_module
from reproq_runner.child import Assignment, Done, Ready, SetupFailed
from reproq_runner.gate import Gate
from reproq_runner.outcome import Executor, Failed, Outcome
from reproq_runner.queries import ClaimedTask
from reproq_runner.wire import FrameReader, encode, write_bytes

log = logging.getLogger("reproq.runner")

# Why a child was killed on purpose, as the kind recorded for its task.
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
CRASHED = "crashed"
STOPPED = "stopped"  # shutdown: the task is handed back, not failed
COMPLETED = "completed"

# What a task pipe holds, less a page, bounds the bytes queued for a busy child, so writing to
# a child that is running a task never waits for it to read. A pipe holds whole pages and a
# write may start a new one: frames are counted in pages. (Pipes keep their default size,
# 64 KiB on Linux: enlarging them counts against the user's pipe-user-pages-soft limit, above
# which every new pipe of that user gets a single page.)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
DEFAULT_PIPE_BYTES = 65536


class ChildSetupError(RuntimeError):
    """A child process could not set its executor up (bad settings, import error...)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """One task attempt that ended in a child (or with its child)."""

    task: ClaimedTask
    outcome: Outcome | None  # None when kind is STOPPED: hand the task back
    kind: str
    duration: float


@dataclass(eq=False)
class Child:
    process: multiprocessing.process.BaseProcess
    task_fd: int
    reader: FrameReader
    ready: bool = False
    # Tasks sent and not yet reported, in order: the first one is running (since
    # ``started``), the others wait in the pipe.
    assigned: deque[ClaimedTask] = field(default_factory=deque)
    started: float = 0.0
    kill_kind: str | None = None
    exited: bool = False
    # Bytes of the frames that carried ``assigned`` (each task's share), and their sum.
    # Withdrawn tasks' frames stay in the pipe until the child passes over them: the child
    # only does so once idle, so they count until then.
    frame_bytes: deque[int] = field(default_factory=deque)
    queued_bytes: int = 0
    pipe_room: int = DEFAULT_PIPE_BYTES - PAGE
    gate: Gate | None = None
    sent: int = 0  # tasks written to the task pipe, the numbering the gate uses

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def current(self) -> ClaimedTask | None:
        return self.assigned[0] if self.assigned else None

    @property
    def holds_queued_tasks(self) -> bool:
        """Tasks wait behind the one it runs, and it is not being killed."""
        return len(self.assigned) > 1 and self.kill_kind is None

    def stalled(self, stalled_after: float, now: float) -> bool:
        """Is its task (not one it is being killed for) running for ``stalled_after`` s?"""
        return bool(self.assigned) and self.kill_kind is None and now - self.started > stalled_after


@dataclass(frozen=True, eq=False)
class ChildExited:
    """What the selector reports for a child's process sentinel: readable once the process has
    exited (see :meth:`Supervisor.on_exited`)."""

    child: Child


class Supervisor:
    """A fixed number of children, each running at most one task at a time."""

    def __init__(self, executor_factory: Callable[[], Executor], size: int,
                 selector: selectors.BaseSelector, start_method: str = "forkserver") -> None:
        self.executor_factory = executor_factory
        self.size = size
        self.selector = selector
        self.context = multiprocessing.get_context(start_method)
        self.children: list[Child] = []
        self.stopping = False
        self.ever_ready = False
        self.orphans: list[ClaimedTask] = []  # sent to a child that died before starting them
        # A replacement child could not set up while others run tasks: the runner stops gently.
        self.setup_failure: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> Child:
        task_read, task_write = self.context.Pipe(duplex=False)
        result_read, result_write = self.context.Pipe(duplex=False)
        gate = Gate(self.context)
        process = self.context.Process(
            target=child_module.main, name="reproq-child", daemon=True,
            args=(self.executor_factory, task_read, result_write, gate),
        )
        try:
            _start_through_the_forkserver(process)
        except BaseException:
            for end in (task_read, task_write, result_read, result_write):
                end.close()
            raise
        task_read.close()
        result_write.close()
        task_fd = os.dup(task_write.fileno())
        result_fd = os.dup(result_read.fileno())
        task_write.close()
        result_read.close()
        os.set_blocking(result_fd, False)
        child = Child(process, task_fd, FrameReader(result_fd), pipe_room=_pipe_room(task_fd),
                      gate=gate)
        self.children.append(child)
        self.selector.register(result_fd, selectors.EVENT_READ, child)
        self.selector.register(process.sentinel, selectors.EVENT_READ, ChildExited(child))
        return child

    def close_all(self, timeout: float) -> None:
        """Let idle children exit (closed task pipe); kill what remains after ``timeout``."""
        self.stopping = True
        for child in self.children:
            self._close_task_pipe(child)
        deadline = time.monotonic() + timeout
        for child in list(self.children):
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                self._signal(child, signal.SIGKILL)
                child.process.join(5)
            self._forget(child)

    # -- capacity and dispatch --------------------------------------------------------------

    def children_with_room(self, depth: int, stalled_after: float,
                           now: float | None = None) -> list[Child]:
        """Ready children holding fewer than ``depth`` tasks, leaving out those whose task has
        run for ``stalled_after`` seconds (they get more once they are idle)."""
        now = time.monotonic() if now is None else now
        return [c for c in self.children if c.ready and len(c.assigned) < depth
                and not c.exited and c.kill_kind is None and not c.stalled(stalled_after, now)]

    def idle_count(self) -> int:
        return sum(1 for c in self.children if c.ready and not c.assigned and not c.exited
                   and c.kill_kind is None)

    def busy_children(self) -> list[Child]:
        return [c for c in self.children if c.assigned]

    def running_count(self) -> int:
        return sum(1 for c in self.children if c.assigned)

    def held_tasks(self) -> list[ClaimedTask]:
        """Every task sent to a child and not yet reported, and those orphaned."""
        return [t for c in self.children for t in c.assigned] + self.orphans

    def take_orphans(self) -> list[ClaimedTask]:
        orphans, self.orphans = self.orphans, []
        return orphans

    def starting_count(self) -> int:
        return sum(1 for c in self.children if not c.ready and not c.exited)

    def assign(self, child: Child, assignments: Sequence[Assignment]) -> int:
        """Send tasks to ``child`` in one frame; it runs them one after the other. Returns how
        many were sent (the first ones): while the child is busy, no more than its task pipe
        holds, so the write never waits for a child that is running a task."""
        assignments = list(assignments)
        frame = encode(assignments)
        while child.assigned and child.queued_bytes + _in_pages(frame) > child.pipe_room:
            if len(assignments) == 1:
                return 0
            assignments = assignments[:len(assignments) // 2]
            frame = encode(assignments)
        if not child.assigned:
            child.started = time.monotonic()
        share = -(-_in_pages(frame) // len(assignments))
        child.assigned.extend(a.task for a in assignments)
        child.frame_bytes.extend([share] * len(assignments))
        child.queued_bytes += share * len(assignments)
        try:
            write_bytes(child.task_fd, frame)
            child.sent += len(assignments)
        except OSError:
            # The child is gone before it got them: they never started, run them elsewhere.
            # Its end-of-file on the result pipe settles the task it was running, if any.
            log.warning("child %s is gone before it got %d task(s)", child.pid,
                        len(assignments))
            unsent = [self._unqueue_last(child) for _ in assignments]
            self.orphans.extend(reversed(unsent))
        return len(assignments)

    @staticmethod
    def _unqueue_last(child: Child) -> ClaimedTask:
        child.queued_bytes -= child.frame_bytes.pop()
        return child.assigned.pop()

    # -- taking queued tasks back -----------------------------------------------------------

    def withdraw(self, child: Child) -> list[ClaimedTask]:
        """The tasks ``child`` holds and has not started, taken back from it, in order."""
        if child.gate is None or child.exited:
            return []
        count = child.gate.withdraw(child.sent)
        withdrawn = []
        for _ in range(count):
            child.frame_bytes.pop()  # still in the pipe: queued_bytes keeps them (see Child)
            withdrawn.append(child.assigned.pop())
        withdrawn.reverse()
        return withdrawn

    def withdraw_stalled(self, stalled_after: float, now: float | None = None
                         ) -> list[ClaimedTask]:
        """Take back the tasks queued behind any task that has run for ``stalled_after``
        seconds, so that other children run them."""
        now = time.monotonic() if now is None else now
        withdrawn = []
        for child in self.busy_children():
            if child.holds_queued_tasks and child.stalled(stalled_after, now):
                running = child.current
                taken = self.withdraw(child)
                if taken:
                    log.info("task %s has run for %.1f s: took back %d task(s) queued behind "
                             "it in child %s", running.result_id, now - child.started,
                             len(taken), child.pid)
                withdrawn.extend(taken)
        return withdrawn

    def withdraw_queued(self) -> list[ClaimedTask]:
        """Take back every task queued in a child behind the one it runs (on a stop signal)."""
        return [task for child in self.busy_children() if child.holds_queued_tasks
                for task in self.withdraw(child)]

    def all_stalled(self, stalled_after: float, now: float | None = None) -> bool:
        """Is every child running a task that has run for ``stalled_after`` seconds?"""
        now = time.monotonic() if now is None else now
        return bool(self.children) and all(c.stalled(stalled_after, now) for c in self.children)

    def next_all_stalled_in(self, stalled_after: float, now: float | None = None
                            ) -> float | None:
        """Seconds until every child counts as stalled, if every one is running a task."""
        now = time.monotonic() if now is None else now
        if not self.children or not all(c.assigned and c.kill_kind is None
                                        for c in self.children):
            return None
        return max(0.0, max(c.started for c in self.children) + stalled_after - now)

    def next_stall_in(self, stalled_after: float, now: float | None = None) -> float | None:
        """Seconds until the first child holding queued tasks counts as stalled."""
        now = time.monotonic() if now is None else now
        due = [c.started + stalled_after - now for c in self.children if c.holds_queued_tasks]
        return max(0.0, min(due)) if due else None

    # -- stopping tasks ---------------------------------------------------------------------

    def check_timeouts(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for child in self.busy_children():
            if child.kill_kind is None and now - child.started > child.current.timeout_seconds:
                log.warning("task %s ran past its timeout of %s s: killing child %s",
                            child.current.result_id, child.current.timeout_seconds, child.pid)
                self.kill(child, TIMED_OUT)

    def next_timeout_in(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        deadlines = [c.started + c.current.timeout_seconds - now for c in self.busy_children()
                     if c.kill_kind is None]
        return max(0.0, min(deadlines)) if deadlines else None

    def cancel(self, result_ids: set[int]) -> tuple[set[int], list[ClaimedTask]]:
        """Kill the children running these tasks, and take back the tasks not started from
        every child that holds one of them. Returns the ids found running and the tasks taken
        back (cancelled or not)."""
        running, withdrawn = set(), []
        for child in self.busy_children():
            if child.kill_kind is not None:
                continue
            if any(task.result_id in result_ids for task in child.assigned):
                withdrawn.extend(self.withdraw(child))
            if child.current is not None and child.current.result_id in result_ids:
                log.info("task %s was cancelled: killing child %s", child.current.result_id,
                         child.pid)
                self.kill(child, CANCELLED)
                running.add(child.current.result_id)
        return running, withdrawn

    def stop_running(self) -> int:
        """Shutdown deadline passed: kill every child still running a task, but not one being
        killed already; returns how many it killed."""
        killed = 0
        for child in self.busy_children():
            if child.kill_kind is None:
                self.kill(child, STOPPED)
                killed += 1
        return killed

    def kill(self, child: Child, kind: str) -> None:
        child.kill_kind = kind
        self._signal(child, signal.SIGKILL)

    def kill_all(self) -> None:
        for child in self.children:
            if child.kill_kind is None:
                child.kill_kind = STOPPED
            self._signal(child, signal.SIGKILL)

    # -- results ----------------------------------------------------------------------------

    def on_event(self, source: Child | ChildExited) -> list[Finished]:
        """What the selector reported for a child: its result pipe (registered with the
        ``Child``) or its process exit (with a ``ChildExited``)."""
        if isinstance(source, ChildExited):
            return self.on_exited(source.child)
        return self.on_readable(source)

    def on_readable(self, child: Child) -> list[Finished]:
        """Read what ``child`` wrote; on end-of-file, settle its task and replace it."""
        if child.exited:
            # Settled earlier in the same round of events (its process exit came first): its
            # pipe is closed, and its file descriptor may already be a replacement's.
            return []
        finished = []
        for message in child.reader.read_available():
            record = self._on_message(child, message)
            if record is not None:
                finished.append(record)
        if child.reader.closed:
            record = self._on_exit(child)
            if record is not None:
                finished.append(record)
        return finished

    def on_exited(self, child: Child) -> list[Finished]:
        """``child``'s process has exited. Its result pipe usually said so first (end of file),
        but not while a process the task forked still holds the pipe's write end: then read
        what the child wrote before it died, and settle its task and replace it now."""
        if child.exited:
            return []
        finished = [record for message in child.reader.read_remaining()
                    if (record := self._on_message(child, message)) is not None]
        record = self._on_exit(child)
        if record is not None:
            finished.append(record)
        return finished

    def _on_message(self, child: Child, message) -> Finished | None:
        if type(message) is tuple:
            return self._on_done(child, Done.from_wire(message))
        if isinstance(message, Ready):
            child.ready = True
            self.ever_ready = True
            return None
        if isinstance(message, SetupFailed):
            self._setup_failed(f"could not start:\n{message.traceback}")
            return None
        log.error("unexpected message from child %s: %r", child.pid, message)
        return None

    def _on_done(self, child: Child, done: Done) -> Finished | None:
        task = child.current
        if task is None or task.result_id != done.result_id:
            log.error("child %s reported task %s it was not running", child.pid,
                      done.result_id)
            return None
        child.assigned.popleft()
        child.queued_bytes -= child.frame_bytes.popleft()
        if not child.assigned and (child.gate is None or child.gate.position() >= child.sent):
            # What was left in the pipe was withdrawn, and the child has read past it too (it
            # may not have yet: then those bytes still take room, see Child).
            child.queued_bytes = 0
        child.started = done.finished  # the next task, if any, started then
        if child.kill_kind is not None:
            child.kill_kind = COMPLETED  # it finished first; the kill only ends the process
        return Finished(task, done.outcome, COMPLETED, done.finished - done.started)

    def _on_exit(self, child: Child) -> Finished | None:
        if child.exited:  # settled already: nothing to settle, nobody to replace
            return None
        child.process.join(5)
        exitcode = child.process.exitcode
        task, kind = child.current, child.kill_kind
        if kind == COMPLETED:
            # The kill was meant for a task that finished first: the one it cut short goes
            # back to the queue without spending an attempt, as at shutdown.
            kind = STOPPED
        self.orphans.extend(list(child.assigned)[1:])
        child.assigned.clear()
        child.frame_bytes.clear()
        child.queued_bytes = 0
        self._forget(child)
        if not child.ready and not self.stopping:
            # Died before it was ready without saying why (a crash in an import, an OOM kill).
            self._setup_failed(f"exited during setup ({_describe(exitcode)})")
        if not self.stopping:
            self._replace()
        if task is None:
            if kind is None and child.ready:
                log.warning("idle child %s exited (%s)%s", child.pid, _describe(exitcode),
                            "" if self.stopping else "; replaced")
            return None
        duration = time.monotonic() - child.started
        return Finished(task, _failure_for(kind, task, exitcode, duration), kind or CRASHED,
                        duration)

    def _replace(self) -> None:
        """Start a child in place of one that exited. One that cannot be started at all (the
        forkserver died and could not be started again) stops the runner as a child that
        cannot set up does: the exited child's task is still recorded."""
        try:
            self._spawn()
        except (OSError, EOFError) as exc:  # EOFError: the forkserver died mid-start
            self._setup_failed(f"could not be started ({type(exc).__name__}: {exc})")

    def _setup_failed(self, what: str) -> None:
        """A child could not set up (``what`` says how). Before any child was ready the runner
        cannot run at all: raise. After, it is a replacement, and replacing it again could go on
        forever: start no more children, and the runner stops as on a stop signal."""
        if not self.ever_ready:
            raise ChildSetupError(f"a child process {what}")
        self.setup_failure = f"a new child process {what}"
        log.error("%s", self.setup_failure)
        self.stopping = True

    def _forget(self, child: Child) -> None:
        if child.exited:
            return
        child.exited = True
        for fd in (child.reader.fd, child.process.sentinel):
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        self._close_task_pipe(child)
        os.close(child.reader.fd)
        self.children.remove(child)

    @staticmethod
    def _close_task_pipe(child: Child) -> None:
        if child.task_fd >= 0:
            os.close(child.task_fd)
            child.task_fd = -1

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except (ProcessLookupError, TypeError):
            pass


def _in_pages(frame: bytes) -> int:
    return -(-len(frame) // PAGE) * PAGE


# A forkserver killed from outside (the OOM killer, a task killing its parent) takes its
# children with it; multiprocessing starts a new one on the next start, but only once it can
# reap the old one, which may be a moment after its socket closed (connect() refused).
_FORKSERVER_RESTART_SECONDS = 2.0


def _start_through_the_forkserver(process: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + _FORKSERVER_RESTART_SECONDS
    while True:
        try:
            process.start()
            return
        except (ConnectionRefusedError, FileNotFoundError, BrokenPipeError,
                ConnectionResetError, EOFError):  # EOFError: it died after taking the request
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _pipe_room(fd: int) -> int:
    """The bytes of whole frames the pipe ``fd`` holds without blocking its writer."""
    try:
        size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except (AttributeError, OSError):  # not Linux
        size = DEFAULT_PIPE_BYTES
    return max(size - PAGE, PAGE)


def _failure_for(kind: str | None, task: ClaimedTask, exitcode: int | None,
                 duration: float) -> Failed | None:
    if kind == STOPPED:
        return None
    if kind == TIMED_OUT:
        return Failed({
            "exception_class_path": "reproq.TaskTimeout",
            "message": f"task exceeded its timeout of {task.timeout_seconds} s and was killed "
                       f"after {duration:.1f} s",
            "traceback": "",
        })
    if kind == CANCELLED:
        return Failed({
            "exception_class_path": "reproq.TaskCancelled",
            "message": "cancellation was requested while the task ran; it was killed",
            "traceback": "",
        }, retry=False)
    return Failed({
        "exception_class_path": "reproq.WorkerCrashed",
        "message": f"the process running this task died ({_describe(exitcode)}); "
                   "the runner replaced it",
        "traceback": "",
    })


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "?"
        hint = ", perhaps the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"killed by signal {-exitcode} ({name}{hint})"
    return f"exit code {exitcode}"
