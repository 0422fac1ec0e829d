"""landings: when each request and response row reached the database, kept by triggers (see models.Landing).

The live tail followed exchanges by start (created_at) and so never showed one that reached the
database more than its window late: a long stream's answer, the rows a restart replays from a dead
worker's journal, a backlog written after an outage. Triggers rather than the ingest, as for the
other derived tables: every writer notes its rows. Notes older than KEEP_MINUTES are deleted as
requests are written.
"""

from django.db import migrations, models

from logs.migrations._vendor import vendor_sql

KEEP_MINUTES = 10
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"  # as Django stores a datetime in UTC, to the millisecond
SQLITE_FORWARD = [
    f"CREATE TRIGGER requests_landing_ai AFTER INSERT ON requests BEGIN "
    f"INSERT INTO landings (request_id, at) VALUES (new.id, {SQLITE_NOW}); "
    f"DELETE FROM landings WHERE at < strftime('%Y-%m-%d %H:%M:%f', 'now', '-{KEEP_MINUTES} minutes'); END",
    f"CREATE TRIGGER responses_landing_ai AFTER INSERT ON responses BEGIN "
    f"INSERT INTO landings (request_id, at) VALUES (new.request_id, {SQLITE_NOW}); END",
]
# Statement-level over the transition tables: one insert per batch.
POSTGRES_FORWARD = [
    f"""CREATE FUNCTION landings_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO landings (request_id, at) SELECT id, clock_timestamp() FROM new_rows;
        DELETE FROM landings WHERE at < now() - interval '{KEEP_MINUTES} minutes';
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION landings_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO landings (request_id, at) SELECT request_id, clock_timestamp() FROM new_rows;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER requests_landing_ins AFTER INSERT ON requests REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION landings_on_request()""",
    """CREATE TRIGGER responses_landing_ins AFTER INSERT ON responses REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION landings_on_response()""",
]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS requests_landing_ai", "DROP TRIGGER IF EXISTS responses_landing_ai"]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS requests_landing_ins ON requests",
    "DROP TRIGGER IF EXISTS responses_landing_ins ON responses",
    "DROP FUNCTION IF EXISTS landings_on_request()",
    "DROP FUNCTION IF EXISTS landings_on_response()",
]


class Migration(migrations.Migration):

    dependencies = [
        ('logs', '0015_deleted_spend'),
    ]

    operations = [
        migrations.CreateModel(
            name='Landing',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('request_id', models.UUIDField()),
                ('at', models.DateTimeField()),
            ],
            options={
                'db_table': 'landings',
                'indexes': [models.Index(fields=['at'], name='landings_at')],
            },
        ),
        vendor_sql({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
