"""Runner pieces that need no database: framing, redaction, metrics access, flags."""

import os

import pytest

from reproq_runner import wire
from reproq_runner.cli import build_parser
from reproq_runner.database import Backoff, connect
from reproq_runner.logs import redact_dsn, redact_text
from reproq_runner.metrics import AccessPolicy, parse_addr
from reproq_runner.runner import RunnerConfig
from reproq_runner.supervisor import _describe


def test_frames_survive_partial_reads():
    read_fd, write_fd = os.pipe()
    reader = wire.FrameReader(read_fd)
    data = wire.encode({"a": 1}) + wire.encode([2, 3])
    os.write(write_fd, data[:5])
    assert reader.read_available() == []
    os.write(write_fd, data[5:])
    assert reader.read_available() == [{"a": 1}, [2, 3]]
    os.close(write_fd)
    assert reader.read_available() == [] and reader.closed
    os.close(read_fd)


def test_large_frames_are_written_whole():
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    reader = wire.FrameReader(read_fd)
    big = "x" * 300_000
    import threading

    writer = threading.Thread(target=wire.write_frame, args=(write_fd, big))
    writer.start()
    received = []
    while not received:
        received = reader.read_available()
    writer.join()
    assert received == [big]
    os.close(read_fd)
    os.close(write_fd)


@pytest.mark.parametrize("dsn", [
    "host=db user=app password=hunter2 dbname=q",
    "postgresql://app:hunter2@db:5432/q",
])
def test_dsn_passwords_are_redacted(dsn):
    redacted = redact_dsn(dsn)
    assert "hunter2" not in redacted and "***" in redacted


def test_text_redaction_covers_uris_key_values_and_secrets():
    text = "failed: postgresql://u:pw1@h/db and password='pw 2' and token tok3"
    assert redact_text(text, "tok3") == (
        "failed: postgresql://u:***@h/db and password=*** and token ***")


def test_token_check():
    policy = AccessPolicy.from_settings("s3cret", None)
    assert policy.refusal("127.0.0.1", None) == 401
    assert policy.refusal("127.0.0.1", "Bearer nope") == 401
    assert policy.refusal("127.0.0.1", "Basic s3cret") == 401
    assert policy.refusal("127.0.0.1", "Bearer s3cret") is None


def test_cidr_allow_list():
    policy = AccessPolicy.from_settings(None, "10.0.0.0/8, 192.168.1.0/24")
    assert policy.refusal("10.1.2.3", None) is None
    assert policy.refusal("::ffff:192.168.1.9", None) is None
    assert policy.refusal("127.0.0.1", None) == 403
    assert AccessPolicy.from_settings(None, None).refusal("1.2.3.4", None) is None


