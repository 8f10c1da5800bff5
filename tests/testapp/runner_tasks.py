"""Tasks the runner's acceptance tests run in real child processes."""

import ctypes
import logging
import os
import sys
import time
from pathlib import Path

from django.tasks import task


@task
def noop():
    return None


@task
def echo(value):
    return value


@task
def effective_log_level(name):
    return logging.getLogger(name).getEffectiveLevel()


@task
def sleep(seconds, marker=None):
    """Sleep; with ``marker``, first touch that file so a test knows the task started."""
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return {"slept": seconds}


@task
def sleep_writing_pid(seconds, marker):
    """Write this process's pid to ``marker`` (the test knows the task started, and in which
    process), then sleep."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"slept": seconds}


@task
def fork_then_sleep(seconds, grandchild_seconds, pidfile):
    """Fork a process that keeps every file descriptor (as ``os.fork`` without exec does, the
    child's result pipe among them) and outlives the task; write its pid to ``pidfile``."""
    pid = os.fork()
    if pid == 0:
        time.sleep(grandchild_seconds)
        os._exit(0)
    Path(pidfile).write_text(str(pid))
    time.sleep(seconds)
    return "done"


@task
def sleep_once(seconds, marker):
    """Sleep on the first attempt only (the marker file remembers it), return at once after."""
    if os.path.exists(marker):
        return {"attempt": 2}
    Path(marker).touch()
    time.sleep(seconds)
    return {"attempt": 1}


@task
def exit_process(code=7):
    os._exit(code)


@task
def kill_the_forkserver():
    """Kill this child's parent, the forkserver (as the OOM killer might): the child dies with
    it, and so would every child the forkserver started."""
    os.kill(os.getppid(), 9)
    time.sleep(60)


@task
def segfault():
    ctypes.string_at(0)


@task
def raise_system_exit():
    raise SystemExit("task called sys.exit")


@task
def spin(seconds):
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += 1
    return total


@task
def chatty(text):
    print(f"stdout says {text}")
    print(f"stderr says {text}", file=sys.stderr)
    os.write(1, b"raw fd write\n")
    return {"text": text}


@task
def pid():
    return os.getpid()


@task
def wait_for_file(path, marker=None, seconds=120):
    """Touch ``marker`` (the test knows it started), then wait for ``path`` to exist, at most
    ``seconds``."""
    if marker:
        Path(marker).touch()
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(path)
