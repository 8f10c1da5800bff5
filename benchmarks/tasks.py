"""Tasks the benchmark enqueues. ``benchmarks`` is an installed app in benchmarks.settings, so
these are in the runner's allow-list (and named in it explicitly as well)."""

import time

from django.tasks import task


@task
def noop(*args, **kwargs):
    """Nothing: the cost measured is the queue's own."""
    return None


@task
def sleep_10ms(*args, **kwargs):
    """An I/O-bound task: 10 ms of waiting."""
    time.sleep(0.010)


@task
def cpu_20ms(*args, **kwargs):
    """A CPU-bound task: 20 ms of this thread's CPU time (longer in wall time when the CPU is
    shared, which is then the machine's cost, not the queue's)."""
    end = time.thread_time() + 0.020
    while time.thread_time() < end:
        pass


@task
def record_start_time(*args, **kwargs):
    """Returns the wall-clock time (time.time()) at which the task body started."""
    return time.time()
