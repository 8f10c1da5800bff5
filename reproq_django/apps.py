from django.apps import AppConfig


class ReproqConfig(AppConfig):
    name = "reproq_django"
    label = "reproq_django"
    verbose_name = "reproq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from reproq_django import checks  # noqa: F401  (registers the system checks)
