"""In-process record of task calls, for tests that run tasks in the test process."""

from contextlib import contextmanager

calls: list[str] = []


@contextmanager
def received(signal):
    """The task results ``signal`` (task_started, task_finished) sends while the block runs."""
    results = []

    def receiver(sender, task_result, **kwargs):
        results.append(task_result)

    signal.connect(receiver)
    try:
        yield results
    finally:
        signal.disconnect(receiver)
