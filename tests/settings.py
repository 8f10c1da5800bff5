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
}

TASKS = {
    "default": {
        "BACKEND": "reproq_django.backend.ReproqBackend",
        "QUEUES": [],
        "OPTIONS": {},
    },
}
