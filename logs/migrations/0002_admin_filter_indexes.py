"""Composite indexes for the admin's "filter, newest first" pages.

With (provider, created_at) and (model, created_at) the database walks only the filtered
rows, already in time order, and stops after one page; with the single-column indexes it had
to collect every matching row and sort them (seconds at a million exchanges). Written as SQL
so models.py stays untouched; both statements are valid on SQLite and PostgreSQL.
"""

from django.db import migrations

INDEXES = {
    "requests_provider_created_idx": "requests (provider, created_at)",
    "requests_model_created_idx": "requests (model, created_at)",
}


class Migration(migrations.Migration):
    dependencies = [("logs", "0001_initial")]

    operations = [
        migrations.RunSQL(f"CREATE INDEX IF NOT EXISTS {name} ON {target}", f"DROP INDEX IF EXISTS {name}")
        for name, target in INDEXES.items()
    ]
