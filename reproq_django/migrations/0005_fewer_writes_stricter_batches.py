from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0004_lease_only_while_running")]
    operations = [apply_sql_through(5)]
