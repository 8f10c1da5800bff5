"""Django settings for the test suite: the database is the session's throwaway cluster."""

import os

from tests.pg import cluster

_pg = cluster()

SECRET_KEY = "reproq-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "reproq_django",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        # Runner processes started by tests point this at their own database.
        "NAME": os.environ.get("REPROQ_TEST_DATABASE", "reproq"),
        "HOST": str(_pg.socket_dir),
        "PORT": str(_pg.port),
        "USER": _pg.user,
    },
    # A second queue database (queues named "remote-*" live there, see REPROQ_QUEUE_DATABASES).
    "queues": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "reproq_queues",
        "HOST": str(_pg.socket_dir),
        "PORT": str(_pg.port),
        "USER": _pg.user,
    },
    # A PostgreSQL database without the reproq schema (the router keeps migrations off it).
    "bare": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "reproq_bare",
        "HOST": str(_pg.socket_dir),
        "PORT": str(_pg.port),
        "USER": _pg.user,
    },
    # Not PostgreSQL (Django's "dummy" engine, which refuses every query): for the reproq.E001
    # check only. No test runs anything but PostgreSQL.
    "not_postgresql": {"ENGINE": "django.db.backends.dummy"},
}

DATABASE_ROUTERS = ["reproq_django.db_router.ReproqRouter"]
REPROQ_QUEUE_DATABASES = {"remote-*": "queues"}
# Plain numeric ids in the default queue database unless a test turns alias-prefixed ids on
# (ids of tasks in "queues" read "queues:<id>" whatever this says).
REPROQ_RESULT_ID_WITH_ALIAS = False

TASKS = {
    "default": {
        "BACKEND": "reproq_django.backend.ReproqBackend",
        "QUEUES": [],
        "OPTIONS": {},
    },
}
