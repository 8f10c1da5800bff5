from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0008_readable_times_lock_free_heartbeat")]
    operations = [apply_sql_through(9)]
