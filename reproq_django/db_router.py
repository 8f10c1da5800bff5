"""``ReproqRouter``: keeps reproq's models and migrations on the queue databases.

Add ``"reproq_django.db_router.ReproqRouter"`` to ``DATABASE_ROUTERS`` when the queue lives
in a database other than ``default`` (``REPROQ_DEFAULT_DB_ALIAS`` / ``REPROQ_QUEUE_DATABASES``).
"""

from reproq_django import conf

APP_LABEL = "reproq_django"


class ReproqRouter:
    def db_for_read(self, model, **hints):
        if model._meta.app_label == APP_LABEL:
            return conf.default_db_alias()
        return None

    def db_for_write(self, model, **hints):
        return self.db_for_read(model, **hints)

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        """reproq's SQL migrations run on every queue database and nowhere else."""
        if app_label == APP_LABEL:
            return db in conf.all_queue_aliases()
        return None
