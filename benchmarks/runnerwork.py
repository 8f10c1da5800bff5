"""Workloads that run a real runner: ``manage.py reproq worker`` (here ``python -m django
reproq worker`` with ``DJANGO_SETTINGS_MODULE=benchmarks.settings``) as a subprocess."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks import cluster, sqlwork
from benchmarks.report import percentile
from reproq_runner import queries

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONCURRENCY = 10  # the runner's documented default (issue 4)


def unavailable() -> str | None:
    """Why the runner workloads cannot run yet, or None."""
    if importlib.util.find_spec("reproq_django.cli.worker") is None:
        return "`manage.py reproq worker` (reproq_django/cli/worker.py) is not built yet"
    if importlib.util.find_spec("reproq_django.backend") is None:
        return "reproq_django.backend is not built yet (the runner resolves Django tasks)"
    return None


def worker_command(concurrency: int | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "django", "reproq", "worker", "--queues", "default"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command + list(extra)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def start_worker(concurrency: int | None, *extra: str,
                 log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(worker_command(concurrency, *extra), cwd=REPO_ROOT, env=_env(),
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def _fail(process: subprocess.Popen, what: str, log: Path | None) -> RuntimeError:
    tail = ""
    if log and log.exists():
        tail = log.read_text(errors="replace")[-1500:]
    elif process.stderr:
        tail = process.stderr.read().decode(errors="replace")[-1500:]
    return RuntimeError(f"{what} (exit {process.returncode}): {tail.strip()}")


def _wait_for_exit(process: subprocess.Popen, timeout: float, what: str,
                   log: Path | None) -> None:
    """Wait for a ``--burst`` runner to exit; kill it after ``timeout``; a non-zero exit
    fails with the tail of its log."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"runner did not {what} within {timeout} s") from None
    if process.returncode != 0:
        raise _fail(process, f"runner failed to {what}", log)


