"""Tasks the test suite enqueues and runs."""

import asyncio
import os

from django.tasks import task

from tests.testapp import events


@task
def add(a, b):
    return a + b


@task
def fail_always(message="boom"):
    raise ValueError(message)


@task(queue_name="other", priority=5)
def echo(*args, **kwargs):
    return {"args": args, "kwargs": kwargs}


@task
def describe(*args, **kwargs):
    """Returns the Python types the task received, to prove the envelope decoded them."""
    return {"args": [type(a).__name__ for a in args],
            "kwargs": {k: type(v).__name__ for k, v in kwargs.items()},
            "repr": [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]}


@task
async def add_async(a, b):
    await asyncio.sleep(0)
    return a + b


@task(takes_context=True)
def remember(context, note):
    context.metadata["note"] = note
    context.metadata["attempt"] = context.attempt
    context.save_metadata()
    return {"attempt": context.attempt, "id": context.task_result.id,
            "status": context.task_result.status}


@task
def exits():
    raise SystemExit("task called exit")


@task
def interrupts():
    raise KeyboardInterrupt("task interrupted")


@task
def returns_unstorable():
    return object()


@task
def returns_nan():
    return float("nan")


@task
def returns_cycle(label):
    events.calls.append(label)
    node = {"children": []}
    node["children"].append({"parent": node})
    return node


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


@task
def raises_unprintable():
    raise UnprintableError()


@task
def raises_about_a_file_name():
    raise FileNotFoundError(f"missing input {os.fsdecode(b'report-\xff.csv')}")


@task
def record_call(label):
    events.calls.append(label)
    return label


@task
def run_command(command):
    # Never enqueued by tests on purpose: exists to prove nothing outside the allow-list runs.
    return os.system(command)
