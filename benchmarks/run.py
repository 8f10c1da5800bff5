"""``python -m benchmarks.run`` (``make bench``): reproq's benchmark suite.

Starts a PostgreSQL of its own with durable settings, measures the raw-SQL baselines and then
each workload ``--repeat`` times on that cluster, and prints medians with min–max, the ratio to
the matching baseline and the issue's target. ``--quick`` runs tiny sizes (the test suite
uses it so the benchmark cannot rot); ``--only drain,latency`` picks workloads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import baseline, cluster, djangowork, runnerwork, sqlwork
from benchmarks.report import Registry, Target


@dataclass(frozen=True)
class Sizes:
    enqueue: int
    bulk: int
    raw_claim: dict[int, int]           # batch size -> jobs
    drain: int
    drain_sweep: tuple[int, ...]        # concurrencies tried to find the best one
    latency_rate: float
    latency_seconds: float
    backlogs: tuple[int, ...]
    backlog_measured: int               # tasks drained while each backlog waits
    finished_rows: int
    sleep_tasks: int
    sleep_concurrency: int
    cpu_tasks: int
    cpu_concurrency: int
    memory_concurrency: tuple[int, ...]


FULL = Sizes(enqueue=5_000, bulk=10_000, raw_claim={1: 5_000, 10: 20_000, 100: 50_000},
             drain=20_000, drain_sweep=(2, 4, 8, 10, 16, 32), latency_rate=200, latency_seconds=10,
             backlogs=(10_000, 100_000, 1_000_000), backlog_measured=10_000,
             finished_rows=100_000, sleep_tasks=5_000, sleep_concurrency=50, cpu_tasks=300,
             cpu_concurrency=2, memory_concurrency=(10, 50))
QUICK = Sizes(enqueue=200, bulk=300, raw_claim={1: 200, 10: 300, 100: 300}, drain=300,
              drain_sweep=(2,), latency_rate=50, latency_seconds=1,
              backlogs=(1_000, 2_000, 5_000), backlog_measured=200, finished_rows=2_000,
              sleep_tasks=100, sleep_concurrency=5, cpu_tasks=20, cpu_concurrency=2,
              memory_concurrency=(2, 4))


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


@dataclass
class Context:
    conn: object
    reg: Registry
    sizes: Sizes
    repeat: int
    logs: Path
    explain: bool = False
    server_log: Path | None = None

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


# ---------------------------------------------------------------------------------------------
# Workloads. Each registers its figures first, so a failure still leaves its rows in the table.


def w_baseline(ctx: Context) -> None:
    """Raw SQL on the same cluster: the yardstick every ratio refers to."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    reg.figure("raw.insert_1", "psycopg: INSERT one row per transaction", "rows/s")
    reg.figure("raw.insert_multi", f"psycopg: one multi-row INSERT of {s.bulk:,} rows", "rows/s")
    reg.figure("pgbench.insert_1", "pgbench, 1 client: INSERT one row per transaction",
               "rows/s")
    for batch in s.raw_claim:
        reg.figure(f"raw.claim_complete_{batch}",
                   f"psycopg, 1 connection: SKIP LOCKED claim {batch} (one transaction), "
                   "complete them (another)", "jobs/s")
    for batch in s.raw_claim:
        reg.figure(f"pgbench.claim_complete_{batch}",
                   f"pgbench, 2 clients: SKIP LOCKED claim+complete of {batch} in one "
                   "statement", "jobs/s")
    for _ in range(ctx.repeat):
        cluster.reset(conn)
        reg.add("raw.insert_1", baseline.insert_one_per_transaction(conn, s.enqueue))
        cluster.reset(conn)
        reg.add("raw.insert_multi", baseline.insert_multi_row(conn, s.bulk))
        cluster.reset(conn)
        reg.add("pgbench.insert_1", baseline.pgbench(baseline.PGBENCH_INSERT, s.enqueue))
        for batch, n in s.raw_claim.items():
            cluster.reset(conn)
            baseline.preload(conn, n)
            reg.add(f"raw.claim_complete_{batch}", baseline.claim_complete(conn, n, batch))
            cluster.reset(conn)
            baseline.preload(conn, n + n // 5)
            reg.add(f"pgbench.claim_complete_{batch}",
                    baseline.pgbench_claim_complete(n, batch))


def w_enqueue(ctx: Context) -> None:
    """Workload 1: enqueue one task per call, each its own transaction."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    django_missing = djangowork.unavailable()
    if django_missing:
        reg.unavailable("enqueue.django", "Django task.enqueue(), autocommit", "tasks/s",
                        django_missing)
    else:
        reg.figure("enqueue.django", "Django noop.enqueue(i), autocommit: one transaction "
                   "per call", "tasks/s", baseline="raw.insert_1", target=Target(2200))
        reg.figure("enqueue.django_vs_raw", "enqueue.django ÷ raw.insert_1 measured just "
                   "before it (paired, per repetition)",
                   "ratio", target=Target(0.85))
    reg.figure("enqueue.psql", "select reproq.enqueue(path, spec) over psycopg, one per "
               "transaction", "tasks/s", baseline="raw.insert_1")
    reg.figure("enqueue.queries", "reproq_runner.queries.enqueue (all named parameters)",
               "tasks/s", baseline="raw.insert_1")
    reg.figure("pgbench.reproq_enqueue", "pgbench, 1 client: select reproq.enqueue(...)",
               "tasks/s", baseline="pgbench.insert_1")
    if not django_missing:
        djangowork.setup()

    def raw() -> float:
        cluster.reset(conn)
        return baseline.insert_one_per_transaction(conn, s.enqueue)

    for _ in range(ctx.repeat):
        if not django_missing:
            base = raw()
            cluster.reset(conn)
            reg.paired("enqueue.django", djangowork.enqueue_one_per_call(s.enqueue), base)
            reg.add("enqueue.django_vs_raw", reg.figures["enqueue.django"].paired_ratios[-1])
        base = raw()
        cluster.reset(conn)
        reg.paired("enqueue.psql", sqlwork.enqueue_psql_style(conn, s.enqueue), base)
        base = raw()
        cluster.reset(conn)
        reg.paired("enqueue.queries", sqlwork.enqueue_queries(conn, s.enqueue), base)
        cluster.reset(conn)
        base = baseline.pgbench(baseline.PGBENCH_INSERT, s.enqueue)
        cluster.reset(conn)
        reg.paired("pgbench.reproq_enqueue",
                   baseline.pgbench(baseline.PGBENCH_REPROQ_ENQUEUE, s.enqueue), base)


def w_bulk(ctx: Context) -> None:
    """Workload 2: bulk enqueue in one call."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    django_missing = djangowork.unavailable()
    if django_missing:
        reg.unavailable("bulk.django", "backend.bulk_enqueue", "tasks/s", django_missing)
    else:
        reg.figure("bulk.django", f"backend.bulk_enqueue of {s.bulk:,} noop tasks, one call",
                   "tasks/s", baseline="raw.insert_multi", target=Target(60_000))
        djangowork.setup()
    reg.figure("bulk.sql", f"queries.enqueue_many of {s.bulk:,} (no Django)", "tasks/s",
               baseline="raw.insert_multi")
    def raw() -> float:
        cluster.reset(conn)
        return baseline.insert_multi_row(conn, s.bulk)

    for _ in range(ctx.repeat):
        if not django_missing:
            base = raw()
            cluster.reset(conn)
            reg.paired("bulk.django", djangowork.bulk_enqueue(s.bulk), base)
        base = raw()
        cluster.reset(conn)
        reg.paired("bulk.sql", sqlwork.enqueue_many(conn, s.bulk), base)


def w_sqlclaim(ctx: Context) -> None:
    """reproq.claim + reproq.complete_many without a runner: the SQL cost of draining."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    for batch in s.raw_claim:
        reg.figure(f"sql.claim_complete_{batch}",
                   f"queries.claim({batch}) then queries.complete_many, 1 connection",
                   "tasks/s", baseline=f"raw.claim_complete_{batch}")
    for _ in range(ctx.repeat):
        for batch, n in s.raw_claim.items():
            cluster.reset(conn)
            baseline.preload(conn, n)
            base = baseline.claim_complete(conn, n, batch)
            cluster.reset(conn)
            sqlwork.preload(conn, n)
            cluster.vacuum(conn)
            reg.paired(f"sql.claim_complete_{batch}", sqlwork.claim_complete(conn, n, batch),
                       base)


# Where a warm runner's CPU goes, per task (runnerwork.cpu_time).
CPU_GROUPS = (("children", "its child processes"), ("postgres", "PostgreSQL's processes"),
              ("runner", "the runner process"))


def register_cpu(reg: Registry, prefix: str, text: str) -> None:
    for group, whose in CPU_GROUPS:
        reg.figure(f"{prefix}.cpu_{group}_us", f"{text}: CPU time of {whose} per task",
                   "µs/task", higher_is_better=False)


def add_cpu(reg: Registry, prefix: str, result: runnerwork.DrainResult, n: int) -> None:
    for group, _ in CPU_GROUPS:
        reg.add(f"{prefix}.cpu_{group}_us", getattr(result.cpu, group) / n * 1e6)


def w_drain(ctx: Context) -> None:
    """Workload 3: drain pre-enqueued no-op tasks with one runner (--burst)."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    keys = {"drain.default": f"worker --burst, default concurrency, {s.drain:,} noop tasks",
            "drain.best": f"worker --burst, best concurrency of {s.drain_sweep}, "
                          f"{s.drain:,} noop tasks"}
    missing = runnerwork.unavailable()
    for key, text in keys.items():
        if missing:
            reg.unavailable(key, text, "tasks/s", missing)
        else:
            reg.figure(key, text + " (first claim → last completion)", "tasks/s",
                       baseline="pgbench.claim_complete_100", target=Target(12_000))
            reg.figure(key + "_wall", text + " (process start → exit)", "tasks/s")
    warm_text = f"warm runner (children up), default concurrency, {s.drain:,} noop tasks"
    if missing:
        reg.unavailable("drain.warm", warm_text, "tasks/s", missing)
        return
    reg.figure("drain.warm", warm_text + " (first claim → last completion)", "tasks/s")
    register_cpu(reg, "drain.warm", f"warm drain of {s.drain:,} noop tasks")
    path = "benchmarks.tasks.noop"

    def raw() -> float:  # the strongest baseline, measured right before each drain
        cluster.reset(conn)
        baseline.preload(conn, s.drain + s.drain // 5)
        return baseline.pgbench_claim_complete(s.drain, 100)

    for _ in range(ctx.repeat):
        base = raw()
        result = runnerwork.drain(conn, s.drain, None, path, ctx.log("drain-default"))
        reg.paired("drain.default", result.rate, base)
        reg.add("drain.default_wall", result.wall_rate)
    best = _best_drain_concurrency(ctx, path)
    for _ in range(ctx.repeat):
        base = raw()
        result = runnerwork.drain(conn, s.drain, best, path, ctx.log("drain-best"))
        reg.paired("drain.best", result.rate, base)
        reg.add("drain.best_wall", result.wall_rate)
    for _ in range(ctx.repeat):
        result = runnerwork.steady(conn, s.drain, runnerwork.DEFAULT_CONCURRENCY, path,
                                   ctx.log("drain-warm"))
        reg.add("drain.warm", result.rate)
        add_cpu(reg, "drain.warm", result, s.drain)


def _best_drain_concurrency(ctx: Context, path: str) -> int:
    """The concurrency with the highest median rate over ``ctx.repeat`` interleaved rounds of
    the sweep (a quarter of the tasks is enough to rank them): one round's noise, or a noisy
    minute, no longer decides alone."""
    s = ctx.sizes
    tasks = max(s.drain // 4, 100)
    rates: dict[int, list[float]] = {c: [] for c in s.drain_sweep}
    for _ in range(ctx.repeat):
        for concurrency in s.drain_sweep:
            result = runnerwork.drain(ctx.conn, tasks, concurrency, path, ctx.log("drain-sweep"))
            rates[concurrency].append(result.rate)
    medians = {c: statistics.median(r) for c, r in rates.items()}
    best = max(medians, key=medians.get)
    ctx.reg.figures["drain.best"].note = (
        f"best concurrency {best}; sweep (median of {ctx.repeat} interleaved round(s), "
        f"{tasks:,} tasks each): "
        + ", ".join(f"c={c}: {medians[c]:,.0f}/s" for c in sorted(medians)))
    return best


def w_latency(ctx: Context) -> None:
    """Workload 4: pickup latency of an idle runner at a steady enqueue rate."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    text = (f"enqueue commit → task start at {s.latency_rate:g}/s for "
            f"{s.latency_seconds:g} s, idle runner (default concurrency)")
    missing = runnerwork.unavailable()
    for q in (50, 95, 99):
        key = f"latency.p{q}"
        if missing:
            reg.unavailable(key, f"p{q} {text}", "ms", missing)
        else:
            reg.figure(key, f"p{q} {text}", "ms", higher_is_better=False,
                       target=Target(5, at_least=False) if q == 99 else None)
    if missing:
        return
    for _ in range(ctx.repeat):
        result = runnerwork.pickup_latency(conn, s.latency_rate, s.latency_seconds, None,
                                           ctx.log("latency"))
        for q, value in result.items():
            reg.add(f"latency.p{q}", value)


def w_backlog(ctx: Context) -> None:
    """Workload 5: claim cost as the READY backlog grows, and with finished rows present."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    m = s.backlog_measured
    first = label(s.backlogs[0])
    scenarios = [(label(b), b, 0) for b in s.backlogs]
    scenarios.append((f"{label(s.backlogs[0])}+{label(s.finished_rows)}done", s.backlogs[0],
                      s.finished_rows))
    runner_missing = runnerwork.unavailable()
    runs = ctx.repeat * (1 if runner_missing else 2)  # drains per scenario (SQL, runner)
    for name, backlog, done in scenarios:
        extra = f" and {done:,} SUCCESSFUL rows" if done else ""
        target = (Target(0.8, relative_to=f"backlog.{first}.rate")
                  if backlog == s.backlogs[-1] and not done else None)
        reg.figure(f"backlog.{name}.rate",
                   f"claim(100)+complete_many drain of {m:,} with ≥{backlog:,} READY "
                   f"waiting{extra}", "tasks/s", baseline=f"backlog.{first}.rate",
                   target=target)
        reg.figure(f"backlog.{name}.claim_ms",
                   f"p50 reproq.claim(100) round trip during that drain{extra}", "ms",
                   higher_is_better=False, baseline=f"backlog.{first}.claim_ms")
        reg.figure(f"backlog.{name}.claim1_ms",
                   f"p50 reproq.claim(1) round trip (rolled back){extra}", "ms",
                   higher_is_better=False)
        if runner_missing:
            reg.unavailable(f"backlog.{name}.runner_rate", f"runner drain{extra}", "tasks/s",
                            runner_missing)
        else:
            reg.figure(f"backlog.{name}.runner_rate",
                       f"one runner (--burst --max-tasks {m:,}, default concurrency) with "
                       f"≥{backlog:,} READY waiting{extra}", "tasks/s",
                       baseline=f"backlog.{first}.runner_rate",
                       target=Target(0.8, relative_to=f"backlog.{first}.runner_rate")
                       if backlog == s.backlogs[-1] and not done else None)
    # Build the backlogs incrementally: one load serves every repetition.
    cluster.reset(conn)
    loaded = 0
    for name, backlog, done in scenarios:
        if done:
            cluster.reset(conn)
            sqlwork.preload(conn, done)
            sqlwork.finish_all(conn)
            loaded = 0
        wanted = backlog + m * runs
        sqlwork.preload(conn, wanted - loaded)
        cluster.vacuum(conn)
        if not runner_missing:
            for repetition in range(ctx.repeat):
                reg.add(f"backlog.{name}.runner_rate", runnerwork.drain_some(
                    conn, m, None, f"bench-backlog-{name}-{repetition}", ctx.log("backlog")))
        if ctx.explain and backlog == max(s.backlogs) and not done:
            print(f"\n-- auto_explain of one reproq.claim(100) with {backlog:,} READY rows --")
            print(sqlwork.explain_claim(conn, ctx.server_log), flush=True)
        for _ in range(ctx.repeat):
            latencies: list[float] = []
            rate = sqlwork.claim_complete(conn, m, 100, latencies)
            reg.add(f"backlog.{name}.rate", rate)
            reg.add(f"backlog.{name}.claim_ms", sorted(latencies)[len(latencies) // 2])
            reg.add(f"backlog.{name}.claim1_ms", sqlwork.claim_latency_ms(conn, 50, 1))
        loaded = backlog


def w_realistic(ctx: Context) -> None:
    """Workload 6: realistic task bodies; the runner's overhead per task versus the ideal."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    cases = [("sleep", "benchmarks.tasks.sleep_10ms", 0.010, s.sleep_tasks, s.sleep_concurrency),
             ("cpu", "benchmarks.tasks.cpu_20ms", 0.020, s.cpu_tasks, s.cpu_concurrency)]
    missing = runnerwork.unavailable()
    for name, path, seconds, n, c in cases:
        text = f"{n:,} × {path.rsplit('.', 1)[1]} at concurrency {c}"
        if missing:
            reg.unavailable(f"realistic.{name}.overhead_ms", text, "ms/task", missing)
            continue
        reg.figure(f"realistic.{name}.overhead_ms",
                   f"{text}, warm runner: (busy span × concurrency − n × task time) ÷ n",
                   "ms/task",
                   higher_is_better=False, target=Target(1, at_least=False))
        reg.figure(f"realistic.{name}.rate", f"{text}: throughput (ideal "
                   f"{c / seconds:,.0f}/s)", "tasks/s")
        register_cpu(reg, f"realistic.{name}", text)
    if missing:
        return
    for _ in range(ctx.repeat):
        for name, path, seconds, n, c in cases:
            result = runnerwork.steady(conn, n, c, path, ctx.log(f"realistic-{name}"))
            reg.add(f"realistic.{name}.overhead_ms",
                    runnerwork.overhead_ms(result.span, n, c, seconds))
            reg.add(f"realistic.{name}.rate", result.rate)
            add_cpu(reg, f"realistic.{name}", result, n)


def w_memory(ctx: Context) -> None:
    """Workload 7: memory of the runner and its children."""
    reg, s, conn = ctx.reg, ctx.sizes, ctx.conn
    missing = runnerwork.unavailable()
    for c in s.memory_concurrency:
        if missing:
            reg.unavailable(f"memory.c{c}.total_rss_mb", f"runner + children RSS at "
                            f"concurrency {c}", "MB", missing)
            continue
        reg.figure(f"memory.c{c}.runner_rss_mb", f"runner process RSS at concurrency {c}",
                   "MB", higher_is_better=False)
        reg.figure(f"memory.c{c}.total_rss_mb", f"runner + children RSS (sum) at "
                   f"concurrency {c}", "MB", higher_is_better=False)
        reg.figure(f"memory.c{c}.total_pss_mb", f"runner + children PSS (shared pages "
                   f"split) at concurrency {c}", "MB", higher_is_better=False)
    if missing:
        return
    for _ in range(min(ctx.repeat, 2)):
        for c in s.memory_concurrency:
            result = runnerwork.memory(conn, c, ctx.log(f"memory-c{c}"))
            reg.add(f"memory.c{c}.runner_rss_mb", result.runner_rss_mb)
            reg.add(f"memory.c{c}.total_rss_mb", result.total_rss_mb)
            reg.add(f"memory.c{c}.total_pss_mb", result.total_pss_mb)
            reg.figures[f"memory.c{c}.total_rss_mb"].note = f"{result.processes} processes"


WORKLOADS: dict[str, Callable[[Context], None]] = {
    "baseline": w_baseline,
    "enqueue": w_enqueue,
    "bulk": w_bulk,
    "sqlclaim": w_sqlclaim,
    "drain": w_drain,
    "latency": w_latency,
    "backlog": w_backlog,
    "realistic": w_realistic,
    "memory": w_memory,
}


def print_statements(conn, name: str, limit: int = 12) -> None:
    rows = conn.execute(
        "select calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3),"
        " rows, shared_blks_hit + shared_blks_read, wal_bytes,"
        " regexp_replace(left(query, 110), '\\s+', ' ', 'g')"
        " from pg_stat_statements where dbid = (select oid from pg_database"
        " where datname = current_database())"
        " order by total_exec_time desc limit %s", (limit,)).fetchall()
    print(f"\n-- pg_stat_statements after {name} (last repetition), by total time --")
    print(f"{'calls':>8} {'total ms':>10} {'mean ms':>9} {'rows':>8} {'blocks':>9} "
          f"{'WAL bytes':>11}  query")
    for calls, total, mean, nrows, blocks, wal, query in rows:
        print(f"{calls:>8} {total:>10} {mean:>9} {nrows:>8} {blocks:>9} {wal:>11}  {query}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a few hundred tasks): checks the benchmark runs")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions per workload (default 3, 1 with --quick)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated workloads: {', '.join(WORKLOADS)} "
                             "(the baselines always run)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--cluster-dir", type=Path,
                        help="keep the cluster here (default: a temporary folder, removed)")
    parser.add_argument("--snapshot", action="store_true",
                        help="run from a copy of the source tree taken at start, so edits made "
                             "to the working tree during the run (SQL, runner) cannot mix in")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the runners' logs (always kept when a workload fails)")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of every statement of one claim "
                             "at the largest backlog (auto_explain)")
    parser.add_argument("--statements", action="store_true",
                        help="print pg_stat_statements' top statements after each workload")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    args.workloads = ["baseline"] + [w for w in chosen if w != "baseline"]
    return args


SNAPSHOT_ENV = "REPROQ_BENCH_SNAPSHOT"
_SNAPSHOT_SKIP = shutil.ignore_patterns(".git", ".venv*", ".bench", ".reproq", "__pycache__",
                                        ".pytest_cache", "*.egg-info", "node_modules")


def run_from_snapshot(argv: list[str], args: argparse.Namespace) -> int:
    """Copy the source tree, then run this benchmark from the copy (same interpreter)."""
    source = Path(__file__).resolve().parent.parent
    copy = Path(tempfile.mkdtemp(prefix="reproq-bench-src-")) / "src"
    shutil.copytree(source, copy, ignore=_SNAPSHOT_SKIP)
    forwarded = [a for a in argv if a != "--snapshot"]
    for option, value in (("--json", args.json), ("--cluster-dir", args.cluster_dir)):
        if value is not None:  # relative paths stay relative to where we were started
            index = forwarded.index(option) if option in forwarded else None
            if index is not None:
                forwarded[index + 1] = str(value.resolve())
    env = dict(os.environ, **{SNAPSHOT_ENV: str(copy)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), env.get("PYTHONPATH")]))
    print(f"running from a snapshot of {source} in {copy}", flush=True)
    try:
        return subprocess.run([sys.executable, "-m", "benchmarks.run", *forwarded], cwd=copy,
                              env=env).returncode
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.snapshot and not os.environ.get(SNAPSHOT_ENV):
        return run_from_snapshot(argv, args)
    # This process and the runners it starts use the benchmark's settings, whatever the
    # caller's environment says (the test suite exports its own).
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    sizes = QUICK if args.quick else FULL
    root = args.cluster_dir.resolve() if args.cluster_dir else None
    pg = cluster.start(root)
    logs = Path(tempfile.mkdtemp(prefix="reproq-bench-logs-"))
    reg = Registry()
    failures = 0
    started = time.perf_counter()
    print(f"reproq benchmark: {'quick' if args.quick else 'full'} sizes, repeat "
          f"{args.repeat}, cluster {pg.root} (fsync=on, synchronous_commit=on), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        with cluster.connect() as conn:
            ctx = Context(conn, reg, sizes, args.repeat, logs, args.explain, pg.log_file)
            for name in args.workloads:
                began = time.perf_counter()
                print(f"running {name} …", flush=True)
                try:
                    WORKLOADS[name](ctx)
                except Exception as exc:  # report it, keep measuring the rest
                    failures += 1
                    traceback.print_exc()
                    reg.unavailable(f"{name}.error", f"workload {name} failed", "-",
                                    " ".join(f"failed: {type(exc).__name__}: {exc}".split())[:200])
                print(f"  {name} took {time.perf_counter() - began:.1f} s", flush=True)
                if args.statements:
                    print_statements(conn, name)
    finally:
        if root is None:
            pg.destroy()
        else:
            pg.stop()
    print(f"\nreproq benchmark results ({time.perf_counter() - started:.0f} s; load average "
          f"now {os.getloadavg()[0]:.2f}). Medians of {args.repeat} run(s); ratios are to the "
          "raw-SQL baseline measured in this run.\n")
    print(reg.table())
    if failures or args.keep_logs:
        print(f"\nrunner logs: {logs}")
    if args.json:
        args.json.write_text(reg.to_json())
    if failures == 0 and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