def test_metrics_addr_forms():
    assert parse_addr("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_addr(":9100") == ("0.0.0.0", 9100)
    assert parse_addr("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError):
        parse_addr("9100x")


def test_backoff_grows_and_is_capped():
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[0] <= 0.1 and max(delays) <= 1.0 and delays[-1] >= 0.5
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_runner_connections_give_up_on_a_vanished_peer(dsn):
    """TCP keepalives and a user timeout by default, so a call on a connection whose peer
    vanished fails within about a minute instead of the kernel's 15; the DSN's values win."""
    with connect(dsn) as conn:
        parameters = conn.info.get_parameters()
    assert {k: parameters.get(k) for k in ("keepalives", "keepalives_idle", "tcp_user_timeout",
                                           "connect_timeout")} == {
        "keepalives": "1", "keepalives_idle": "30", "tcp_user_timeout": "60000",
        "connect_timeout": "5"}
    with connect(f"{dsn} keepalives_idle=7 connect_timeout=2") as conn:
        parameters = conn.info.get_parameters()
    assert (parameters["keepalives_idle"], parameters["connect_timeout"]) == ("7", "2")


def test_exit_descriptions():
    assert _describe(-11) == "killed by signal 11 (SIGSEGV)"
    assert "out-of-memory" in _describe(-9)
    assert _describe(7) == "exit code 7"


def test_worker_flags():
    args = build_parser().parse_args([
        "worker", "--dsn", "x", "--queues", "a, b", "--concurrency", "3", "--burst",
        "--no-listen", "--max-tasks", "5", "--allowed-task-modules", "app.tasks,lib",
        "--shutdown-timeout", "2.5", "--lease-seconds", "30", "--worker-id", "w1",
        "--metrics-addr", ":9100", "--logs-dir", "/tmp/l"])
    assert (args.queues, args.concurrency, args.burst, args.listen, args.max_tasks) == (
        ["a", "b"], 3, True, False, 5)
    assert args.allowed_task_modules == ["app.tasks", "lib"]
    assert (args.shutdown_timeout, args.lease_seconds, args.worker_id) == (2.5, 30, "w1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--concurrency", "0"])


def test_a_lease_a_heartbeat_could_miss_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--lease-seconds", "4"])
    assert "--lease-seconds: must be at least 5" in capsys.readouterr().err
    assert build_parser().parse_args(["worker", "--lease-seconds", "5"]).lease_seconds == 5


def test_a_runner_config_whose_leases_a_heartbeat_could_miss_is_refused():
    with pytest.raises(ValueError, match="too short for heartbeats every 1.0 s"):
        RunnerConfig(dsn="x", executor_factory=object, lease_seconds=3)
    assert RunnerConfig(dsn="x", executor_factory=object, lease_seconds=5).lease_seconds == 5
    with pytest.raises(ValueError, match="every 5 s"):
        RunnerConfig(dsn="x", executor_factory=object, lease_seconds=15, heartbeat_interval=5)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--poll-interval", "0", "must be a number of seconds above 0, got 0"),
    ("--poll-interval", "nan", "must be a number of seconds above 0, got nan"),
    ("--shutdown-timeout", "-1", "must be a number of seconds, 0 or more, got -1"),
    ("--shutdown-timeout", "nan", "must be a number of seconds, 0 or more, got nan"),
])
def test_a_duration_the_runner_cannot_use_is_refused(capsys, flag, value, message):
    """A poll interval of 0 polled the database without pause; NaN passed every check."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", flag, value])
    assert f"{flag}: {message}" in capsys.readouterr().err
    assert build_parser().parse_args(["worker", "--poll-interval", "0.01"]).poll_interval == 0.01


@pytest.mark.parametrize("name", ["poll_interval", "heartbeat_interval"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_a_runner_config_with_an_interval_it_cannot_keep_is_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a number of seconds above 0"):
        RunnerConfig(dsn="x", executor_factory=object, **{name: value})


def test_an_empty_queue_list_is_refused(capsys):
    """It passed argparse as [], and the runner exited 1 once register_worker refused it."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--queues", " , "])
    assert "--queues: must name at least one queue, got ' , '" in capsys.readouterr().err


def test_idle_metrics_connections_are_dropped_and_bounded(monkeypatch):
    """A client that connected and sent nothing held a thread and a file descriptor forever:
    enough of them and the runner could open neither pipes nor database connections."""
    import socket

    from prometheus_client import CollectorRegistry

    from reproq_runner import metrics

    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT_SECONDS", 0.5)
    server = metrics.MetricsServer("127.0.0.1:0", CollectorRegistry(), metrics.Health(),
                                   AccessPolicy.from_settings("t0ken", None))
    server.start()
    idle = []
    try:
        for _ in range(metrics.MAX_CONNECTIONS + 4):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            idle.append(sock)
        # Past the bound: closed at once. Within it: closed once the timeout passes.
        for sock in idle:
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_a_configured_token_with_surrounding_spaces_still_matches():
    """The presented token is stripped; a configured one from an env file with a newline
    never matched."""
    policy = AccessPolicy.from_settings(" t0ken\n", None)
    assert policy.refusal("127.0.0.1", "Bearer t0ken") is None
    assert policy.refusal("127.0.0.1", "Bearer other") == 401


def test_migrate_reports_an_unreachable_database_without_a_traceback():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "reproq_runner", "migrate", "--dsn",
         "host=/nonexistent-socket-dir dbname=x user=u password=s3cret connect_timeout=1"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "reproq-runner migrate: cannot use the database:" in result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
