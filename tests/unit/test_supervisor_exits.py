"""A child's process exit and its result pipe's end of file can come in either order, in one
round of events: the child is settled and replaced once. (Real forkserver children, no
database.)"""

import multiprocessing
import multiprocessing.connection
import os
import selectors
import time
import uuid
from datetime import UTC, datetime

from reproq_runner.child import Assignment
from reproq_runner.outcome import Succeeded
from reproq_runner.queries import ClaimedTask
from reproq_runner.supervisor import TIMED_OUT, Child, ChildExited, Supervisor

NOW = datetime.now(UTC)


class ForkingExecutor:
    """Runs each task by forking a process that keeps every file descriptor (the result pipe
    among them) for 0.3 s, then sleeping far longer than any test waits."""

    def setup(self) -> None:
        pass

    def execute(self, task):
        if os.fork() == 0:
            time.sleep(0.3)
            os._exit(0)
        time.sleep(60)
        return Succeeded("null")


def forking_executor() -> ForkingExecutor:
    return ForkingExecutor()


def claimed(result_id: int) -> ClaimedTask:
    return ClaimedTask(result_id, "app.tasks.t", {"args": [], "kwargs": {}}, "default", 0, 1, 3,
                       900, uuid.uuid4(), NOW, {}, NOW, NOW, NOW, NOW, ["w"], [])


def serve_until(supervisor: Supervisor, selector, done, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for key, _ in selector.select(0.1):
            if isinstance(key.data, Child):
                supervisor.on_readable(key.data)
            elif isinstance(key.data, ChildExited):
                supervisor.on_exited(key.data.child)


def test_a_child_settled_by_its_exit_is_not_settled_again_by_its_pipe():
    multiprocessing.set_forkserver_preload(["reproq_runner.forkserver_signals",
                                            "reproq_runner.child"])
    selector = selectors.DefaultSelector()
    supervisor = Supervisor(forking_executor, 1, selector)
    supervisor.start()
    try:
        [child] = supervisor.children
        serve_until(supervisor, selector, lambda: child.ready)
        supervisor.assign(child, [Assignment(claimed(1))])
        serve_until(supervisor, selector, lambda: child.gate.position() >= 1)  # task started
        supervisor.kill(child, TIMED_OUT)
        # Both are due at once: the process has exited, and so has the one it forked (end of
        # file on the result pipe).
        pending = {child.process.sentinel, child.reader.fd}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            pending -= set(multiprocessing.connection.wait(list(pending), timeout=0.1))
        assert not pending
        [settled] = supervisor.on_exited(child)  # the order the selector may report them in
        assert (settled.task.result_id, settled.kind) == (1, TIMED_OUT)
        assert supervisor.on_readable(child) == []
        [replacement] = supervisor.children
        assert replacement is not child
        serve_until(supervisor, selector, lambda: replacement.ready)
        assert supervisor.children == [replacement]
    finally:
        supervisor.stopping = True
        supervisor.kill_all()
        supervisor.close_all(5)