def stop_worker(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_finished(conn: psycopg.Connection, expected: int, timeout: float,
                        process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait until ``expected`` tasks are finished. The measured runner shares the CPU with this
    wait, so it asks a cheap question often and counts every row only once that says done."""
    deadline = time.monotonic() + timeout
    while True:
        counts = None
        if not sqlwork.any_unfinished(conn):
            counts = sqlwork.counts(conn)
            finished = sum(counts.get(s, 0) for s in ("SUCCESSFUL", "FAILED", "CANCELLED"))
            if finished >= expected:
                return
        if process is not None and process.poll() is not None:
            counts = counts or sqlwork.counts(conn)
            raise _fail(process, f"runner exited early with {counts}", log)
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {expected} finished tasks: "
                               f"{counts or sqlwork.counts(conn)}")
        time.sleep(0.05)


def verify_exactly_once(conn: psycopg.Connection, expected: int) -> None:
    """Every task SUCCESSFUL, after exactly one attempt by one worker."""
    counts = sqlwork.counts(conn)
    if counts != {"SUCCESSFUL": expected}:
        raise RuntimeError(f"expected {expected} SUCCESSFUL tasks, found {counts}")
    twice = conn.execute("select count(*) from reproq.task_runs"
                         " where attempts <> 1 or cardinality(worker_ids) <> 1").fetchone()[0]
    if twice:
        raise RuntimeError(f"{twice} tasks ran more than once")


def busy_span(conn: psycopg.Connection) -> float:
    """Seconds from the first claim to the last completion, as the database recorded them."""
    span = conn.execute("select extract(epoch from max(finished_at) - min(started_at))"
                        " from reproq.task_runs").fetchone()[0]
    return float(span)


@dataclass
class CpuTime:
    """CPU seconds (every thread) by process group (see ``_cpu_seconds``)."""

    runner: float = 0.0
    children: float = 0.0  # the runner's descendants: the forkserver and the task children
    postgres: float = 0.0  # the server's processes, the benchmark's own backend excepted

    def __sub__(self, other: CpuTime) -> CpuTime:
        return CpuTime(self.runner - other.runner, self.children - other.children,
                       self.postgres - other.postgres)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SCHEDULER_COUNTS = Path("/proc/self/sched").exists()  # the kernel has CONFIG_SCHED_DEBUG


def _cpu_seconds(pid: int) -> float:
    """CPU seconds ``pid`` has run, all its threads (0 once it has exited: its time is lost).

    The scheduler's own count (``se.sum_exec_runtime`` of ``/proc/<pid>/task/<tid>/sched``),
    exact to the nanosecond; on kernels without that file, ``/proc/<pid>/stat``'s utime and
    stime, sampled at clock ticks (on the development VM the two agreed within 3%)."""
    if not _SCHEDULER_COUNTS:
        return _ticked_cpu_seconds(pid)
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    total = 0.0
    for thread in threads:
        try:
            text = (thread / "sched").read_text()
        except OSError:  # that thread has just exited
            continue
        for line in text.splitlines():
            if line.startswith("se.sum_exec_runtime"):
                total += float(line.split(":")[1]) / 1000  # milliseconds
                break
    return total


def _ticked_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS if fields else 0.0  # utime, stime


def cpu_time(conn: psycopg.Connection, runner_pid: int) -> CpuTime:
    """CPU used so far by the runner, its descendants and PostgreSQL (not counting the
    backend of ``conn``, the benchmark's own, which polls for the end of a measurement)."""
    postmaster = int((cluster.attached().data_dir / "postmaster.pid").read_text().split()[0])
    own_backend = conn.info.backend_pid
    return CpuTime(
        runner=_cpu_seconds(runner_pid),
        children=sum(_cpu_seconds(pid) for pid in _tree(runner_pid) if pid != runner_pid),
        postgres=sum(_cpu_seconds(pid) for pid in _tree(postmaster) if pid != own_backend),
    )


@dataclass
class DrainResult:
    rate: float         # tasks/s, first claim → last completion (database timestamps)
    wall_rate: float    # tasks/s, process start → exit (includes Django setup, children)
    span: float
    cpu: CpuTime | None = None  # while the measured tasks ran (steady state only)


def drain(conn: psycopg.Connection, n: int, concurrency: int | None, task_path: str,
          log: Path | None = None, timeout: float = 900) -> DrainResult:
    """Pre-enqueue ``n`` tasks, run one ``worker --burst`` until it exits, verify."""
    cluster.reset(conn)
    sqlwork.preload(conn, n, task_path)
    cluster.vacuum(conn)
    started = time.perf_counter()
    _wait_for_exit(start_worker(concurrency, "--burst", log=log), timeout,
                   f"drain {n} tasks", log)
    wall = time.perf_counter() - started
    verify_exactly_once(conn, n)
    span = busy_span(conn)
    return DrainResult(n / span, n / wall, span)


def overhead_ms(span: float, n: int, concurrency: int, task_seconds: float) -> float:
    """Per-task time the runner adds: slot-seconds used beyond the tasks' own time, per task."""
    return (span * concurrency - n * task_seconds) / n * 1000


def pickup_latency(conn: psycopg.Connection, rate: float, seconds: float,
                   concurrency: int | None, log: Path | None = None) -> dict[str, float]:
    """Enqueue at a steady ``rate`` into an idle runner; enqueue commit → task start (ms)."""
    cluster.reset(conn)
    process = start_worker(concurrency, log=log)
    try:
        # Warm-up: the runner is up, its children have imported Django and the task module.
        warm = 20
        with conn.cursor() as cur:
            for i in range(warm):
                queries.enqueue(cur, "benchmarks.tasks.record_start_time", [-1 - i])
        wait_until_finished(conn, warm, 120, process, log)
        time.sleep(0.5)  # idle again: the runner waits for a notification
        committed: dict[int, float] = {}
        total = int(rate * seconds)
        with conn.cursor() as cur:
            begin = time.perf_counter()
            for i in range(total):
                due = begin + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                result_id = queries.enqueue(cur, "benchmarks.tasks.record_start_time", [i])
                committed[result_id] = time.time()  # autocommit: the commit has returned
        wait_until_finished(conn, warm + total, 120, process, log)
    finally:
        stop_worker(process)
    rows = conn.execute("select result_id, return_json from reproq.task_runs"
                        " where result_id = any(%s) and status = 'SUCCESSFUL'",
                        (list(committed),)).fetchall()
    if len(rows) != len(committed):
        raise RuntimeError(f"only {len(rows)} of {len(committed)} latency probes succeeded")
    latencies = [(float(value) - committed[result_id]) * 1000 for result_id, value in rows]
    return {q: percentile(latencies, q) for q in (50, 95, 99)}


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, …), or None
    once the process has exited."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def _memory_kb(pid: int, field: str, source: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Memory:
    runner_rss_mb: float
    total_rss_mb: float
    total_pss_mb: float
    processes: int


def memory(conn: psycopg.Connection, concurrency: int, log: Path | None = None) -> Memory:
    """RSS/PSS of the runner and its children after running tasks on every slot."""
    cluster.reset(conn)
    tasks = concurrency * 20
    sqlwork.preload(conn, tasks, "benchmarks.tasks.sleep_10ms")
    process = start_worker(concurrency, log=log)
    try:
        wait_until_finished(conn, tasks, 300, process, log)
        time.sleep(1.0)
        pids = _tree(process.pid)
        rss = {pid: _memory_kb(pid, "VmRSS", "status") for pid in pids}
        pss = sum(_memory_kb(pid, "Pss", "smaps_rollup") for pid in pids)
    finally:
        stop_worker(process)
    return Memory(rss[process.pid] / 1024, sum(rss.values()) / 1024, pss / 1024, len(pids))


def drain_some(conn: psycopg.Connection, n: int, concurrency: int | None, worker_id: str,
               log: Path | None = None, timeout: float = 900) -> float:
    """Run ``n`` of the waiting tasks through one runner (``--burst --max-tasks n``) while the
    rest of the backlog stays READY; tasks/s from its first claim to its last completion."""
    _wait_for_exit(start_worker(concurrency, "--burst", "--max-tasks", str(n), "--worker-id",
                                worker_id, log=log), timeout, f"finish {n} tasks", log)
    done, span = conn.execute(
        "select count(*) filter (where status = 'SUCCESSFUL'),"
        " extract(epoch from max(finished_at) - min(started_at))"
        " from reproq.task_runs where worker_ids = array[%s]", (worker_id,)).fetchone()
    if done < n:
        raise RuntimeError(f"runner {worker_id} finished {done} of {n} tasks")
    return done / float(span)


def steady(conn: psycopg.Connection, n: int, concurrency: int, task_path: str,
           log: Path | None = None, timeout: float = 900) -> DrainResult:
    """Steady state of a warm runner: its children are up (a warm-up batch ran) when ``n``
    tasks arrive in one enqueue_many; busy span over those ``n`` only, verified exactly once."""
    cluster.reset(conn)
    process = start_worker(concurrency, log=log)
    try:
        warm = 2 * concurrency
        sqlwork.preload(conn, warm, task_path)
        wait_until_finished(conn, warm, 300, process, log)
        last_warm = conn.execute("select max(result_id) from reproq.task_runs").fetchone()[0]
        # Before the enqueue: the runner starts on its commit, and this process can get the
        # CPU back long after that (≈ 0.9 s of 1.3 at concurrency 50, measured).
        cpu_before = cpu_time(conn, process.pid)
        sqlwork.preload(conn, n, task_path)
        started = time.perf_counter()
        wait_until_finished(conn, warm + n, timeout, process, log)
        wall = time.perf_counter() - started
        cpu = cpu_time(conn, process.pid) - cpu_before
    finally:
        stop_worker(process)
    done, once, span = conn.execute(
        "select count(*) filter (where status = 'SUCCESSFUL'),"
        " count(*) filter (where attempts = 1 and cardinality(worker_ids) = 1),"
        " extract(epoch from max(finished_at) - min(started_at))"
        " from reproq.task_runs where result_id > %s", (last_warm,)).fetchone()
    if (done, once) != (n, n):
        raise RuntimeError(f"{n} tasks: {done} SUCCESSFUL, {once} after exactly one attempt")
    return DrainResult(n / float(span), n / wall, float(span), cpu)
