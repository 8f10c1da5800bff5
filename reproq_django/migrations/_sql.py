"""The operation every reproq Django migration uses: run the shared SQL applier.

Each file of ``sql/migrations`` has one Django migration that applies everything up to it, so
``manage.py migrate`` and ``reproq migrate-worker`` (or ``python -m reproq_runner migrate``)
can run in any order: whichever runs second finds the files recorded and does nothing.
"""

from django.db import migrations

from reproq_runner.migrate import apply_migrations


def apply_sql_through(version: int) -> migrations.RunPython:
    def forwards(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            apply_migrations(cursor, up_to=version)

    return migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)
