from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0005_fewer_writes_stricter_batches")]
    operations = [apply_sql_through(6)]
