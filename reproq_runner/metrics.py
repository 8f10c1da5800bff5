"""Prometheus metrics and ``/healthz`` for one runner, served on ``--metrics-addr``.

Access control: with ``METRICS_AUTH_TOKEN`` set, requests need ``Authorization: Bearer <token>``
(compared in constant time, else 401); with ``METRICS_ALLOW_CIDRS`` set (comma-separated), only
clients from those networks are served (else 403).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

from reproq_runner.errors import FlagError

log = logging.getLogger("reproq.runner")

# claimed counts every claim; handed_back the claimed tasks given back through reproq.release,
# which refunds their attempt (those cancelled before they started too: they end CANCELLED
# but count here, not in cancelled). claimed - handed_back is the attempts spent here.
OUTCOME_COUNTERS = ("claimed", "handed_back", "succeeded", "failed", "retried", "timed_out",
                    "cancelled")


class NullMetrics:
    """Metrics are off (no ``--metrics-addr``): every call does nothing."""

    def count(self, name: str, queue: str, task: str, amount: int = 1) -> None:
        pass

    def observe_duration(self, queue: str, task: str, seconds: float) -> None:
        pass

    def observe_claim(self, seconds: float) -> None:
        pass

    def set_running(self, count: int) -> None:
        pass


class RunnerMetrics(NullMetrics):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counters = {
            name: Counter(f"reproq_tasks_{name}", f"Task attempts {name.replace('_', ' ')}",
                          ["queue", "task"], registry=self.registry)
            for name in OUTCOME_COUNTERS
        }
        self.duration = Histogram("reproq_task_duration_seconds", "Run time of task attempts",
                                  ["queue", "task"], registry=self.registry)
        self.claim_latency = Histogram(
            "reproq_claim_seconds", "Duration of one reproq.claim call",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.running = Gauge("reproq_tasks_running", "Tasks running in child processes",
                             registry=self.registry)
        self._children: dict[tuple, object] = {}

    def _child(self, metric, key: tuple):
        child = self._children.get((id(metric), key))
        if child is None:
            child = self._children[(id(metric), key)] = metric.labels(*key)
        return child

    def count(self, name: str, queue: str, task: str, amount: int = 1) -> None:
        self._child(self.counters[name], (queue, task)).inc(amount)

    def observe_duration(self, queue: str, task: str, seconds: float) -> None:
        self._child(self.duration, (queue, task)).observe(seconds)

    def observe_claim(self, seconds: float) -> None:
        self.claim_latency.observe(seconds)

    def set_running(self, count: int) -> None:
        self.running.set(count)


@dataclass
class Health:
    """Written by the runner loop, read by the HTTP thread (plain attribute reads)."""

    database_reachable: bool = False
    schema_current: bool = False

    @property
    def ok(self) -> bool:
        return self.database_reachable and self.schema_current


class MetricsSettingError(FlagError):
    """``--metrics-addr``, ``METRICS_ALLOW_CIDRS``: a value the endpoint cannot use."""


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, token: str | None, cidrs: str | Sequence[str] | None) -> AccessPolicy:
        if isinstance(cidrs, str):
            cidrs = [c for c in (part.strip() for part in cidrs.split(",")) if c]
        try:
            networks = tuple(ipaddress.ip_network(c, strict=False) for c in (cidrs or ()))
        except ValueError as exc:
            raise MetricsSettingError(f"METRICS_ALLOW_CIDRS: {exc}") from None
        # A presented token is stripped; so is the configured one (an env file's newline).
        return cls((token or "").strip() or None, networks)

    def refusal(self, client_ip: str, authorization: str | None) -> int | None:
        """HTTP status refusing the request (403 wrong network, 401 bad token), or None."""
        if self.networks and not self._allowed_network(client_ip):
            return 403
        if self.token is not None and not self._valid_token(authorization):
            return 401
        return None

    def _allowed_network(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _valid_token(self, authorization: str | None) -> bool:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            presented = ""
        return hmac.compare_digest(presented.strip().encode(), self.token.encode())


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise MetricsSettingError(f"--metrics-addr must be host:port, got {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


# A client that connects and sends nothing (or trickles) is dropped after this long, and at
# most this many connections are served at once (a thread each); the others are closed at once.
# Without them idle connections held a thread and a file descriptor each, forever, until the
# runner could open neither pipes nor database connections.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 16


def make_handler(registry: CollectorRegistry, health: Health, policy: AccessPolicy,
                 extra: Callable[[], dict] | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_SECONDS

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            refusal = policy.refusal(self.client_address[0], self.headers.get("Authorization"))
            if refusal is not None:
                self._send(refusal, b"forbidden\n" if refusal == 403 else b"unauthorized\n",
                           "text/plain", {"WWW-Authenticate": "Bearer"} if refusal == 401
                           else {})
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                body = {"database_reachable": health.database_reachable,
                        "schema_current": health.schema_current, **(extra() if extra else {})}
                self._send(200 if health.ok else 503, json.dumps(body).encode() + b"\n",
                           "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("metrics %s %s", self.client_address[0], format % args)

    return Handler


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed at once, no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class MetricsServer:
    """The HTTP endpoint, in a daemon thread of the runner process."""

    def __init__(self, addr: str, registry: CollectorRegistry, health: Health,
                 policy: AccessPolicy, extra: Callable[[], dict] | None = None) -> None:
        host, port = parse_addr(addr)
        server_class = _BoundedHTTPServer
        if ":" in host:
            server_class = type("V6Server", (_BoundedHTTPServer,),
                                {"address_family": socket.AF_INET6})
        try:
            self.server = server_class((host, port),
                                       make_handler(registry, health, policy, extra))
        except (OSError, OverflowError) as exc:  # in use, no such host, a port over 65535
            raise MetricsSettingError(f"--metrics-addr {addr!r}: cannot listen there: "
                                      f"{exc}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="reproq-metrics",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
