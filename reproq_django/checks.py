"""System checks with stable ids.

=============  ==============================================================================
id             problem
=============  ==============================================================================
reproq.E001    a queue database is not PostgreSQL
reproq.E002    the reproq schema is missing from a queue database   (``--database`` checks)
reproq.E003    the reproq schema is older than the code
reproq.E004    a ReproqBackend is configured but ``reproq_django`` is not in INSTALLED_APPS
reproq.E005    invalid backend ``OPTIONS``
reproq.E006    ``REPROQ_QUEUE_DATABASES``/``REPROQ_DEFAULT_DB_ALIAS`` name an unknown alias
reproq.E007    a ``REPROQ_*`` setting of the wrong type (a string for a list, "false" for False)
reproq.E008    an applied migration file was edited (no applier can fix it, so never W003)
reproq.W001    the reproq schema could not be checked (a database error)
reproq.W003    the reproq schema is missing or older than the code, and ``migrate`` has reproq
               migrations to apply (a warning, so ``migrate`` itself is not blocked)
reproq.W004    a queue database other than ``default`` and no ``ReproqRouter`` in
               ``DATABASE_ROUTERS``: ``migrate`` would not create the queue there
reproq.W005    the reproq schema is newer than the code (a rollback, or code not yet deployed)
=============  ==============================================================================

Schema checks query the database, so like Django's own database checks they run with
``manage.py check --database <alias>`` (and before ``migrate``).
"""

from __future__ import annotations

from django.apps import apps
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import DatabaseError

from reproq_django import conf
from reproq_runner import migrate, queries
from reproq_runner.errors import MigrationChecksumMismatch, SchemaError


ROUTER = "reproq_django.db_router.ReproqRouter"


def _routes_reproq() -> bool:
    """Django's own router list (DATABASE_ROUTERS, imported and instantiated) holds one."""
    from django.db import router

    from reproq_django.db_router import ReproqRouter

    return any(isinstance(each, ReproqRouter) for each in router.routers)


def fix_command(alias: str) -> str:
    return f"python manage.py reproq migrate-worker --database {alias}"


def backend_checks(backend) -> list[checks.CheckMessage]:
    """Checks of one ReproqBackend (``backend.check()``): no database access."""
    from reproq_django.backend import option_problems

    errors = []
    if not apps.is_installed("reproq_django"):
        errors.append(checks.Error(
            f"TASKS[{backend.alias!r}] uses ReproqBackend but 'reproq_django' is not in "
            "INSTALLED_APPS.",
            hint="Add 'reproq_django' to INSTALLED_APPS (it ships the migrations that create "
                 "the queue, and the admin).",
            id="reproq.E004"))
    for problem in option_problems({**backend.default_options, **backend.options}):
        errors.append(checks.Error(f"TASKS[{backend.alias!r}]['OPTIONS']: {problem}.",
                                   id="reproq.E005"))
    return errors


@checks.register("reproq")
def check_queue_databases(app_configs=None, **kwargs):
    problems = conf.setting_problems()
    if problems:  # the checks below read these settings
        return [checks.Error(f"{problem}.", id="reproq.E007") for problem in problems]
    errors = []
    for alias in conf.all_queue_aliases():
        if alias not in connections.settings:
            errors.append(checks.Error(
                f"reproq queue database {alias!r} is not in DATABASES.",
                hint="Fix REPROQ_DEFAULT_DB_ALIAS / REPROQ_QUEUE_DATABASES.",
                id="reproq.E006"))
        elif connections[alias].vendor != "postgresql":
            errors.append(checks.Error(
                f"reproq queue database {alias!r} uses {connections[alias].vendor}; reproq's "
                "queue is PostgreSQL.",
                hint="Point it at a PostgreSQL database (ENGINE django.db.backends.postgresql).",
                id="reproq.E001"))
    elsewhere = [alias for alias in conf.all_queue_aliases() if alias != DEFAULT_DB_ALIAS]
    if elsewhere and not _routes_reproq():
        errors.append(checks.Warning(
            f"reproq queue database(s) {', '.join(map(repr, elsewhere))} are not 'default', "
            "but DATABASE_ROUTERS lacks ReproqRouter: `migrate` would create the queue in "
            "'default' and not in them.",
            hint=f"Add {ROUTER!r} to DATABASE_ROUTERS (or a router of your own that sends "
                 "reproq_django's migrations there).",
            id="reproq.W004"))
    return errors


@checks.register("reproq", checks.Tags.database)
def check_schema(app_configs=None, databases=None, **kwargs):
    errors = []
    for alias in conf.all_queue_aliases():
        if databases is not None and alias not in databases:
            continue
        if alias not in connections.settings or connections[alias].vendor != "postgresql":
            continue  # reported by check_queue_databases
        errors.extend(_schema_errors(alias))
    return errors


def _schema_errors(alias: str) -> list[checks.CheckMessage]:
    """E002/E003 for a schema problem; W003 instead while Django's ``migrate`` still has
    reproq migrations to apply on ``alias`` (``migrate`` runs these checks first and must not
    be blocked by the very problem it is about to fix)."""
    errors = _schema_problems(alias)
    fixable = errors and errors[0].id in ("reproq.E002", "reproq.E003")
    if fixable and _django_migrations_pending(alias):
        return [checks.Warning(f"{errors[0].msg} `migrate` will create or update it.",
                               hint=errors[0].hint, id="reproq.W003")]
    return errors


def _django_migrations_pending(alias: str) -> bool:
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    ours = {key for key in loader.disk_migrations if key[0] == "reproq_django"}
    return bool(ours - set(loader.applied_migrations))


def _schema_problems(alias: str) -> list[checks.CheckMessage]:
    try:
        with connections[alias].cursor() as cursor:
            if not queries.applied_migrations(cursor):
                return [checks.Error(
                    f"the reproq schema does not exist in database {alias!r}.",
                    hint=f"Run: {fix_command(alias)}  (or: python manage.py migrate "
                         f"--database {alias})",
                    id="reproq.E002")]
            migrate.check_schema(cursor)
            newer = migrate.newer_versions(cursor)
    except MigrationChecksumMismatch as exc:  # no applier fixes this one
        return [checks.Error(f"database {alias!r}: {exc}",
                             hint="Restore the file as it was released; write a new numbered "
                                  "migration for any change.",
                             id="reproq.E008")]
    except SchemaError as exc:
        return [checks.Error(f"database {alias!r}: {exc}", hint=f"Run: {fix_command(alias)}",
                             id="reproq.E003")]
    except DatabaseError as exc:
        return [checks.Warning(f"could not check the reproq schema of {alias!r}: {exc}",
                               id="reproq.W001")]
    if newer:
        return [checks.Warning(
            f"database {alias!r}: {migrate.newer_schema_text(newer)}.",
            hint="Deploy the reproq version that ships them. Migrations only go forward: this "
                 "code keeps working as far as they kept the functions it calls (reproq's "
                 "migrations so far keep every public signature, for rolling upgrades).",
            id="reproq.W005")]
    return []
