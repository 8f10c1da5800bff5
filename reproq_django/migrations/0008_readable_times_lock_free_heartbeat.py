from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0007_missing_arguments_refused")]
    operations = [apply_sql_through(8)]
