"""Which of the tasks sent to a child it may still start: the runner takes back the ones that
have not started, from a child stuck in a slow task or for a cancellation.

Tasks are numbered in the order the runner sent them, and the child meets them in that order.
Before starting task ``n`` the child records that it has got that far and checks that ``n``
was not withdrawn; the runner withdraws every task from the child's position to the number it
has sent. Both happen under one lock shared by the two processes, so each task is either
started by the child or withdrawn by the runner, never both and never neither.
"""

from __future__ import annotations

# The modules a child needs to rebuild a gate, imported here so that the forkserver, which
# preloads reproq_runner.child, has them: each child then shares their pages instead of
# importing them again (≈ 0.3 MB per child).
import multiprocessing.heap  # noqa: F401
import multiprocessing.sharedctypes  # noqa: F401
import multiprocessing.synchronize  # noqa: F401
from multiprocessing.context import BaseContext

# Slots of the shared array.
_NEXT = 0  # tasks the child has started or passed over
_SKIP_FROM = 1  # the withdrawn range, [from, until)
_SKIP_UNTIL = 2
# The child holds the lock for about a microsecond per task (longer only if it is descheduled
# meanwhile): a withdrawal that times out withdraws nothing, and the runner tries again.
LOCK_TIMEOUT_SECONDS = 0.01


class Gate:
    """Shared by the runner and one child (pass it to the child's process as an argument)."""

    def __init__(self, context: BaseContext) -> None:
        self._lock = context.Lock()
        self._state = context.RawArray("q", 3)

    def admit(self, number: int) -> bool:
        """Child side, before task ``number``: may it start?"""
        with self._lock:
            state = self._state
            state[_NEXT] = number + 1
            return not state[_SKIP_FROM] <= number < state[_SKIP_UNTIL]

    def position(self) -> int:
        """Runner side: how many of the tasks sent the child has read and started or passed
        over (a plain read: it only grows)."""
        return self._state[_NEXT]

    def withdraw(self, sent: int) -> int:
        """Runner side: from now on the child starts none of the first ``sent`` tasks it has not
        started yet. Returns how many tasks this withdraws that an earlier call had not: they
        are the last ones the runner sent and still counts as the child's."""
        # A child that died holding the lock (killed within admit) keeps it forever: nothing is
        # withdrawn then, and the child's end settles its tasks.
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_SECONDS):
            return 0
        try:
            state = self._state
            first, old_from, old_until = state[_NEXT], state[_SKIP_FROM], state[_SKIP_UNTIL]
            if first >= sent:
                return 0
            state[_SKIP_FROM], state[_SKIP_UNTIL] = first, sent
        finally:
            self._lock.release()
        already = max(0, old_until - max(old_from, first))
        return sent - first - already
