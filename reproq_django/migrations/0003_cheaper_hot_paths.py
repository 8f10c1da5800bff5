from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0002_queue_functions")]
    operations = [apply_sql_through(3)]
