"""``reproq-runner`` / ``python -m reproq_runner``: Django-free entry points.

Subcommands: ``migrate`` (apply the SQL migrations), ``dump-schema`` (print the schema that all
migrations produce, for sql/schema.sql).
"""

from __future__ import annotations

import argparse
import os
import sys

from reproq_runner import migrate
from reproq_runner.errors import ReproqError


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=os.environ.get("REPROQ_DSN"),
                        help="libpq connection string of the queue database (env REPROQ_DSN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reproq-runner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dsn(sub.add_parser("migrate", help="apply pending SQL migrations"))
    sub.add_parser("dump-schema", help="print the schema all migrations produce (embedded "
                                       "PostgreSQL, pg_dump)")
    return parser


def _migrate(args: argparse.Namespace) -> int:
    if not args.dsn:
        print("reproq-runner migrate: --dsn (or REPROQ_DSN) is required", file=sys.stderr)
        return 2
    applied = migrate.migrate_dsn(args.dsn)
    for migration in applied:
        print(f"applied {migration.path.name}")
    if not applied:
        print("reproq schema is up to date")
    return 0


def _dump_schema(args: argparse.Namespace) -> int:
    from reproq_runner.schema_dump import dump_schema

    sys.stdout.write(dump_schema())
    return 0


COMMANDS = {"migrate": _migrate, "dump-schema": _dump_schema}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ReproqError as exc:
        print(f"reproq-runner {args.command}: {exc}", file=sys.stderr)
        return 1
