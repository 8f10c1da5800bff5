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

from fnmatch import fnmatchcase
from importlib.util import find_spec

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


def queue_databases() -> dict[str, str]:
    return dict(getattr(settings, "REPROQ_QUEUE_DATABASES", None) or {})


def default_db_alias() -> str:
    return getattr(settings, "REPROQ_DEFAULT_DB_ALIAS", None) or DEFAULT_DB_ALIAS


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


def result_id_with_alias() -> bool:
    try:
        return _cache["result_id_with_alias"]
    except KeyError:
        pass
    _cache["result_id_with_alias"] = value = _result_id_with_alias()
    return value


def _result_id_with_alias() -> bool:
    configured = getattr(settings, "REPROQ_RESULT_ID_WITH_ALIAS", None)
    if configured is None:
        return len(all_queue_aliases()) > 1
    return bool(configured)


def allowed_task_modules() -> tuple[str, ...]:
    """Configured task-path prefixes, or every installed app's ``tasks`` module."""
    configured = getattr(settings, "REPROQ_ALLOWED_TASK_MODULES", None)
    if configured is not None:
        return tuple(configured)
    return installed_task_modules()


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
