from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    dependencies = [("reproq_django", "0003_cheaper_hot_paths")]
    operations = [apply_sql_through(4)]
