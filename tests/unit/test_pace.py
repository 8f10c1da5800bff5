"""The runner's pacing policy (reproq_runner.pace): how far ahead it claims, how deep children
queue, how long outcomes wait to be stored together."""

import pytest

from reproq_runner.pace import (CLAIM_AHEAD_SECONDS, MAX_CHILD_DEPTH, MAX_FLUSH_SECONDS,
                                MIN_FLUSH_SECONDS, QUEUE_BEHIND_SECONDS, Pace)


def pace_at(duration: float, concurrency: int = 10) -> Pace:
    pace = Pace(concurrency)
    pace.average_duration = duration
    return pace


def test_a_new_runner_assumes_slow_tasks():
    pace = Pace(10)
    assert not pace.fast() and pace.prefetch() == 0 and pace.child_depth() == 1


def test_the_average_follows_observed_durations():
    pace = Pace(4)
    for _ in range(200):
        pace.observe(0.001)
    assert pace.average_duration == pytest.approx(0.001, rel=0.01)
    assert pace.fast()


def test_fast_tasks_queue_in_children_and_claim_far_ahead():
    pace = pace_at(0.001)
    assert pace.child_depth() == 50
    assert pace_at(0.00001).child_depth() == MAX_CHILD_DEPTH
    assert pace.prefetch() == 64  # max(2 × concurrency, 64)
    assert pace.flush_interval() == MIN_FLUSH_SECONDS


def test_tasks_under_a_second_are_claimed_in_batches_worth_a_fraction_of_a_second():
    pace = pace_at(0.02, concurrency=2)
    assert pace.prefetch() == int(CLAIM_AHEAD_SECONDS / 0.02) * 2
    # at least two per child, at most max_prefetch
    assert pace_at(0.5, concurrency=3).prefetch() == 6
    assert pace_at(0.02, concurrency=50).prefetch() == 100


def test_children_hold_their_next_task_while_a_stall_would_be_noticed_within_a_second():
    # The child starts its next task without waiting for the runner; a task queued behind one
    # that turns out slow is taken back after STALL_FACTOR × the average, under a second here.
    assert pace_at(0.02).child_depth() == 2
    assert pace_at(QUEUE_BEHIND_SECONDS - 0.001).child_depth() == 2
    assert pace_at(QUEUE_BEHIND_SECONDS - 0.001).stalled_after() < 1.0
    assert pace_at(QUEUE_BEHIND_SECONDS).child_depth() == 1
    assert pace_at(0.5).child_depth() == 1


def test_outcomes_of_slower_tasks_wait_to_share_a_call_but_not_long():
    # few children: long enough for about ten outcomes
    assert pace_at(0.02, concurrency=2).flush_interval() == pytest.approx(0.1)
    # many children: about two average durations, which already gathers many more
    assert pace_at(0.03, concurrency=50).flush_interval() == pytest.approx(0.06)
    assert pace_at(5.0, concurrency=1).flush_interval() == MAX_FLUSH_SECONDS


def test_slow_tasks_are_claimed_only_for_idle_children():
    assert pace_at(2.0).prefetch() == 0 and pace_at(2.0).child_depth() == 1


def test_an_explicit_prefetch_caps_the_claim_ahead():
    pace = Pace(10, prefetch=5)
    pace.average_duration = 0.001
    assert pace.prefetch() == 5
