"""Ids default to UUIDv7 and outcomes take their labels from logs/outcomes.py.

Both live in Python only (Django fills defaults itself; choices are not in the schema), so the
database is left alone: on SQLite an AlterField would otherwise copy every log table.
"""

import logs.ids
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('logs', '0003_usage_sort_keys_output_role'),
    ]

    operations = [migrations.SeparateDatabaseAndState(database_operations=[], state_operations=[
        migrations.AlterField(
            model_name='binaryfile',
            name='id',
            field=models.UUIDField(default=logs.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name='request',
            name='id',
            field=models.UUIDField(default=logs.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name='response',
            name='id',
            field=models.UUIDField(default=logs.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name='response',
            name='outcome',
            field=models.CharField(choices=[('completed', 'completed'), ('upstream_error', 'upstream error'), ('client_aborted', 'client aborted'), ('gateway_error', 'gateway error'), ('interrupted', 'interrupted')], db_index=True, max_length=32),
        ),
    ])]
