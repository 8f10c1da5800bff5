"""reproq's Django settings, read in one place.

``REPROQ_QUEUE_DATABASES``   {queue name or glob: database alias}; first exact match, then the
                             first matching glob in the order given.
``REPROQ_DEFAULT_DB_ALIAS``  alias of queues no entry matches (default: ``"default"``).
``REPROQ_RESULT_ID_WITH_ALIAS``  result ids read ``alias:id``; defaults to on when more than
                             one queue database is configured.
``REPROQ_ALLOWED_TASK_MODULES``  prefixes of the task paths a runner may import; unset means
                             the ``tasks`` module of every installed app.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS

# Values derived from REPROQ_* settings, read on every enqueue: computed once, forgotten when
# a REPROQ_* setting changes (``override_settings`` and pytest-django's ``settings`` send
# ``setting_changed``). ``generation`` counts the changes, so callers may cache values derived
# from these functions and recompute when it moves.
_cache: dict[object, object] = {}
generation = 0


def _forget(*, setting: str, **kwargs) -> None:
    global generation
    if setting.startswith("REPROQ_"):
        _cache.clear()
        generation += 1


setting_changed.connect(_forget, dispatch_uid="reproq_django.conf._forget")


# Each REPROQ_* setting's type rule (unset, None, is always fine), as backend.option_problems
# keeps the backend OPTIONS' rules.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "REPROQ_ALLOWED_TASK_MODULES": (
        lambda v: isinstance(v, list | tuple) and all(isinstance(m, str) and m for m in v),
        "a list of module paths"),
    "REPROQ_QUEUE_DATABASES": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(a, str)
                                              for k, a in v.items()),
        "a dict of queue name (or glob) to database alias"),
    "REPROQ_DEFAULT_DB_ALIAS": (lambda v: isinstance(v, str), "a database alias"),
    "REPROQ_RESULT_ID_WITH_ALIAS": (lambda v: isinstance(v, bool), "True, False or None"),
}


def _problem_of(name: str) -> str | None:
    """What is wrong with the REPROQ_* setting ``name``'s type, or None."""
    value = getattr(settings, name, None)
    is_valid, rule = _RULES[name]
    if value is None or is_valid(value):
        return None
    return f"{name} must be {rule}, got {value!r}"


def setting_problems() -> list[str]:
    """REPROQ_* settings of the wrong type (``manage.py check`` reports them as reproq.E007;
    using one raises ImproperlyConfigured): a string where a list belongs would otherwise be
    read as its characters, a non-empty string as True."""
    return [problem for name in _RULES if (problem := _problem_of(name))]


def _valid(name: str):
    """The setting ``name``, or ImproperlyConfigured when its type is wrong."""
    problem = _problem_of(name)
    if problem:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(problem)
    return getattr(settings, name, None)


def queue_databases() -> dict[str, str]:
    return dict(_valid("REPROQ_QUEUE_DATABASES") or {})


def default_db_alias() -> str:
    return _valid("REPROQ_DEFAULT_DB_ALIAS") or DEFAULT_DB_ALIAS


def database_for_queue(queue_name: str) -> str:
    """The database alias holding ``queue_name``'s tasks."""
    key = ("database_for_queue", queue_name)
    try:
        return _cache[key]
    except KeyError:
        pass
    alias = _database_for_queue(queue_name)
    if len(_cache) < 10_000:  # queue names are few; never grow without bound
        _cache[key] = alias
    return alias


def _database_for_queue(queue_name: str) -> str:
    mapping = queue_databases()
    if queue_name in mapping:
        return mapping[queue_name]
    for pattern, alias in mapping.items():
        if fnmatchcase(queue_name, pattern):
            return alias
    return default_db_alias()


def all_queue_aliases() -> list[str]:
    """Every database alias that holds a reproq queue, the default one first."""
    aliases = [default_db_alias()]
    for alias in queue_databases().values():
        if alias not in aliases:
            aliases.append(alias)
    return aliases


def postgresql_alias(alias: str, named_by: str = "--database") -> str:
    """``alias``, when ``DATABASES`` has it and it is PostgreSQL (the only database a queue
    lives in); ``ValueError`` naming the problem and where the alias came from otherwise."""
    from django.db import connections

    if alias not in connections.settings:
        raise ValueError(f"{named_by} {alias!r} is not in DATABASES (which has: "
                         f"{', '.join(sorted(connections.settings))})")
    if connections[alias].vendor != "postgresql":
        raise ValueError(f"{named_by} {alias!r} is not PostgreSQL (its ENGINE is "
                         f"{connections.settings[alias].get('ENGINE')!r}); reproq queues live "
                         "in PostgreSQL")
    return alias


def result_id_with_alias() -> bool:
    try:
        return _cache["result_id_with_alias"]
    except KeyError:
        pass
    _cache["result_id_with_alias"] = value = _result_id_with_alias()
    return value


def _result_id_with_alias() -> bool:
    configured = _valid("REPROQ_RESULT_ID_WITH_ALIAS")
    if configured is None:
        return len(all_queue_aliases()) > 1
    return configured


def allowed_task_modules() -> tuple[str, ...]:
    """Configured task-path prefixes, or every installed app's ``tasks`` module."""
    configured = _valid("REPROQ_ALLOWED_TASK_MODULES")  # a string would allow its letters
    if configured is not None:
        return tuple(configured)
    return installed_task_modules()


def allowed_task_modules_configured() -> bool:
    """Whether REPROQ_ALLOWED_TASK_MODULES is set (else the installed apps' default holds)."""
    return _valid("REPROQ_ALLOWED_TASK_MODULES") is not None


def installed_task_modules() -> tuple[str, ...]:
    from django.apps import apps

    found = []
    for app_config in apps.get_app_configs():
        module_name = f"{app_config.name}.tasks"
        try:
            present = find_spec(module_name) is not None
        except ImportError:  # the app is a plain module, not a package
            present = False
        if present:
            found.append(module_name)
    return tuple(found)


def is_allowed_task_path(task_path: str, allowed_prefixes: tuple[str, ...]) -> bool:
    """``a.b.tasks`` allows ``a.b.tasks.x`` and ``a.b.tasks.sub.y``, never ``a.b.tasks_evil``."""
    return any(task_path == prefix or task_path.startswith(prefix + ".")
               for prefix in allowed_prefixes if prefix)
