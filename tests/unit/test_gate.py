"""The gate between the runner and a child: each task sent to the child is either started by
the child or withdrawn by the runner, never both and never neither."""

import multiprocessing

import pytest

from reproq_runner.gate import Gate

TASKS = 300_000


def test_withdrawing_takes_the_tasks_not_started_and_counts_each_once():
    gate = Gate(multiprocessing.get_context("forkserver"))
    assert gate.admit(0) and gate.admit(1)  # task 1 is running; 2..4 were sent behind it
    assert gate.withdraw(5) == 3
    assert gate.withdraw(5) == 0  # nothing new since
    assert not gate.admit(2)  # the child passes over the withdrawn ones
    # Tasks 5..7 are sent; the child has passed 2 but not yet 3 and 4.
    assert gate.withdraw(8) == 3  # 5, 6, 7: 3 and 4 were already withdrawn
    assert [gate.admit(n) for n in range(3, 8)] == [False] * 5
    assert gate.admit(8)  # sent after the withdrawal: runs
    assert gate.withdraw(9) == 0  # 8 has started


def test_withdrawing_from_a_busy_child_takes_nothing():
    gate = Gate(multiprocessing.get_context("forkserver"))
    assert gate.admit(0)
    assert gate.withdraw(1) == 0
    assert gate.admit(1)


def test_a_child_that_died_holding_the_lock_gets_nothing_withdrawn():
    gate = Gate(multiprocessing.get_context("forkserver"))
    gate._lock.acquire()  # as a child killed inside admit() leaves it
    assert gate.withdraw(5) == 0


def _admit_all(gate: Gate, started, report) -> None:
    admitted = []
    for n in range(TASKS):
        if n == 1000:
            started.send(True)  # well under way: the runner withdraws now
        if gate.admit(n):
            admitted.append(n)
    report.send((len(admitted), admitted == list(range(len(admitted)))))


@pytest.mark.parametrize("attempt", range(3))
def test_a_withdrawal_racing_a_child_splits_the_tasks_exactly(attempt):
    """The child admits tasks as fast as it can in another process while the runner withdraws
    them all: the child started exactly the ones the runner did not get back."""
    context = multiprocessing.get_context("forkserver")
    gate = Gate(context)
    started_read, started_write = context.Pipe(duplex=False)
    report_read, report_write = context.Pipe(duplex=False)
    child = context.Process(target=_admit_all, args=(gate, started_write, report_write))
    child.start()
    assert started_read.poll(60), "the child did not start"
    withdrawn = gate.withdraw(TASKS)
    assert report_read.poll(60), "the child did not finish"
    admitted, in_order = report_read.recv()
    child.join(10)
    assert in_order
    assert admitted + withdrawn == TASKS
    assert 0 < withdrawn < TASKS, "the withdrawal did not land while the child was admitting"
