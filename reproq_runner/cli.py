"""``reproq-runner`` / ``python -m reproq_runner``: Django-free entry points.

Subcommands: ``worker`` (run tasks), ``migrate`` (apply the SQL migrations), ``dump-schema``
(print the schema that all migrations produce, for sql/schema.sql).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import re
import sys
from importlib import import_module
from pathlib import Path

import psycopg

from reproq_runner import migrate
from reproq_runner.errors import FlagError, ReproqError, SchemaError
from reproq_runner.logs import password_of, redact_text

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SCHEMA = 3

DEFAULT_EXECUTOR = "reproq_runner.django_glue:DjangoExecutor"

log = logging.getLogger("reproq.runner")


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=os.environ.get("REPROQ_DSN"),
                        help="libpq connection string of the queue database (env REPROQ_DSN)")


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _queue_list(text: str) -> list[str]:
    queues = _comma_list(text)
    if not queues:
        raise argparse.ArgumentTypeError(f"must name at least one queue, got {text!r}")
    return queues


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# A lease is renewed by the once-a-second heartbeat when a quarter of it is spent: a shorter one
# could run out between two heartbeats while its task still runs, and the task run twice.
MIN_LEASE_SECONDS = 5


def _lease_seconds(text: str) -> int:
    value = int(text)
    if value < MIN_LEASE_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_LEASE_SECONDS} (heartbeats come every second and renew a "
            f"lease once a quarter of it is spent), got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN fails it too; inf waits without end
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    """Seconds between two polls: 0 would poll the database without pause."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def add_worker_arguments(parser: argparse.ArgumentParser, *, with_dsn: bool = True) -> None:
    """The runner's flags, shared by ``reproq-runner worker`` and ``manage.py reproq worker``."""
    if with_dsn:
        _add_dsn(parser)
    parser.add_argument("--database", default=None,
                        help="Django database alias of the queue database (default: the one "
                             "the --queues route to); used for the DSN when --dsn is not given")
    parser.add_argument("--queues", type=_queue_list, default=["default"],
                        help="comma-separated queues to take tasks from (default: default)")
    parser.add_argument("--concurrency", type=_positive_int, default=10,
                        help="child processes, each running one task at a time (default: 10)")
    parser.add_argument("--burst", action="store_true",
                        help="run what is due, then exit 0")
    parser.add_argument("--max-tasks", type=_positive_int, default=None,
                        help="exit 0 after claiming this many tasks and finishing them")
    parser.add_argument("--allowed-task-modules", type=_comma_list, default=None,
                        help="comma-separated task-path prefixes that may be imported "
                             "(default: REPROQ_ALLOWED_TASK_MODULES, else installed apps' tasks)")
    parser.add_argument("--logs-dir", type=Path, default=None,
                        help="capture each attempt's stdout/stderr under this folder and "
                             "store its file:// URI as the run's logs_uri")
    parser.add_argument("--lease-seconds", type=_lease_seconds, default=60,
                        help="lease length, at least 5; the heartbeat (every second) renews a "
                             "lease once a quarter of it, at most 10 s, is spent (default: 60)")
    parser.add_argument("--shutdown-timeout", type=_non_negative_float, default=30.0,
                        help="seconds running tasks get to finish after SIGTERM/SIGINT before "
                             "they are stopped and handed back (default: 30)")
    parser.add_argument("--no-listen", dest="listen", action="store_false",
                        help="no LISTEN connection: poll only (PgBouncer transaction pooling)")
    parser.add_argument("--poll-interval", type=_positive_float, default=1.0,
                        help="seconds between polls for due tasks (default: 1)")
    parser.add_argument("--metrics-addr", default=None, metavar="HOST:PORT",
                        help="serve Prometheus /metrics and /healthz here (env "
                             "METRICS_AUTH_TOKEN, METRICS_ALLOW_CIDRS protect it)")
    parser.add_argument("--worker-id", default=None,
                        help="this runner's id in reproq.workers and leases "
                             "(default: hostname:pid)")
    parser.add_argument("--executor", default=DEFAULT_EXECUTOR, metavar="MODULE:CALLABLE",
                        help="executor factory, called with allowed_task_modules and database "
                             f"(default: {DEFAULT_EXECUTOR})")
    parser.add_argument("--log-format", choices=("json", "text"), default="json",
                        help="runner log format on stderr (default: json)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reproq-runner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_worker_arguments(sub.add_parser("worker", help="run tasks from the queue"))
    _add_dsn(sub.add_parser("migrate", help="apply pending SQL migrations"))
    sub.add_parser("dump-schema", help="print the schema all migrations produce (embedded "
                                       "PostgreSQL, pg_dump)")
    return parser


def load_executor_factory(path: str, allowed_task_modules, database):
    """``module:callable`` bound to its keyword arguments (picklable, for child processes)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise FlagError(f"--executor must be module:callable, got {path!r}")
    try:
        factory = getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise FlagError(f"--executor {path!r}: {type(exc).__name__}: {exc}") from None
    if not callable(factory):
        raise FlagError(f"--executor {path!r} is a {type(factory).__name__}, not a callable")
    return functools.partial(factory, allowed_task_modules=allowed_task_modules,
                             database=database)


def dsn_problem(dsn: str) -> str | None:
    """Why libpq cannot read ``dsn`` as a connection string, or None. The quoted fragments of
    libpq's message are left out: they may hold the password."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = re.sub(r'"[^"]*"', '"…"', str(exc).strip())
        return (f"--dsn is not a connection string libpq can read (key=value pairs or a "
                f"postgresql:// URI): {reason}")
    return None


