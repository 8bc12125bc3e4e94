"""The scheduled-date index of the SQL adapters: key expressions, indexes and queries.

Both adapters store a date as the codec writes it, ``{"$date": datetime.isoformat()}``
in the item's JSON text: ``YYYY-MM-DDTHH:MM:SS``, then ``.ffffff`` when there are
microseconds, then for an aware date its offset ``+HH:MM``, ``:SS`` and ``.ffffff`` when
the offset has them. The SQL here turns that text into the key of
:func:`taskengine.storage.schedule.date_key` (microseconds since the epoch, UTC) exactly,
with integer arithmetic only (a ``julianday`` or ``timestamptz`` would round or depend
on the session), so the index orders dates as Python compares them.

* **SQLite**: a partial index per field on ``(coll, env, <key of the field>)`` for the
  rows of publish-plugin collections whose text holds ``"<field>":{"$date":"``. A
  publish-plugin collection gets a *negative* id (version 2 renumbers the existing ones),
  so the condition starts with ``coll < 0`` and a write to any other collection never
  reads the document for it; in a publish-plugin collection every write costs an
  ``instr`` on the old and the new text, and the key (a few ``json_extract`` calls) is
  computed only for rows holding such a date. The local
  part goes through ``strftime('%s', 'YYYY-MM-DDTHH:MM:SS')`` (exact: whole seconds),
  the fraction and the offset through ``substr``/``CAST``; a date without fraction,
  naive or at ``+00:00`` (what a task stores from a ``Z`` date) takes a shorter branch.
* **PostgreSQL**: an ``IMMUTABLE`` function ``taskengine_date_key(text)`` and a stored
  generated ``bigint`` column per field (``NULL`` without a date), indexed partially on
  ``(coll, env, <column>, id)``. The column only changes when the date does, so a write
  that keeps it stays a HOT update; the document is parsed for it (as ``json``, its
  ``\\u0000`` escapes, which ``json`` refuses, replaced) only when its text holds the
  field's date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from taskengine.storage.schedule import (
    DATE_FIELDS,
    DRAFT_DATE,
    MAX_KEY,
    MIN_KEY,
    PUBLISH_DATE,
    key_date,
    merge_due,
)

__all__ = [
    "PG_COLUMN",
    "PG_SCHEMA",
    "SQLITE_PUBLISH_ID",
    "SQLITE_SCHEMA",
    "pg_due",
    "pg_next",
    "read_due",
    "read_next_date",
    "sqlite_due",
    "sqlite_key",
    "sqlite_next",
    "sqlite_where",
]

_INDEX_NAME: Final = {PUBLISH_DATE: "publish", DRAFT_DATE: "draft"}


def _marker(field: str) -> str:
    return f'"{field}":{{"$date":"'


def sqlite_where(field: str) -> str:
    """The partial-index condition of ``field``'s index (and of its queries)."""
    return f"coll < 0 AND instr(doc, '{_marker(field)}') > 0"


def sqlite_key(field: str) -> str:
    """The SQLite expression of ``field``'s key over ``doc`` (``NULL`` without a date)."""
    x = f"json_extract(doc, '$.{field}.\"$date\"')"
    local = f"CAST(strftime('%s', substr({x}, 1, 19)) AS INTEGER) * 1000000"
    has_frac = f"substr({x}, 20, 1) = '.'"
    frac = f"CASE WHEN {has_frac} THEN CAST(substr({x}, 21, 6) AS INTEGER) ELSE 0 END"
    rest = f"substr({x}, CASE WHEN {has_frac} THEN 27 ELSE 20 END)"
    sign = f"CASE substr({rest}, 1, 1) WHEN '-' THEN -1 WHEN '+' THEN 1 ELSE 0 END"
    offset = (
        f"((CAST(substr({rest}, 2, 2) AS INTEGER) * 3600"
        f" + CAST(substr({rest}, 5, 2) AS INTEGER) * 60"
        f" + CAST(substr({rest}, 8, 2) AS INTEGER)) * 1000000"
        f" + CAST(substr({rest}, 11, 6) AS INTEGER))"
    )
    # A date is exactly {"$date": "<text>"}: a dict with more keys, or a "$date" that is
    # not a string, is not one (the object's own text must be the date's).
    exact = f"json_extract(doc, '$.{field}') = '{{\"$date\":\"' || {x} || '\"}}'"
    return (
        f"(CASE WHEN {exact} THEN CASE substr({x}, 20) WHEN '' THEN {local}"
        f" WHEN '+00:00' THEN {local} ELSE {local} + {frac} - {sign} * {offset} END END)"
    )


SQLITE_PUBLISH_ID: Final = "(SELECT min(coalesce(min(id), 0), 0) - 1 FROM taskengine_collections)"
"""The id a new publish-plugin collection gets: below every id and below 0."""

SQLITE_SCHEMA: Final = (
    # Publish-plugin collections of a version 1 file get negative ids (items first).
    "UPDATE taskengine_items SET coll = -coll WHERE coll IN"
    " (SELECT id FROM taskengine_collections WHERE publish_plugin AND id > 0)",
    "UPDATE taskengine_collections SET id = -id WHERE publish_plugin AND id > 0",
    *(
        f"CREATE INDEX IF NOT EXISTS taskengine_items_{_INDEX_NAME[field]}_due"
        f" ON taskengine_items (coll, env, {sqlite_key(field)}) WHERE {sqlite_where(field)}"
        for field in DATE_FIELDS
    ),
)
"""The statements of storage schema version 2 on SQLite (idempotent)."""


