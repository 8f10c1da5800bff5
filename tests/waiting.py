"""Waiting for a state instead of sleeping for a guessed time."""

import time

import pytest


def wait_for(condition, timeout: float = 30.0, interval: float = 0.005, message: str = ""):
    """Poll ``condition`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(interval)
