"""Imported by the runner's forkserver before it forks any child: sets Django up there once.

Every child then starts with Django, the settings, the apps and the task modules already
imported — it does not pay for them at start-up, and their memory is shared copy-on-write —
and with Django's per-task INFO records left unbuilt where no handler could show them
(reproq_runner.django_task_logs).
Nothing here may fail the forkserver: a problem is left for the child's own
``DjangoExecutor.setup()``, which reports it properly.
"""

import importlib
import os


def _preload() -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    try:
        import django

        django.setup()
        from reproq_django import conf

        modules = conf.allowed_task_modules()
    except Exception:  # noqa: BLE001 - reported by the child's setup instead
        return
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a prefix need not be an importable module
            continue
    _quiet_unheard_task_logs()


def _quiet_unheard_task_logs() -> None:
    """After the task modules: one of them may configure logging when imported."""
    try:
        from reproq_runner.django_task_logs import quiet_unheard_task_logs

        quiet_unheard_task_logs()
    except Exception:  # noqa: BLE001 - an optimisation: Django's behaviour stays
        return


_preload()
