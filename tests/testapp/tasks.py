"""Tasks the test suite enqueues and runs."""

from django.tasks import task


@task
def add(a, b):
    return a + b


@task
def fail_always(message="boom"):
    raise ValueError(message)
