"""What the supervisor writes to its children's task pipes: never more than a busy child's pipe
holds (the runner's loop must not wait for a child that is running a task), tasks that never
reached a dead child are taken back, not charged a crash, and tasks queued behind a stalled or
cancelled one are withdrawn."""

import multiprocessing
import os
import selectors
import uuid
from datetime import UTC, datetime

import pytest

from reproq_runner.child import Assignment, Done
from reproq_runner.gate import Gate
from reproq_runner.outcome import Succeeded
from reproq_runner.queries import ClaimedTask
from reproq_runner.supervisor import Child, Supervisor, _pipe_room
from reproq_runner.wire import FrameReader

NOW = datetime.now(UTC)


def claimed(result_id: int, payload: str = "") -> ClaimedTask:
    return ClaimedTask(result_id, "app.tasks.t", {"args": [payload], "kwargs": {}}, "default",
                       0, 1, 3, 900, uuid.uuid4(), NOW, {}, NOW, NOW, NOW, NOW, ["w"], [])


class _NoProcess:
    pid = 0


@pytest.fixture
def pipes():
    """(task read end, task write end, result read end); a test that closes one removes it
    from ``open_fds`` (closing a number twice could close whatever reused it)."""
    task_read, task_write = os.pipe()
    result_read, result_write = os.pipe()
    os.set_blocking(task_write, False)  # a write that would wait raises instead of hanging
    open_fds = {task_read, task_write, result_read, result_write}
    yield task_read, task_write, result_read, open_fds
    for fd in open_fds:
        os.close(fd)


@pytest.fixture
def supervisor():
    selector = selectors.DefaultSelector()
    yield Supervisor(lambda: None, 1, selector)
    selector.close()


def test_a_busy_child_is_sent_no_more_than_its_pipe_holds(pipes, supervisor):
    task_read, task_write, result_read, _ = pipes
    child = Child(_NoProcess(), task_write, FrameReader(result_read), ready=True,
                  pipe_room=_pipe_room(task_write))
    big = "x" * 20_000
    assert supervisor.assign(child, [Assignment(claimed(1))]) == 1  # now busy
    sent_total = 1
    for round_ in range(200):
        batch = [Assignment(claimed(100 * round_ + i, big)) for i in range(8)]
        sent = supervisor.assign(child, batch)  # BlockingIOError here would be the bug
        sent_total += sent
        if sent == 0:
            break
    assert sent == 0, "the pipe never filled up"
    assert child.queued_bytes <= child.pipe_room
    assert len(child.assigned) == sent_total
    # The child works through its queue: room for more again.
    for _ in range(10):
        supervisor._on_done(child, Done(child.current.result_id, 0.0, 1.0, Succeeded("null")))
    assert len(child.assigned) == sent_total - 10
    os.set_blocking(task_read, False)
    try:
        while os.read(task_read, 1 << 16):
            pass  # the child reads what it was sent
    except BlockingIOError:
        pass
    assert supervisor.assign(child, [Assignment(claimed(99_999, big))]) == 1


def test_tasks_sent_to_a_child_that_is_gone_come_back_as_orphans(pipes, supervisor):
    task_read, task_write, result_read, open_fds = pipes
    os.close(task_read)  # the child died
    open_fds.discard(task_read)
    child = Child(_NoProcess(), task_write, FrameReader(result_read), ready=True)
    tasks = [claimed(i) for i in range(3)]
    assert supervisor.assign(child, [Assignment(t) for t in tasks]) == 3
    assert list(child.assigned) == [] and child.queued_bytes == 0
    assert supervisor.take_orphans() == tasks


@pytest.fixture
def gated_child(pipes, supervisor):
    """One of the supervisor's children, with no process behind it (nothing may kill it)."""
    _, task_write, result_read, _ = pipes
    child = Child(_NoProcess(), task_write, FrameReader(result_read), ready=True,
                  pipe_room=_pipe_room(task_write),
                  gate=Gate(multiprocessing.get_context("forkserver")))
    supervisor.children.append(child)
    return child


def test_tasks_queued_behind_a_stalled_task_are_withdrawn(gated_child, supervisor):
    child = gated_child
    tasks = [claimed(i) for i in range(4)]
    assert supervisor.assign(child, [Assignment(t) for t in tasks]) == 4
    assert child.gate.admit(0)  # the child starts task 0 and stays in it
    assert supervisor.children_with_room(64, 0.1, now=child.started + 0.05) == [child]
    assert supervisor.withdraw_stalled(0.1, now=child.started + 0.05) == []
    assert supervisor.next_stall_in(0.1, now=child.started + 0.05) == pytest.approx(0.05)
    assert not supervisor.all_stalled(0.1, now=child.started + 0.05)
    assert supervisor.all_stalled(0.1, now=child.started + 0.2)
    assert supervisor.withdraw_stalled(0.1, now=child.started + 0.2) == tasks[1:]
    assert list(child.assigned) == tasks[:1]
    assert supervisor.children_with_room(64, 0.1, now=child.started + 0.2) == []
    queued = child.queued_bytes
    assert queued > 0  # the withdrawn frames are still in the pipe
    assert [child.gate.admit(n) for n in (1, 2, 3)] == [False] * 3
    supervisor._on_done(child, Done(0, 0.0, 1.0, Succeeded("null")))
    assert list(child.assigned) == [] and child.queued_bytes == 0


def test_a_cancelled_task_queued_in_a_child_is_withdrawn_with_those_behind_it(gated_child,
                                                                              supervisor):
    child = gated_child
    tasks = [claimed(i) for i in range(4)]
    supervisor.assign(child, [Assignment(t) for t in tasks])
    assert child.gate.admit(0) and child.gate.admit(1)  # task 1 runs, 2 and 3 wait
    supervisor._on_done(child, Done(0, 0.0, 1.0, Succeeded("null")))
    running, withdrawn = supervisor.cancel({3})
    assert (running, withdrawn) == (set(), tasks[2:])
    assert list(child.assigned) == tasks[1:2]
    assert not child.gate.admit(2) and not child.gate.admit(3)
