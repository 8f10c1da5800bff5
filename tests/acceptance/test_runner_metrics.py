"""/metrics and /healthz of a running runner, behind METRICS_AUTH_TOKEN and
METRICS_ALLOW_CIDRS."""

import json
import socket

import pytest

from tests.acceptance.conftest import enqueue, free_port, get, status_of, wait_for


def test_metrics_need_the_bearer_token(cur, start_runner):
    port = free_port()
    runner = start_runner("--metrics-addr", f"127.0.0.1:{port}",
                          env={"METRICS_AUTH_TOKEN": "s3cret"})
    wait_for(lambda: get(port, "/healthz", "s3cret")[0] == 200, message="healthy endpoint")
    result_id = enqueue(cur, "echo", [1])
    wait_for(lambda: status_of(cur, result_id) == "SUCCESSFUL", message="task")
    assert get(port, "/metrics")[0] == 401
    assert get(port, "/metrics", "wrong")[0] == 401
    status, body = get(port, "/metrics", "s3cret")
    assert status == 200
    text = body.decode()
    assert 'reproq_tasks_claimed_total{queue="default",task="tests.testapp.runner_tasks.echo"}' \
        in text
    assert "reproq_task_duration_seconds_bucket" in text and "reproq_claim_seconds" in text
    health = json.loads(get(port, "/healthz", "s3cret")[1])
    assert health["database_reachable"] and health["schema_current"]
    assert health["worker_id"] == runner.worker_id
    assert "s3cret" not in runner.log()


def test_metrics_refuse_clients_outside_the_allowed_networks(start_runner):
    port = free_port()
    start_runner("--metrics-addr", f"127.0.0.1:{port}",
                 env={"METRICS_ALLOW_CIDRS": "10.0.0.0/8"})
    status = wait_for(lambda: get(port, "/metrics")[0], message="endpoint up")
    assert status == 403


def test_healthz_answers_503_while_the_database_is_awaited(start_runner):
    """It was served only once the database had answered: a probe found nothing listening
    during a start-up outage, and counted the runner dead."""
    port = free_port()
    runner = start_runner("--metrics-addr", f"127.0.0.1:{port}", "--dsn",
                          "host=/nonexistent-socket-dir dbname=x connect_timeout=1",
                          with_dsn=False)
    status = wait_for(lambda: get(port, "/healthz")[0], message="endpoint up")
    assert status == 503
    assert json.loads(get(port, "/healthz")[1])["database_reachable"] is False
    assert runner.process.poll() is None  # still waiting for the database


def test_a_bad_metrics_allow_list_stops_the_runner_at_once(start_runner):
    runner = start_runner("--metrics-addr", f"127.0.0.1:{free_port()}", "--dsn",
                          "host=/nonexistent-socket-dir dbname=x connect_timeout=1",
                          with_dsn=False, env={"METRICS_ALLOW_CIDRS": "10.0.0.0/33"})
    assert runner.wait(30) == 2, runner.log()
    assert "refusing to start: METRICS_ALLOW_CIDRS: '10.0.0.0/33' does not appear" in runner.log()
    assert "Traceback" not in runner.log()


@pytest.mark.parametrize("addr, message", [
    ("127.0.0.1:99999", "port must be 0-65535"),
    ("in-use", "Address already in use"),
])
def test_a_metrics_address_that_cannot_be_listened_on_stops_the_runner_at_once(
        start_runner, addr, message):
    """It was a traceback and exit 1 (OverflowError, or OSError for a port in use)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if addr == "in-use":
            addr = f"127.0.0.1:{taken.getsockname()[1]}"
        runner = start_runner("--metrics-addr", addr, "--dsn",
                              "host=/nonexistent-socket-dir dbname=x connect_timeout=1",
                              with_dsn=False)
        assert runner.wait(30) == 2, runner.log()
    assert f"refusing to start: --metrics-addr '{addr}': cannot listen there" in runner.log()
    assert message in runner.log() and "Traceback" not in runner.log()
