"""Django settings of the demo: the queue database is the embedded cluster under .reproq/."""

from pathlib import Path

from reproq_runner.embedded import EmbeddedPostgres

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CLUSTER = EmbeddedPostgres(REPO_ROOT / ".reproq" / "pg", port=5432)

SECRET_KEY = "reproq-demo-only"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "reproq_django",
    "examples.demo_app",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "reproq_demo",
        "HOST": str(DEMO_CLUSTER.socket_dir),
        "PORT": str(DEMO_CLUSTER.port),
        "USER": DEMO_CLUSTER.user,
    },
}
TASKS = {
    "default": {
        "BACKEND": "reproq_django.backend.ReproqBackend",
        "QUEUES": ["default", "emails"],
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"reproq": {"handlers": ["console"], "level": "WARNING"}},
}