def sqlite_due(field: str) -> str:
    """Rows ``(id, key)`` of ``field`` with ``? <= key <= ?``, by key then id, ``LIMIT ?``;
    parameters ``(coll, env, low, high, limit)``."""
    key = sqlite_key(field)
    return (
        f"SELECT id, {key} FROM taskengine_items"
        f" WHERE coll = ? AND env = ? AND {sqlite_where(field)} AND {key} BETWEEN ? AND ?"
        f" ORDER BY {key}, id LIMIT ?"
    )


def sqlite_next(field: str) -> str:
    """The smallest key of ``field`` in ``[?, ?]``; parameters ``(coll, env, low, high)``."""
    key = sqlite_key(field)
    return (
        f"SELECT min({key}) FROM taskengine_items"
        f" WHERE coll = ? AND env = ? AND {sqlite_where(field)} AND {key} BETWEEN ? AND ?"
    )


PG_COLUMN: Final = {PUBLISH_DATE: "publish_due", DRAFT_DATE: "draft_due"}
"""The generated key column of each field in ``taskengine_items``."""

_PG_FUNCTION: Final = r"""
CREATE OR REPLACE FUNCTION taskengine_date_key(j json) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    t text := j ->> '$date';
    k bigint;
    r text;
    s integer;
BEGIN
    -- A date is exactly {"$date": "<ISO text>"} as the codec writes it.
    IF t IS NULL OR j::text <> '{"$date":"' || t || '"}'
       OR t !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}' THEN
        RETURN NULL;
    END IF;
    k := ((make_date(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int)
           - DATE '1970-01-01')::bigint * 86400
          + substr(t, 12, 2)::int * 3600 + substr(t, 15, 2)::int * 60
          + substr(t, 18, 2)::int) * 1000000;
    r := substr(t, 20);
    IF substr(r, 1, 1) = '.' THEN
        k := k + substr(r, 2, 6)::int;
        r := substr(r, 8);
    END IF;
    IF r <> '' THEN
        s := CASE substr(r, 1, 1) WHEN '-' THEN -1 ELSE 1 END;
        k := k - s * ((substr(r, 2, 2)::int * 3600 + substr(r, 5, 2)::int * 60
                       + coalesce(nullif(substr(r, 8, 2), '')::int, 0))::bigint * 1000000
                      + coalesce(nullif(substr(r, 11, 6), '')::int, 0));
    END IF;
    RETURN k;
END
$fn$
"""


def _pg_column(field: str) -> str:
    marker = _marker(field).replace("'", "''")
    # PostgreSQL's JSON functions refuse a document holding the escape \u0000 (a string
    # with U+0000); \u0001 in its place changes no structure and no date.
    return (
        f"ALTER TABLE taskengine_items ADD COLUMN IF NOT EXISTS {PG_COLUMN[field]} bigint"
        f" GENERATED ALWAYS AS (CASE WHEN strpos(doc, '{marker}') > 0 THEN"
        " taskengine_date_key(replace(doc, E'\\\\u0000', E'\\\\u0001')::json"
        f" -> '{field}') END) STORED"
    )


def _pg_index(field: str) -> str:
    column = PG_COLUMN[field]
    return (
        f"CREATE INDEX IF NOT EXISTS taskengine_items_{_INDEX_NAME[field]}_due"
        f" ON taskengine_items (coll, env, {column}, id) WHERE {column} IS NOT NULL"
    )


PG_SCHEMA: Final = (
    _PG_FUNCTION,
    *(_pg_column(field) for field in DATE_FIELDS),
    *(_pg_index(field) for field in DATE_FIELDS),
)
"""The statements that create the PostgreSQL function, columns and indexes (idempotent;
adding the columns to a filled table rewrites it once)."""


def pg_due(field: str) -> str:
    """As :func:`sqlite_due`, for PostgreSQL (``%s`` placeholders)."""
    column = PG_COLUMN[field]
    return (
        f"SELECT id, {column} FROM taskengine_items"
        f" WHERE coll = %s AND env = %s AND {column} BETWEEN %s AND %s"
        f" ORDER BY {column}, id LIMIT %s"
    )


def pg_next(field: str) -> str:
    """As :func:`sqlite_next`, for PostgreSQL."""
    column = PG_COLUMN[field]
    return (
        f"SELECT min({column}) FROM taskengine_items"
        f" WHERE coll = %s AND env = %s AND {column} BETWEEN %s AND %s"
    )


def read_due(
    conn: Any,
    queries: Mapping[str, str],
    where: tuple[int, int],
    high: int,
    limit: int,
    unkey: Callable[[str], str] = str,
) -> list[tuple[str, datetime]]:
    """``due_items`` of an SQL adapter: each date field's query (``queries``: the
    adapter's :func:`sqlite_due` or :func:`pg_due`) over ``where`` (its ``coll, env``
    codes) up to the key ``high``, merged oldest first; stored ids read by ``unkey``."""
    rows: list[tuple[str, int]] = []
    if high >= MIN_KEY:
        for field in DATE_FIELDS:
            found = conn.execute(queries[field], (*where, MIN_KEY, high, limit)).fetchall()
            rows.extend((unkey(item_id), int(due)) for item_id, due in found)
    return merge_due(rows, limit)


def read_next_date(
    conn: Any, queries: Mapping[str, str], where: tuple[int, int]
) -> datetime | None:
    """``next_due_date`` of an SQL adapter: the least key of each date field's query
    (:func:`sqlite_next` or :func:`pg_next`) over ``where``, as a date."""
    keys: list[int] = []
    for field in DATE_FIELDS:
        found = conn.execute(queries[field], (*where, MIN_KEY, MAX_KEY)).fetchone()
        if found is not None and found[0] is not None:
            keys.append(int(found[0]))
    return key_date(min(keys)) if keys else None
