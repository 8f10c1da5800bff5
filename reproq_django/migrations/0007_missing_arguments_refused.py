from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0006_held_leases_lockless_dedup")]
    operations = [apply_sql_through(7)]