def runner_config(args: argparse.Namespace, dsn: str):
    from reproq_runner.runner import RunnerConfig

    return RunnerConfig(
        dsn=dsn,
        executor_factory=load_executor_factory(args.executor, args.allowed_task_modules,
                                               args.database),
        queues=tuple(args.queues),
        concurrency=args.concurrency,
        burst=args.burst,
        max_tasks=args.max_tasks,
        logs_dir=args.logs_dir,
        lease_seconds=args.lease_seconds,
        shutdown_timeout=args.shutdown_timeout,
        listen=args.listen,
        poll_interval=args.poll_interval,
        metrics_addr=args.metrics_addr,
        metrics_auth_token=os.environ.get("METRICS_AUTH_TOKEN") or None,
        metrics_allow_cidrs=os.environ.get("METRICS_ALLOW_CIDRS") or None,
        worker_id=args.worker_id,
        preload=_forkserver_preload(args.executor),
    )


def _forkserver_preload(executor: str) -> tuple[str, ...]:
    """Modules the forkserver imports before forking children: the executor's, and for the
    Django executor, Django itself (see reproq_runner.django_preload)."""
    module = executor.partition(":")[0]
    if module == "reproq_runner.django_glue":
        return (module, "reproq_runner.django_preload")
    return (module,)


def run_worker(args: argparse.Namespace, dsn: str) -> int:
    """Run the supervising runner until it stops; returns the process exit code."""
    from reproq_runner.logs import configure_logging
    from reproq_runner.runner import Runner
    from reproq_runner.supervisor import ChildSetupError

    configure_logging(args.log_level, args.log_format, secrets=(password_of(dsn),))
    try:
        problem = dsn_problem(dsn)
        if problem:
            raise FlagError(problem)
        return Runner(runner_config(args, dsn)).run()
    except SchemaError as exc:
        log.error("refusing to start: %s", exc)
        return EXIT_SCHEMA
    except ChildSetupError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    except FlagError as exc:  # a bad --dsn, --executor, --metrics-addr or METRICS_ALLOW_CIDRS
        log.error("refusing to start: %s", exc)
        return EXIT_USAGE


def _worker(args: argparse.Namespace) -> int:
    dsn = args.dsn
    if not dsn:
        if not os.environ.get("DJANGO_SETTINGS_MODULE"):
            print("reproq-runner worker: give --dsn (or REPROQ_DSN), or set "
                  "DJANGO_SETTINGS_MODULE to take the DSN from Django's DATABASES",
                  file=sys.stderr)
            return EXIT_USAGE
        from reproq_django.cli.worker import served_dsn

        try:
            dsn = served_dsn(args.database, args.queues)
        except ValueError as exc:
            print(f"reproq-runner worker: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return run_worker(args, dsn)


def _migrate(args: argparse.Namespace) -> int:
    if not args.dsn:
        print("reproq-runner migrate: --dsn (or REPROQ_DSN) is required", file=sys.stderr)
        return EXIT_USAGE
    problem = dsn_problem(args.dsn)
    if problem:
        print(f"reproq-runner migrate: {problem}", file=sys.stderr)
        return EXIT_USAGE
    with migrate.connect_for_migrating(args.dsn) as conn, conn.cursor() as cursor:
        lines = migrate.outcome_lines(cursor, migrate.apply_migrations(cursor))
    print("\n".join(lines))
    return 0


def _dump_schema(args: argparse.Namespace) -> int:
    from reproq_runner.schema_dump import dump_schema

    sys.stdout.write(dump_schema())
    return 0


COMMANDS = {"worker": _worker, "migrate": _migrate, "dump-schema": _dump_schema}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ReproqError as exc:
        print(f"reproq-runner {args.command}: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:  # `migrate` and `dump-schema` connect once
        print(f"reproq-runner {args.command}: cannot use the database: "
              f"{redact_text(str(exc).strip(), password_of(getattr(args, 'dsn', '') or ''))}",
              file=sys.stderr)
        return 1
