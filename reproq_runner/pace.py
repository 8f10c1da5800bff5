"""How far ahead a runner works, from the average task duration it measures.

Fast tasks (under ``FAST_TASK_SECONDS``) would leave children idle through every database round
trip, so children hold a queue of them and the runner claims many ahead. Up to
``QUEUE_BEHIND_SECONDS`` a child still holds its next task, so it never waits for the runner
between two tasks. Tasks under a second are claimed in batches worth about
``CLAIM_AHEAD_SECONDS`` per child. Slow ones are claimed only for idle children, so a long task
never waits in one runner while another is idle. A task that turns out slow does not hold up
the queue behind it: once it has run well past the average, the runner takes the tasks queued
behind it back and gives them to other children. Outcomes are stored together so that every
call to PostgreSQL carries several: each has a fixed cost, in the runner and on the server,
that one task should not carry alone.
"""

from __future__ import annotations

# Below this average duration tasks are fast: children hold a queue of them, and the runner
# holds many more claimed ahead.
FAST_TASK_SECONDS = 0.02
# While tasks are fast, each child holds enough queued tasks to stay busy through about this
# long without the runner (a claim or a completion round trip), at most MAX_CHILD_DEPTH. A task
# that turns out slow holds up those queued behind it until it has run stalled_after(), when
# the runner takes them back.
CHILD_QUEUE_SECONDS = 0.05
MAX_CHILD_DEPTH = 64
# Below this average duration a child holds at least its next task besides the one it runs:
# it starts that one at once instead of waiting for the runner to read its result and send
# another. Above it a task could wait long (STALL_FACTOR × the average) behind one that turns
# out slow before it is taken back, so children hold only the task they run.
QUEUE_BEHIND_SECONDS = 0.1
# Below this one the runner still holds claimed tasks, handed to whichever child frees up first
# (no claim round trip between two tasks): about CLAIM_AHEAD_SECONDS of work per child and at
# least two tasks, claimed about half of that at a time. Above it, none.
PREFETCH_TASK_SECONDS = 1.0
CLAIM_AHEAD_SECONDS = 0.2
# Outcomes wait at most MIN_FLUSH_SECONDS while tasks are fast. Slower ones wait about two
# average durations, and with few children long enough for about FLUSH_SHARE of them to share
# one call, at most MAX_FLUSH_SECONDS.
MIN_FLUSH_SECONDS = 0.005
MAX_FLUSH_SECONDS = 0.1
FLUSH_SHARE = 10
# At most this many outcomes in one call.
FLUSH_BATCH = 200
# A task that runs this many times the average (at least twice CHILD_QUEUE_SECONDS) has stalled
# its child: the tasks queued behind it are taken back and run by other children.
STALL_FACTOR = 10
# Weight of the newest duration in the moving average.
SMOOTHING = 0.1


class Pace:
    """The moving average of task durations, and what the runner does with it."""

    def __init__(self, concurrency: int, prefetch: int | None = None) -> None:
        self.concurrency = concurrency
        self.max_prefetch = max(2 * concurrency, 64) if prefetch is None else prefetch
        self.average_duration = 1.0  # assume slow tasks until some have finished

    def observe(self, duration: float) -> None:
        self.average_duration += SMOOTHING * (duration - self.average_duration)

    def fast(self) -> bool:
        return self.average_duration < FAST_TASK_SECONDS

    def child_depth(self) -> int:
        """Tasks a child holds at once: the one it runs and those queued behind it."""
        if self.average_duration >= QUEUE_BEHIND_SECONDS:
            return 1
        per_window = CHILD_QUEUE_SECONDS / max(self.average_duration, 1e-6)
        return max(2, min(MAX_CHILD_DEPTH, int(per_window)))

    def prefetch(self) -> int:
        """Claimed tasks to hold beyond what the children hold."""
        if self.fast():
            return self.max_prefetch
        if self.average_duration < PREFETCH_TASK_SECONDS:
            per_child = max(2, int(CLAIM_AHEAD_SECONDS / self.average_duration))
            return min(self.max_prefetch, per_child * self.concurrency)
        return 0

    def stalled_after(self) -> float:
        """How long a child's task may run before the tasks queued behind it are taken back."""
        return max(2 * CHILD_QUEUE_SECONDS, STALL_FACTOR * self.average_duration)

    def flush_interval(self) -> float:
        """How long a finished task's outcome may wait to be stored with others."""
        if self.fast():
            return MIN_FLUSH_SECONDS
        share = FLUSH_SHARE * self.average_duration / self.concurrency
        wait = max(2 * self.average_duration, share)
        return min(MAX_FLUSH_SECONDS, max(MIN_FLUSH_SECONDS, wait))
