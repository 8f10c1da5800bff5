"""/metrics and /healthz of a running runner, behind METRICS_AUTH_TOKEN and
METRICS_ALLOW_CIDRS."""

import json
import socket
import urllib.error
import urllib.request

from tests.acceptance.conftest import enqueue, status_of, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


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
