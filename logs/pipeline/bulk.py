"""Log rows in bulk: built positionally, inserted with cached multi-row statements that skip rows already there."""

import functools
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.operations import BaseDatabaseOperations

M = TypeVar("M", bound=models.Model)
INSERT_ROWS_MAX = 256  # rows per INSERT statement at most; see chunk_sizes


@functools.lru_cache(maxsize=8)
def _defaults(model: type[models.Model]) -> tuple[dict[str, Any], tuple[tuple[str, models.Field], ...]]:
    """A model's fixed defaults by attname, and the (attname, field) whose default is made per row (a callable)."""
    fixed, made = {}, []
    for f in model._meta.concrete_fields:
        if f.has_default() and callable(f.default):
            made.append((f.attname, f))
        else:
            fixed[f.attname] = f.get_default()
    return fixed, tuple(made)


def row_new(model: type[M], values: dict[str, Any]) -> M:
    """A model instance from attname -> value, defaults for the rest: what Model(**values) builds.

    Filled in directly, as Model.from_db's instances are: Model() sets each field through its
    descriptor and sends two signals, several times the cost, which the log writer paid for each
    of an exchange's rows (docs/benchmark.md). The writer's models have no init signal receivers.
    """
    fixed, made = _defaults(model)
    row = model.__new__(model)
    row._state = models.base.ModelState()
    data = row.__dict__
    data.update(fixed)
    for attname, field in made:
        if attname not in values:
            data[attname] = field.get_default()
    data.update(values)
    return row


@functools.lru_cache(maxsize=16)
def insert_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    """The columns an insert names: every concrete field but an auto-incrementing key (the database numbers it;
    PostgreSQL refuses an explicit NULL for an identity column)."""
    return tuple(f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, models.AutoField)))


_CONFLICT_IGNORED = {"sqlite": ("INSERT OR IGNORE INTO", ""), "postgresql": ("INSERT INTO", " ON CONFLICT DO NOTHING")}


@functools.lru_cache(maxsize=64)
def _insert_sql(model: type[models.Model], vendor: str, quote: Callable[[str], str], rows: int) -> str:
    """INSERT of `rows` rows that skips rows already there (cached: batches repeat their sizes)."""
    verb, tail = _CONFLICT_IGNORED[vendor]
    fields = insert_fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    row = f"({', '.join(['%s'] * len(fields))})"
    return f"{verb} {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)}{tail}"


# Fields whose value Django passes to the database unchanged when it has this exact type
# (get_prep_value is str(), float() or bool() of it and no adapter applies); integers too
# where the backend does not wrap them (PostgreSQL's psycopg gets typed Int4/Int8).
_PLAIN_TYPES: dict[type[models.Field], type] = {
    models.CharField: str, models.TextField: str, models.BooleanField: bool, models.FloatField: float,
}
_PLAIN_INTEGERS: dict[type[models.Field], type] = {models.IntegerField: int, models.BigIntegerField: int}
_HEX32 = re.compile(r"[0-9a-f]{32}")


def _sqlite_converter(field: models.Field) -> Callable[[Any, Any], Any] | None:
    """convert(value, connection): what SQLite is sent for the log's common values, as Django's own conversion
    gives it (tests/logs/pipeline/test_rows.py proves each equal); other values go through the field. None:
    the field is always converted by Django.

    Ids, timestamps, JSON and costs went through get_db_prep_save: most of row_values's time.
    """
    prep = field.get_db_prep_save
    target = field.target_field if field.is_relation else field
    if isinstance(target, models.UUIDField):  # stored as 32 hex digits, which the journal's ids already are
        return lambda v, c: v if v is None or (type(v) is str and _HEX32.fullmatch(v)) else prep(v, c)
    if isinstance(field, models.DateTimeField) and settings.USE_TZ:  # naive in the database's zone (UTC), as str()
        return lambda v, c: (str(v.replace(tzinfo=None))
                             if type(v) is datetime and v.tzinfo is timezone.utc and c.timezone is timezone.utc
                             else prep(v, c))
    if isinstance(field, models.JSONField) and field.encoder is None:
        return lambda v, c: json.dumps(v) if type(v) in (dict, list, str) else prep(v, c)
    if isinstance(field, models.DecimalField):  # sqlite3 has Django's adapter for Decimal
        return lambda v, c: v if v is None or (type(v) is Decimal and v.is_finite()) else prep(v, c)
    return None


@functools.lru_cache(maxsize=64)
def _field_plans(model: type[models.Model], vendor: str,
                 ops_class: type) -> tuple[tuple[str, type | None, Callable[[Any, Any], Any] | None, models.Field], ...]:
    """(attname, plain type or None, converter or None, field) for each concrete field, in column order."""
    plain = dict(_PLAIN_TYPES)
    if ops_class.adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value:
        plain.update(_PLAIN_INTEGERS)
    return tuple((f.attname, plain.get(type(f)), _sqlite_converter(f) if vendor == "sqlite" else None, f)
                 for f in insert_fields(model))


def row_values(rows: list[models.Model], connection) -> list[Any]:
    """The rows' column values as Django would send them (get_db_prep_save), flattened.

    Plain values (a str for a CharField, an int for an IntegerField, None) pass through
    untouched; ids, timestamps, JSON and costs are converted directly on SQLite; only the rest
    go through their field. Calling get_db_prep_save on every value was half of the log
    writer's CPU time.
    """
    plans = _field_plans(type(rows[0]), connection.vendor, type(connection.ops))
    values: list[Any] = []
    append = values.append
    for row in rows:
        data = row.__dict__
        for attname, plain, convert, field in plans:
            value = data[attname]
            if plain is not None and (value is None or type(value) is plain):
                append(value)
            elif convert is not None:
                append(convert(value, connection))
            else:
                append(field.get_db_prep_save(value, connection))
    return values


def rows_insert(model: type[models.Model], rows: list[models.Model]) -> None:
    """Insert rows, skipping any already there (a replayed journal): bulk_create(ignore_conflicts=True), cheaper.

    Cached multi-row statements, values converted by row_values; bulk_create's per-value SQL
    compilation was most of the log writer's CPU time (see docs/benchmark.md). Not
    executemany: SQLite would release and retake the GIL for every row, and a busy event loop
    keeps the writer thread waiting for it each time. Other databases get bulk_create itself.
    """
    if not rows:
        return
    connection = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: no proxy lookup per value
    if connection.vendor not in _CONFLICT_IGNORED:
        model.objects.bulk_create(rows, ignore_conflicts=True)
        return
    size = max(1, connection.ops.bulk_batch_size(insert_fields(model), rows))
    with connection.cursor() as cursor:
        i = 0
        for count in chunk_sizes(len(rows), min(size, INSERT_ROWS_MAX)):
            chunk = rows[i:i + count]
            i += count
            sql = _insert_sql(model, connection.vendor, connection.ops.quote_name, count)
            cursor.execute(sql, row_values(chunk, connection))


def chunk_sizes(count: int, cap: int) -> list[int]:
    """Split count rows into powers of two no larger than cap, largest first.

    Every distinct row count is a statement of its own in the caches (ours and SQLite's
    prepared statements, large for a few hundred rows): with any count up to the batch size,
    the ingest process held more memory under load (docs/benchmark.md). Powers of two keep it to a few.
    """
    cap = 1 << (max(cap, 1).bit_length() - 1)
    sizes = [cap] * (count // cap)
    rest = count % cap
    while rest:
        part = 1 << (rest.bit_length() - 1)
        sizes.append(part)
        rest -= part
    return sizes
