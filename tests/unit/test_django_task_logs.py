"""reproq_runner.django_task_logs: Django's per-task INFO records are left unbuilt only where
no handler could show them.

Each case runs in a fresh interpreter with Django's default logging (settings.configure, then
django.setup()), as the runner's forkserver has it: under pytest, its capture handlers would
be offered every record, so nothing could be left unbuilt here.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def after_setup(code: str = "", debug: bool = False, logging_setting: dict | None = None):
    """Run ``code`` after Django's set-up, then quiet_unheard_task_logs(); returns whether it
    raised django.tasks to WARNING, and the logger's effective level and ERROR state after."""
    script = textwrap.dedent(f"""
        import json, logging, sys
        import django
        from django.conf import settings
        settings.configure(DEBUG={debug!r}, LOGGING={logging_setting or {}!r})
        django.setup()
        from reproq_runner.django_task_logs import quiet_unheard_task_logs
        tasks = logging.getLogger("django.tasks")
    """) + textwrap.dedent(code) + textwrap.dedent("""
        quieted = quiet_unheard_task_logs()
        print(json.dumps([quieted, tasks.getEffectiveLevel(), tasks.isEnabledFor(logging.ERROR)]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def test_django_defaults_without_debug_raise_the_logger_to_warning():
    # A failed task's ERROR record still reaches the admin mail handler.
    assert after_setup() == (True, 30, True)


def test_with_debug_the_console_handler_shows_them():
    assert after_setup(debug=True) == (False, 20, True)


def test_a_root_handler_of_ones_own_keeps_them():
    assert after_setup("logging.getLogger().addHandler(logging.NullHandler())") == (False, 20, True)


def test_a_configured_handler_keeps_them():
    configured = {"version": 1, "disable_existing_loggers": False,
                  "handlers": {"out": {"class": "logging.StreamHandler"}},
                  "loggers": {"django": {"handlers": ["out"], "level": "INFO"}}}
    assert after_setup(logging_setting=configured) == (False, 20, True)


def test_a_filter_it_cannot_reason_about_keeps_them():
    assert after_setup("""
        shown = logging.StreamHandler()
        shown.addFilter(lambda record: "important" in record.getMessage())
        logging.getLogger("django").addHandler(shown)
    """) == (False, 20, True)


def test_a_warning_handler_does_not_count():
    assert after_setup("""
        warnings_only = logging.StreamHandler()
        warnings_only.setLevel(logging.WARNING)
        logging.getLogger().addHandler(warnings_only)
    """) == (True, 30, True)


def test_a_logger_below_it_is_left_its_level():
    assert after_setup('logging.getLogger("django.tasks.mine")') == (False, 20, True)


def test_a_patched_logging_module_keeps_them():
    """Error reporters patch Logger.callHandlers to keep every record as a breadcrumb."""
    assert after_setup("""
        original = logging.Logger.callHandlers
        namespace = {"original": original}
        exec("def callHandlers(self, record):\\n    return original(self, record)\\n", namespace)
        logging.Logger.callHandlers = namespace["callHandlers"]
    """) == (False, 20, True)


@pytest.mark.parametrize("level", ["ERROR", "DEBUG"])
def test_a_level_set_on_the_logger_is_left_as_it_is(level):
    configured = {"version": 1, "disable_existing_loggers": False,
                  "loggers": {"django.tasks": {"level": level}}}
    quieted, effective, _ = after_setup(logging_setting=configured)
    assert not quieted and effective == getattr(__import__("logging"), level)


def test_a_patch_made_with_functools_wraps_is_seen():
    """wraps copies the original's name and module: the code's file tells them apart."""
    assert after_setup("""
        import functools
        original = logging.Logger.callHandlers
        @functools.wraps(original)
        def callHandlers(self, record):
            return original(self, record)
        logging.Logger.callHandlers = callHandlers
    """) == (False, 20, True)


def test_a_handler_that_applies_filters_its_own_way_keeps_them():
    assert after_setup("""
        from django.utils.log import RequireDebugTrue
        class Buffering(logging.Handler):
            def handle(self, record):  # keeps every record, filters later
                return True
        buffering = Buffering()
        buffering.addFilter(RequireDebugTrue())
        logging.getLogger().addHandler(buffering)
    """) == (False, 20, True)


def test_the_forkserver_decides_after_importing_the_task_modules(tmp_path):
    """A task module may configure logging when imported: the forkserver's preload asks only
    once they are all imported."""
    (tmp_path / "loud_settings.py").write_text(
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['reproq_django']\n"
        "REPROQ_ALLOWED_TASK_MODULES = ['loud_tasks']\n")
    (tmp_path / "loud_tasks.py").write_text(
        "import logging\nlogging.basicConfig(level=logging.INFO)\n")
    script = ("import logging, reproq_runner.django_preload\n"
              "print(logging.getLogger('django.tasks').getEffectiveLevel())\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loud_settings",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60, env=env)
    assert done.stdout.split() == ["20"], done.stderr
