"""Gateway key column, key/usage sort indexes, the response_output file role.

Written by hand so that no step rebuilds the big `requests` table on SQLite (a rebuild copies
every body and drops indexes the model state does not know, such as 0002's):
- gateway_key is added with ALTER TABLE ADD COLUMN and a constant default (in place);
- the single-column indexes on requests.model and requests.key_fingerprint are dropped by name
  (the composite (column, created_at) indexes serve every lookup and sort they did);
- 0002's indexes enter the model state, so a future rebuild keeps them.
"""

from django.db import migrations, models

# Django's names for the db_index indexes of 0001 (the same on SQLite and PostgreSQL; _like is
# PostgreSQL's extra pattern index for LIKE on varchar).
OLD_SINGLE = {"requests_model_475f13ba": "model", "requests_key_fingerprint_5a49a97e": "key_fingerprint"}
SORTED = ("model", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "total_tokens", "cost_usd")


def _drop(name: str, column: str) -> migrations.RunSQL:
    """Drop a 0001 single-column index (and its _like twin); recreate it on the way back."""
    return migrations.RunSQL(
        [f"DROP INDEX IF EXISTS {name}", f"DROP INDEX IF EXISTS {name}_like"],
        [f'CREATE INDEX IF NOT EXISTS {name} ON requests ("{column}")'],
    )


class Migration(migrations.Migration):
    dependencies = [("logs", "0002_admin_filter_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddField(
                model_name="request", name="gateway_key",
                field=models.CharField(blank=True, db_default="", default="", max_length=160))],
            # Django's SQLite editor would rebuild the table for a NOT NULL column; both
            # databases add one with a constant default in place.
            database_operations=[migrations.RunSQL(
                "ALTER TABLE requests ADD COLUMN gateway_key varchar(160) DEFAULT '' NOT NULL",
                "ALTER TABLE requests DROP COLUMN gateway_key")],
        ),
        migrations.AlterField(
            model_name="binaryfile", name="role",
            field=models.CharField(choices=[
                ("request_part", "Request Part"), ("request_body", "Request Body"),
                ("response_body", "Response Body"), ("response_image", "Response Image"),
                ("response_output", "Response Output")], max_length=32),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="request", name="key_fingerprint",
                                      field=models.CharField(blank=True, default="", max_length=32)),
                migrations.AlterField(model_name="request", name="model",
                                      field=models.CharField(blank=True, max_length=255, null=True)),
                migrations.AddIndex(model_name="request", index=models.Index(
                    fields=["provider", "created_at"], name="requests_provider_created_idx")),
                migrations.AddIndex(model_name="request", index=models.Index(
                    fields=["model", "created_at"], name="requests_model_created_idx")),
            ],
            database_operations=[_drop(name, column) for name, column in OLD_SINGLE.items()],
        ),
        migrations.AddIndex(
            model_name="request",
            index=models.Index(fields=["key_fingerprint", "created_at"], name="requests_keyfp_created_idx"),
        ),
        migrations.AddIndex(
            model_name="request",
            index=models.Index(fields=["gateway_key", "created_at"], name="requests_gwkey_created_idx"),
        ),
        *[migrations.AddIndex(
            model_name="response",
            index=models.Index(condition=models.Q((f"{f}__isnull", False)), fields=[f],
                               name=f"responses_{f.split('_')[0]}_sort_idx"),
        ) for f in SORTED],
    ]
