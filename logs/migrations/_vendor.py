"""What the raw-SQL migrations share (a module whose name starts with "_" is not a migration to Django)."""

from django.db import migrations


def vendor_sql(forward: dict[str, list[str]], backward: dict[str, list[str]]) -> migrations.RunPython:
    """Run the statements written for the connection's vendor ("sqlite", "postgresql"), each way."""
    def run(statements: dict[str, list[str]]):
        def apply(apps, schema_editor):
            for sql in statements.get(schema_editor.connection.vendor, []):
                schema_editor.execute(sql)
        return apply
    return migrations.RunPython(run(forward), run(backward))
