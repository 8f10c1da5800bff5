"""Real runner processes against the session's PostgreSQL cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reproq_runner import queries
from tests.waiting import wait_for  # noqa: F401 - the acceptance tests import it from here

ROOT = Path(__file__).resolve().parents[2]
TASKS = "tests.testapp.runner_tasks"
ALLOWED = f"{TASKS},tests.testapp.tasks"


def task_path(name: str) -> str:
    return f"{TASKS}.{name}"



class RunnerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path, worker_id: str,
                 own_group: bool = False) -> None:
        self.process = process
        self.log_path = log_path
        self.worker_id = worker_id
        self.own_group = own_group  # started in a session (and process group) of its own

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"runner {self.worker_id} did not exit; its log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        if self.own_group:  # whatever of its group is left
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def runner_env(dsn: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["REPROQ_TEST_DATABASE"] = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def start_runner(dsn, tmp_path):
    """Start ``python -m reproq_runner worker`` (or another command line) on the test DB."""
    started: list[RunnerProcess] = []

    def _start(*flags: str, worker_id: str | None = None, command: list[str] | None = None,
               with_dsn: bool = True, env: dict | None = None,
               own_group: bool = False) -> RunnerProcess:
        worker_id = worker_id or f"runner-{len(started) + 1}"
        log_path = tmp_path / f"{worker_id}.log"
        base = command or [sys.executable, "-m", "reproq_runner", "worker"]
        args = [*base, *(["--dsn", dsn] if with_dsn else []), "--worker-id", worker_id,
                "--allowed-task-modules", ALLOWED, "--log-format", "text", *flags]
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(args, cwd=ROOT, env={**runner_env(dsn), **(env or {})},
                                       stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=own_group)
        runner = RunnerProcess(process, log_path, worker_id, own_group)
        started.append(runner)
        return runner

    yield _start
    for runner in started:
        runner.stop()


def enqueue(cur, name: str, args=(), **options) -> int:
    options.setdefault("dedup", False)
    return queries.enqueue(cur, task_path(name), list(args), **options)


def status_of(cur, result_id: int) -> str:
    return queries.get_task_run(cur, result_id).status


def worker_registered(cur, worker_id: str) -> bool:
    cur.execute("select 1 from reproq.workers where worker_id = %s", (worker_id,))
    return cur.fetchone() is not None


# -- a runner's /metrics ------------------------------------------------------------------


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


def counter(metrics_text: str, name: str, labels: dict[str, str]) -> float:
    """The value of one sample of a /metrics page (0 when absent)."""
    return sum(sample.value for family in text_string_to_metric_families(metrics_text)
               for sample in family.samples if sample.name == name and sample.labels == labels)
