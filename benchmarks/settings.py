"""Django settings of the benchmark: the queue database is the benchmark's own cluster.

``benchmarks.run`` starts the cluster and exports its folder and database name
(``REPROQ_BENCH_PGROOT``, ``REPROQ_BENCH_DATABASE``); runner subprocesses inherit them.
"""

import os
from pathlib import Path

from benchmarks.constants import DATABASE, DATABASE_ENV, PORT, ROOT_ENV
from reproq_runner.embedded import EmbeddedPostgres

_pg = EmbeddedPostgres(Path(os.environ.get(ROOT_ENV, "/nonexistent-reproq-bench")), port=PORT)

SECRET_KEY = "reproq-benchmarks-only"
DEBUG = False  # DEBUG=True would keep every query in memory
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.postgres",
    "reproq_django",
    "benchmarks",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get(DATABASE_ENV, DATABASE),
        "HOST": str(_pg.socket_dir),
        "PORT": str(_pg.port),
        "USER": _pg.user,
        # One connection per process for its lifetime, as a production runner would.
        "CONN_MAX_AGE": None,
    },
}
TASKS = {
    "default": {
        "BACKEND": "reproq_django.backend.ReproqBackend",
        "QUEUES": ["default"],
        "OPTIONS": {},
    },
}
# The runner's allow-list: only benchmarks.tasks may run.
REPROQ_ALLOWED_TASK_MODULES = ["benchmarks.tasks"]
ALLOWED_TASK_MODULES = REPROQ_ALLOWED_TASK_MODULES
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"reproq": {"handlers": ["console"], "level": "WARNING"}},
}
