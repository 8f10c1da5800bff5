from django.db import migrations

from reproq_django.migrations._sql import apply_sql_through


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [apply_sql_through(1)]
