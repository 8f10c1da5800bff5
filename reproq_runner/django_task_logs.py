"""Django's per-task INFO records, not built at all where no handler could show them.

Django's own ``task_started`` and ``task_finished`` receivers log every attempt at INFO on the
``django.tasks`` logger. Under Django's default logging and ``DEBUG = False`` no handler takes
them (the console handler needs ``DEBUG = True``, the admin mail handler takes ``ERROR`` only),
yet each is built and offered to every handler: about 37 µs of a no-op task's ≈ 81 µs in a
child. The runner's forkserver calls :func:`quiet_unheard_task_logs` once, after Django's set-up
and the import of the task modules, before it forks any child. When it can prove that no INFO
record of that logger could reach a handler, it raises the logger to ``WARNING``: ``ERROR``
records (a failed task) still flow, and the output does not change.

Anything it cannot reason about keeps Django's behaviour: a handler at or below INFO whose
filters are not Django's ``RequireDebugTrue`` / ``RequireDebugFalse``, or that applies its
filters its own way; a level or a filter set on the logger itself; a logger below it; a logger
class of one's own; a logging module patched by another library (error reporters that keep
every record as a breadcrumb do that). Logging configured later, by a module a child imports
while it runs tasks, is not seen. Never called in a process that runs anything else.
"""

from __future__ import annotations

import logging

TASK_LOGGER = "django.tasks"

# The Logger methods a record goes through; a library that patches one of them sees records
# no handler takes.
_RECORD_PATH = ("log", "info", "_log", "makeRecord", "handle", "callHandlers")


def quiet_unheard_task_logs(name: str = TASK_LOGGER) -> bool:
    """Raise logger ``name`` to WARNING when none of its INFO records could reach a handler.
    Returns whether it did."""
    logger = logging.getLogger(name)
    if (
        type(logger) is not logging.Logger
        or logger.level != logging.NOTSET  # a level of one's own is left as it is
        or not logger.isEnabledFor(logging.INFO)
        or logger.filters
        or _has_loggers_below(name)
        or _record_path_patched()
        or _info_could_reach_a_handler(logger)
    ):
        return False
    logger.setLevel(logging.WARNING)
    return True


def _has_loggers_below(name: str) -> bool:
    """A logger below ``name`` inherits its level: leave it alone then."""
    prefix = name + "."
    return any(other.startswith(prefix) for other in list(logging.root.manager.loggerDict))


def _record_path_patched() -> bool:
    """Compared by where the code lives: a wrapper made with functools.wraps carries the
    original's name and module, not its code."""
    for name in _RECORD_PATH:
        code = getattr(getattr(logging.Logger, name), "__code__", None)
        if code is None or code.co_filename != logging.__file__:
            return True
    return False


def _info_could_reach_a_handler(logger: logging.Logger) -> bool:
    """Walk the handlers an INFO record of ``logger`` is offered to, as Logger.callHandlers
    does."""
    offered = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            offered = True
            # callHandlers applies the handler's level itself; its filters apply only through
            # the stock Handler.handle and Filterer.filter, which a subclass may replace.
            if handler.level <= logging.INFO and not _filters_refuse_every_record(handler):
                return True
        if not current.propagate:
            break
        current = current.parent
    if offered:
        return False
    # No handler at all: logging's last resort takes the record (WARNING and up by default).
    return logging.lastResort is None or logging.lastResort.level <= logging.INFO


def _filters_refuse_every_record(handler: logging.Handler) -> bool:
    return (type(handler).handle is logging.Handler.handle
            and type(handler).filter is logging.Filterer.filter
            and any(map(_refuses_every_record, handler.filters)))


def _refuses_every_record(log_filter) -> bool:
    """Django's two DEBUG filters decide by the setting alone; any other filter may pass."""
    from django.conf import settings
    from django.utils.log import RequireDebugFalse, RequireDebugTrue

    if type(log_filter) is RequireDebugTrue:
        return not settings.DEBUG
    if type(log_filter) is RequireDebugFalse:
        return bool(settings.DEBUG)
    return False
