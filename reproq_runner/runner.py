"""The supervising runner: claims due tasks in batches, runs them in child processes, records
their outcomes in batches, and keeps its leases, registry row and wake-ups alive.

One event loop over: the children's result pipes, the LISTEN connection, and a self-pipe
woken by signals and by the recorder thread, which stores outcomes on a connection of its own
(``recorder``). The claiming path lives in ``engine``, wake-ups in ``notifier``, the children
in ``supervisor``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from reproq_runner import migrate, queries
from reproq_runner.child import Assignment
from reproq_runner.database import Database
from reproq_runner.engine import Engine, Recorded, default_worker_id
from reproq_runner.metrics import (AccessPolicy, Health, MetricsServer, NullMetrics,
                                   RunnerMetrics)
from reproq_runner.notifier import ListenNotifier, PollingNotifier
from reproq_runner.outcome import Executor, Outcome
from reproq_runner.pace import FLUSH_BATCH, Pace
from reproq_runner.queries import ClaimedTask
from reproq_runner.recorder import Recorder
from reproq_runner.supervisor import (STOPPED, TIMED_OUT, Child, ChildExited, Finished,
                                      Supervisor)

log = logging.getLogger("reproq.runner")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FORCED = 1

STOP_GRACE_FOR_DATABASE_SECONDS = 10.0


def runner_version() -> str:
    try:
        from importlib.metadata import version

        return version("reproq-django")
    except Exception:  # noqa: BLE001 - running from a checkout without metadata
        return "0+unknown"


@dataclass(frozen=True)
class RunnerConfig:
    dsn: str
    executor_factory: Callable[[], Executor]
    queues: Sequence[str] = ("default",)
    concurrency: int = 10
    burst: bool = False
    max_tasks: int | None = None
    logs_dir: Path | None = None
    lease_seconds: int = 60
    shutdown_timeout: float = 30.0
    listen: bool = True
    metrics_addr: str | None = None
    metrics_auth_token: str | None = None
    metrics_allow_cidrs: str | None = None
    worker_id: str | None = None
    poll_interval: float = 1.0
    heartbeat_interval: float = 1.0
    # Most tasks claimed ahead of the children (pace.Pace); default 2 × concurrency, at least 64.
    prefetch: int | None = None
    start_method: str = "forkserver"
    preload: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("poll_interval", "heartbeat_interval"):
            value = getattr(self, name)
            if not 0 < value < math.inf:  # 0 would call the database without pause
                raise ValueError(f"{name} must be a number of seconds above 0, got {value}")
        # reproq.heartbeat renews a lease once a quarter of it (at most 10 s) is spent: what is
        # left then must outlast a few heartbeat intervals, or a lease could run out under a
        # task that is still running, and another runner run it too.
        left_at_renewal = self.lease_seconds - min(self.lease_seconds / 4, 10)
        if left_at_renewal < 3 * self.heartbeat_interval:
            raise ValueError(
                f"lease_seconds={self.lease_seconds} is too short for heartbeats every "
                f"{self.heartbeat_interval} s: a lease is renewed with "
                f"{left_at_renewal:g} s left, which must be at least 3 heartbeat intervals")


class Runner:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.worker_id = config.worker_id or default_worker_id()
        self.queues = tuple(config.queues)
        self.engine = Engine(self.worker_id, self.queues, config.lease_seconds)
        self.pace = Pace(config.concurrency, config.prefetch)
        self.selector = selectors.DefaultSelector()
        self.db = Database(config.dsn, prepare=config.listen)
        self.notifier = (ListenNotifier(config.dsn, self.queues) if config.listen
                         else PollingNotifier())
        self.supervisor = Supervisor(config.executor_factory, config.concurrency, self.selector,
                                     config.start_method)
        self.metrics = RunnerMetrics() if config.metrics_addr else NullMetrics()
        self.health = Health()
        self.metrics_server: MetricsServer | None = None

        self.buffer: deque[Assignment] = deque()  # claimed, not yet given to a child
        self.pending: list[tuple[ClaimedTask, Outcome]] = []  # outcomes not yet stored
        self.pending_since = 0.0
        self.to_release: list[ClaimedTask] = []
        self.may_have_work = True
        self.claimed_total = 0
        self.signals = 0
        self.draining = False
        self.stop_deadline: float | None = None
        self.gave_up_on_database = False  # --burst: exits 1
        self.left_unstored = False  # outcomes or hand-backs the database never took: exits 1
        self.next_heartbeat = 0.0
        self.next_poll = 0.0
        self.stalled_after = self.pace.stalled_after()  # updated once per step
        self._notifier_fd: int | None = None
        # Woken by signals and by the recorder thread.
        self._wakeup_read, self._wakeup_write = os.pipe()
        for fd in (self._wakeup_read, self._wakeup_write):
            os.set_blocking(fd, False)
        self.recorder = Recorder(config.dsn, self.engine, prepare=config.listen,
                                 wakeup_fd=self._wakeup_write)

    # -- top level --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (signal, --burst, --max-tasks); returns the exit code."""
        self._install_signal_handlers()
        self.selector.register(self._wakeup_read, selectors.EVENT_READ, "signal")
        try:
            # First: /healthz answers 503 while the database is awaited (a probe that found
            # nothing listening would count the runner dead), and a bad METRICS_* value
            # stops the runner at once.
            self._start_metrics()
            if not self._start_on_database():
                return EXIT_ERROR if self.gave_up_on_database else EXIT_OK
            self.db.on_connect = self._register  # again after every reconnect
            self._start_children()
            log.info("runner started", extra={
                "worker_id": self.worker_id, "queues": list(self.queues),
                "concurrency": self.config.concurrency, "listen": self.config.listen,
                "burst": self.config.burst})
            while not self._done():
                self.step()
                if self.signals > 1:
                    return self._stop_now()
            return self._finish()
        finally:
            self._close()

    def step(self) -> None:
        """One turn of the loop: wait for events, then do whatever is due."""
        for key, _ in self.selector.select(self._select_timeout()):
            self._on_event(key.data)
        self._take_recorded(self.recorder.results())
        now = time.monotonic()
        self.stalled_after = self.pace.stalled_after()
        self._keep_notifier()
        if now >= self.next_heartbeat:
            self._heartbeat(now)
        self.supervisor.check_timeouts(now)
        self._take_back(self.supervisor.withdraw_stalled(self.stalled_after, now))
        self._hand_back_if_all_stalled(now)
        self._check_stop_deadline(now)
        self._maybe_start_draining()  # a stop signal: the tasks held here must not start now
        self._dispatch()  # first: children wait for no database call
        self._flush(now)
        self._maybe_start_draining()
        if not self.draining:
            self._maybe_claim(now)
            self._maybe_start_draining()
        self._dispatch()
        self.metrics.set_running(self.supervisor.running_count())

    # -- startup ----------------------------------------------------------------------------

    def _wait_for_database(self) -> bool:
        waited = False
        while not self.db.ensure_connected():
            if not waited:
                log.warning("waiting for the database to accept connections")
                waited = True
            if self._burst_without_database():
                log.error("%s", self._gave_up_message())
                return False
            self._sleep_unless_signalled(self.db.seconds_until_retry())
            if self.signals:
                return False
        self.health.database_reachable = True
        return True

    def _start_on_database(self) -> bool:
        """Wait for the database, check its schema and register; from the start again if it
        goes away in between (a restart right after the first connect). False: stopped by a
        signal, or a --burst runner gave up on the database."""
        while self._wait_for_database():
            ok, _ = self.db.call(self._check_schema_and_register)
            if ok:
                self.health.schema_current = True
                return True
        return False

    def _check_schema_and_register(self, cursor) -> None:
        migrate.check_schema(cursor)
        self._register_on(cursor)

    def _register(self, connection) -> None:
        with connection.cursor() as cursor:
            self._register_on(cursor)

    def _register_on(self, cursor) -> None:
        queries.register_worker(cursor, self.worker_id, socket.gethostname(), os.getpid(),
                                self.queues, self.config.concurrency, runner_version())

    def _start_metrics(self) -> None:
        if not self.config.metrics_addr:
            return
        policy = AccessPolicy.from_settings(self.config.metrics_auth_token,
                                            self.config.metrics_allow_cidrs)
        self.metrics_server = MetricsServer(self.config.metrics_addr, self.metrics.registry,
                                            self.health, policy,
                                            extra=lambda: {"worker_id": self.worker_id})
        self.metrics_server.start()
        log.info("metrics listening on %s", self.config.metrics_addr)

    def _start_children(self) -> None:
        if self.config.start_method == "forkserver":
            multiprocessing.set_forkserver_preload(
                ["reproq_runner.forkserver_signals", "reproq_runner.child",
                 *self.config.preload])
        self.supervisor.start()

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, source) -> None:
        if isinstance(source, Child | ChildExited):
            self._collect(self.supervisor.on_event(source))
            self._take_back(self.supervisor.take_orphans())
        elif source == "signal":
            self._drain_wakeup_pipe()
        elif source == "notify":
            if self.notifier.wakeups():
                self.may_have_work = True
            self._keep_notifier()

    def _collect(self, finished: list[Finished]) -> None:
        for record in finished:
            task = record.task
            if record.kind == STOPPED:
                self.to_release.append(task)
                continue
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append((task, record.outcome))
            self.metrics.observe_duration(task.queue_name, task.task_path, record.duration)
            self.pace.observe(record.duration)
            if record.kind == TIMED_OUT:
                self.metrics.count("timed_out", task.queue_name, task.task_path)

    def _take_back(self, orphans: list[ClaimedTask]) -> None:
        """Tasks a child never started (it died, or they were withdrawn from it): run them
        elsewhere (or, when stopping on a signal, hand them back)."""
        if not orphans:
            return
        if self.stop_deadline is not None:
            self.to_release.extend(orphans)
        else:
            self.buffer.extendleft(Assignment(t) if self.config.logs_dir is None
                                   else self._assignment_with_log(t) for t in reversed(orphans))

    def _hand_back_after(self) -> float:
        """How long every child must have been in a stalled task before the tasks claimed for
        them go back to the queue: at least a poll interval, so that a runner whose tasks are
        only somewhat slower than usual does not hand back and re-claim them every 0.1 s."""
        return max(self.stalled_after, self.config.poll_interval)

    def _hand_back_if_all_stalled(self, now: float) -> None:
        """Every child is stuck in a slow task: the tasks claimed for them go back to the queue,
        where another runner can take them, and this one claims none until a child frees up."""
        if (self.draining or not self.buffer
                or not self.supervisor.all_stalled(self._hand_back_after(), now)):
            return
        log.info("every child is busy with a slow task: handing %d claimed task(s) back to the "
                 "queue", len(self.buffer))
        self.claimed_total -= self._hand_back_buffer()  # for --max-tasks: these did not run here
        self.may_have_work = True  # they are due: claim again once a child is free

    def _hand_back_buffer(self) -> int:
        """Queue the claimed tasks no child was given for reproq.release (no attempt spent);
        returns how many."""
        count = len(self.buffer)
        self.to_release.extend(a.task for a in self.buffer)
        self.buffer.clear()
        return count

    def _keep_notifier(self) -> None:
        """(Re)connect the LISTEN connection and keep its socket registered."""
        if self.draining:
            return
        self.notifier.ensure_connected()
        fd = self.notifier.fileno()
        if fd == self._notifier_fd:
            return
        if self._notifier_fd is not None:
            self._unregister(self._notifier_fd)
        if fd is not None:
            self.selector.register(fd, selectors.EVENT_READ, "notify")
            if self.notifier.wakeups():
                self.may_have_work = True
        self._notifier_fd = fd

    def _unregister(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # -- the database side ------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        self.next_heartbeat = now + self.config.heartbeat_interval
        ok, cancel_requested = self.db.call(self.engine.heartbeat, self._held_ids())
        self.health.database_reachable = ok
        if ok and cancel_requested:
            self._cancel(set(cancel_requested))

    def _held_ids(self) -> list[int]:
        """The tasks whose leases this runner keeps: claimed and not given to a child, in a
        child (running or queued), finished and not yet stored, or to be handed back. A task
        leased to this worker but not here (a claim whose reply was lost) is left to expire."""
        held = [a.task.result_id for a in self.buffer]
        held += [t.result_id for t in self.supervisor.held_tasks()]
        held += [t.result_id for t, _ in self.pending]
        held += [t.result_id for t, _ in self.recorder.in_flight()]
        held += [t.result_id for t in self.to_release]
        return held

    def _cancel(self, result_ids: set[int]) -> None:
        waiting = [a for a in self.buffer if a.task.result_id in result_ids]
        self.claimed_total -= len(waiting)  # for --max-tasks: these do not run here
        for assignment in waiting:
            self.buffer.remove(assignment)
            self.to_release.append(assignment.task)  # release() records CANCELLED
        running, withdrawn = self.supervisor.cancel(result_ids)
        for result_id in running:
            log.info("task %s cancelled while running", result_id)
        cancelled = [t for t in withdrawn if t.result_id in result_ids]
        self.claimed_total -= len(cancelled)
        self.to_release.extend(cancelled)
        self._take_back([t for t in withdrawn if t.result_id not in result_ids])

    def _flush(self, now: float) -> None:
        if self.to_release:
            self._release()
        if self.pending and self._flush_due(now) and self.recorder.ready():
            self.recorder.submit(self.pending)
            self.pending = []

    def _flush_due(self, now: float) -> bool:
        return (len(self.pending) >= FLUSH_BATCH or self.draining
                or now - self.pending_since >= self.pace.flush_interval()
                or self.supervisor.running_count() == 0)

    def _release(self) -> None:
        ok, released = self.db.call(self.engine.release, self.to_release)
        if ok:
            log.info("handed %d task(s) back to the queue", len(released))
            for task in self.to_release:
                if task.result_id in released:
                    self.metrics.count("handed_back", task.queue_name, task.task_path)
            self.to_release = []

    def _take_recorded(self, batches) -> None:
        for batch in batches:
            for recorded in batch.recorded:
                self._count(recorded)
            if batch.unstored:
                if not self.pending:
                    self.pending_since = time.monotonic()
                self.pending[:0] = batch.unstored

    def _count(self, recorded: Recorded) -> None:
        for task in recorded.succeeded:
            self.metrics.count("succeeded", task.queue_name, task.task_path)
        for task, status in recorded.failed:
            name = {"READY": "retried", "CANCELLED": "cancelled"}.get(status, "failed")
            self.metrics.count(name, task.queue_name, task.task_path)
            if status != "READY" or task.attempts >= task.max_attempts:
                log.info("task %s %s", task.result_id, status.lower(),
                         extra={"task_path": task.task_path, "attempt": task.attempts})

    def _maybe_claim(self, now: float) -> None:
        if now >= self.next_poll:
            self.next_poll = now + self.config.poll_interval
            self.may_have_work = True
        if (not self.may_have_work or not self.supervisor.ever_ready
                or self.supervisor.all_stalled(self._hand_back_after(), now)):
            # No claim before a child is ready: a runner whose children cannot set up must
            # not hold tasks it will never run.
            return
        prefetch = self.pace.prefetch()
        capacity = self.config.concurrency * self.pace.child_depth() + prefetch
        in_hand = len(self.buffer) + sum(len(c.assigned) for c in self.supervisor.children)
        free = capacity - in_hand
        if self.config.max_tasks is not None:
            free = min(free, self.config.max_tasks - self.claimed_total)
        if free <= 0 or len(self.buffer) > prefetch // 2:
            return
        started = time.perf_counter()
        ok, tasks = self.db.call(self.engine.claim, free)
        if not ok:
            return
        self.metrics.observe_claim(time.perf_counter() - started)
        self.may_have_work = len(tasks) == free
        self.claimed_total += len(tasks)
        self.buffer.extend(self._assignments(tasks))
        for task in tasks:
            self.metrics.count("claimed", task.queue_name, task.task_path)

    def _assignments(self, tasks: list[ClaimedTask]) -> list[Assignment]:
        if self.config.logs_dir is None or not tasks:
            return [Assignment(task) for task in tasks]
        assignments = [self._assignment_with_log(task) for task in tasks]
        self.db.call(self.engine.set_logs_uris,
                     [(a.task, Path(a.log_path).as_uri()) for a in assignments])
        return assignments

    def _assignment_with_log(self, task: ClaimedTask) -> Assignment:
        """Logs go to <logs-dir>/<UTC day of the claim>/<result id>-attempt-<n>.log: the same
        path whenever it is computed (a task taken back from a child gets it again)."""
        day = task.last_attempted_at.astimezone(UTC).strftime("%Y-%m-%d")
        folder = Path(self.config.logs_dir).resolve() / day
        return Assignment(task, str(folder / f"{task.result_id}-attempt-{task.attempts}.log"))

    def _dispatch(self) -> None:
        """Spread the buffer over children with room, each getting its share in one frame."""
        if not self.buffer:
            return
        depth = self.pace.child_depth()
        children = self.supervisor.children_with_room(depth, self.stalled_after)
        for index, child in enumerate(children):
            if not self.buffer:
                break
            share = -(-len(self.buffer) // (len(children) - index))
            count = min(share, depth - len(child.assigned))
            batch = [self.buffer.popleft() for _ in range(count)]
            sent = self.supervisor.assign(child, batch)
            self.buffer.extendleft(reversed(batch[sent:]))  # its pipe is full: keep them
        # Sent to a child that turned out to be gone: no later event brings them back.
        self._take_back(self.supervisor.take_orphans())

    # -- stopping ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.signals += 1
        try:
            os.write(self._wakeup_write, b"s")
        except OSError:
            pass

    def _drain_wakeup_pipe(self) -> None:
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    def _sleep_unless_signalled(self, seconds: float) -> None:
        for key, _ in self.selector.select(max(0.0, seconds)):
            if key.data == "signal":
                self._drain_wakeup_pipe()

    def _maybe_start_draining(self) -> None:
        reason = self._reason_to_stop_now() if self.stop_deadline is None else None
        if reason is not None:
            # Tasks claimed and not started, held here or queued in a child behind the task it
            # runs, go back to the queue now (no attempt spent); only running tasks finish.
            self._hand_back_buffer()
            self.to_release.extend(self.supervisor.withdraw_queued())
            # Also while already draining for --burst or --max-tasks: this still bounds the
            # wait for running tasks and hands back those not started.
            if self.draining:
                log.info("%s while stopping: running tasks get %s s", reason,
                         self.config.shutdown_timeout)
                self.stop_deadline = time.monotonic() + self.config.shutdown_timeout
                self._flush(time.monotonic())
            else:
                self._start_draining(reason, self.config.shutdown_timeout)
            return
        if self.draining:
            return
        if self.config.max_tasks is not None and self.claimed_total >= self.config.max_tasks:
            self._start_draining("--max-tasks reached", None)
        elif self.config.burst and self._idle() and not self.may_have_work:
            self._start_draining("--burst: nothing left that is due", None)

    def _reason_to_stop_now(self) -> str | None:
        """Why to stop as on a stop signal (no more claims, unstarted tasks handed back,
        running ones given --shutdown-timeout), or None."""
        if self.signals:
            return "signal received"
        if self.supervisor.setup_failure:
            return "a new child process could not start"
        if self._burst_without_database():
            return self._gave_up_message()
        return None

    def _burst_without_database(self) -> bool:
        """A --burst run cannot tell whether work is left without the database: once it has
        been unreachable for --shutdown-timeout seconds, give up (exit 1) rather than
        reconnect forever (a cron job or CI step that never ends)."""
        started = self.db.outage_started
        if (not self.config.burst or started is None
                or time.monotonic() - started <= self.config.shutdown_timeout):
            return False
        self.gave_up_on_database = True
        return True

    def _gave_up_message(self) -> str:
        return (f"--burst: the database has been unreachable for more than "
                f"{self.config.shutdown_timeout:g} s")

    def _idle(self) -> bool:
        return (not self.buffer and self.supervisor.running_count() == 0
                and self.supervisor.starting_count() == 0)

    def _start_draining(self, reason: str, timeout: float | None) -> None:
        log.info("stopping: %s; no more claims", reason,
                 extra={"running": self.supervisor.running_count()})
        self.draining = True
        if timeout is not None:
            self.stop_deadline = time.monotonic() + timeout
        self.notifier.close()
        if self._notifier_fd is not None:
            self._unregister(self._notifier_fd)
            self._notifier_fd = None
        self._flush(time.monotonic())

    def _check_stop_deadline(self, now: float) -> None:
        if self.stop_deadline is not None and now >= self.stop_deadline:
            stopped = self.supervisor.stop_running()  # those not being killed already
            if stopped:
                log.warning("shutdown timeout reached: stopping %d running task(s); they go "
                            "back to the queue", stopped)

    def _done(self) -> bool:
        if not self.draining:
            return False
        if self.supervisor.running_count() or self.buffer:
            return False
        if not self.pending and not self.to_release and not self.recorder.busy:
            return True
        now = time.monotonic()
        if self.stop_deadline is None:
            # --burst or --max-tasks: only the database is left to wait for, and it gets what
            # a signal would give (a runner run by cron must not wait forever).
            self.stop_deadline = now + self.config.shutdown_timeout
        if now > self.stop_deadline + STOP_GRACE_FOR_DATABASE_SECONDS:
            log.error("database unavailable: %d outcome(s) and %d hand-back(s) not stored%s; "
                      "their leases will expire", len(self.pending), len(self.to_release),
                      ", and a batch of outcomes still being stored" if self.recorder.busy
                      else "")
            self.left_unstored = True
            return True
        return False

    def _finish(self) -> int:
        self.supervisor.close_all(timeout=5)
        self.db.call(queries.unregister_worker, self.worker_id)
        log.info("runner stopped", extra={"worker_id": self.worker_id})
        failed = (self.supervisor.setup_failure or self.gave_up_on_database
                  or self.left_unstored)
        return EXIT_ERROR if failed else EXIT_OK

    def _stop_now(self) -> int:
        """Second signal: kill the children, hand their tasks back, exit."""
        log.warning("second signal: stopping at once")
        self.supervisor.stopping = True
        self.supervisor.kill_all()
        deadline = time.monotonic() + 5
        while self.supervisor.children and time.monotonic() < deadline:
            for key, _ in self.selector.select(0.1):
                if isinstance(key.data, Child | ChildExited):
                    self._collect(self.supervisor.on_event(key.data))
        self.to_release.extend(self.supervisor.take_orphans())  # queued in killed children
        self._hand_back_buffer()
        self.draining = True
        self._release()
        self._record_before_exit(timeout=5.0)
        self.db.call(queries.unregister_worker, self.worker_id)
        return EXIT_FORCED

    def _record_before_exit(self, timeout: float) -> None:
        """Store what is pending now, waiting for the recorder (at most ``timeout``)."""
        self._take_recorded(self.recorder.wait(timeout))
        if self.pending and self.recorder.ready():
            self.recorder.submit(self.pending)
            self.pending = []
            self._take_recorded(self.recorder.wait(timeout))
        if self.pending:
            log.error("database unavailable: %d outcome(s) not stored; their leases will "
                      "expire and the tasks run again", len(self.pending))

    def _select_timeout(self) -> float:
        now = time.monotonic()
        candidates = [self.next_heartbeat - now]
        if not self.draining:
            candidates.append(self.next_poll - now)
            retry = self.notifier.seconds_until_retry()
            if retry is not None:
                candidates.append(retry)
        if self.pending and not self.recorder.busy:
            # The recorder's wake-up ends the wait while a batch is in flight.
            candidates.append(max(self.pending_since + self.pace.flush_interval() - now,
                                  self.recorder.seconds_until_retry()))
        if not self.db.healthy and self.to_release:
            candidates.append(self.db.seconds_until_retry())
        if self.stop_deadline is not None:
            candidates.append(self.stop_deadline - now)
        dues = [self.supervisor.next_timeout_in(now),
                self.supervisor.next_stall_in(self.stalled_after, now)]
        if self.buffer and not self.draining:
            dues.append(self.supervisor.next_all_stalled_in(self._hand_back_after(), now))
        candidates.extend(due for due in dues if due is not None)
        if self.draining and not self.supervisor.running_count():
            candidates.append(0.05)
        return max(0.0, min(candidates))

    def _close(self) -> None:
        if self.supervisor.children:
            self.supervisor.kill_all()
            self.supervisor.close_all(timeout=1)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.notifier.close()
        self.recorder.close()
        self.db.close()
        self.selector.close()
        for fd in (self._wakeup_read, self._wakeup_write):
            os.close(fd)
