"""``PostgresStorage``'s tables: the schema and its version, the statements on item
rows, and the helpers reading and writing rows by key (collection rows, locked pages,
duplicates, write outcomes), used by :mod:`taskengine.storage.postgres`.

The items table holds the codec's exact JSON text (``doc``) and the ``jsonb`` generated
from it (``data``, ``NULL`` for a text holding U+0000); ids are ``text`` in code point
order (``COLLATE "C"``). Statements join a batch on all three key columns (see
:data:`_BATCH`). Nothing here opens a transaction: every function runs on the
connection it is given.
"""

from __future__ import annotations

from collections.abc import Mapping

from taskengine.errors import (
    CollectionNotFound,
    SandboxNotEnabled,
    StorageError,
)
from taskengine.storage._pgdatabase import (
    Connection,
    PgDatabase,
    PostgresError,
    TransactionStatus,
)
from taskengine.storage._pgkeys import key, lower_bound, unkey
from taskengine.storage._schedulesql import (
    PG_SCHEMA,
)
from taskengine.storage.base import (
    Environment,
    ItemFilter,
    Page,
    WriteResult,
)
from taskengine.storage.codec import decode, lookup_id

COMPONENT = "storage"
UNDECIDED_INDEX = "taskengine_items_undecided"
"""The partial index of the rows without ``jsonb`` (schema version 3)."""
SCHEMA_VERSION = 3
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS taskengine_collections ("
    " id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    ' name TEXT COLLATE "C" NOT NULL UNIQUE,'
    " sandbox BOOLEAN NOT NULL,"
    " publish_plugin BOOLEAN NOT NULL)",
    # fillfactor 90 leaves room in each page for updated row versions, so more replaces
    # are HOT updates, which touch no index.
    "CREATE TABLE IF NOT EXISTS taskengine_items ("
    " coll INTEGER NOT NULL,"
    " env SMALLINT NOT NULL,"
    ' id TEXT COLLATE "C" NOT NULL,'
    " doc TEXT NOT NULL,"
    " data JSONB GENERATED ALWAYS AS"
    " (CASE WHEN strpos(doc, E'\\\\u0000') = 0 THEN doc::jsonb END) STORED,"
    " PRIMARY KEY (coll, env, id))"
    " WITH (fillfactor = 90)",
    *PG_SCHEMA,  # version 2: the scheduled dates (ScheduleIndex)
    # Version 3: the rows without jsonb, which a filter's SQL form leaves undecided. The
    # predicate is the SQL conditions' ``undecided`` text itself, so the planner proves a
    # query's ``data IS NULL`` implies it and reads this (nearly always empty) index.
    f"CREATE INDEX IF NOT EXISTS {UNDECIDED_INDEX}"
    " ON taskengine_items (coll, env, id) WHERE data IS NULL",
)

_ENV_CODE = {Environment.LIVE: 0, Environment.SANDBOX: 1}
_MAX_FETCH = 2**62  # a LIMIT larger than any table, still a bigint
_CHUNK = 1000  # items per statement of a batched write
_COUNT_PAGE = 4096  # rows per read of a filtered count

_LOOKUP = "SELECT id, sandbox FROM taskengine_collections WHERE name = %s"
_LOOKUP_LOCKED = _LOOKUP + " FOR KEY SHARE"
_SCAN = (
    "SELECT doc FROM taskengine_items WHERE coll = %s AND env = %s AND id {} %s"
    " ORDER BY id LIMIT %s"
)
_SCAN_AFTER = _SCAN.format(">")
_SCAN_FROM = _SCAN.format(">=")
_SCAN_FIRST = "SELECT doc FROM taskengine_items WHERE coll = %s AND env = %s ORDER BY id LIMIT %s"
# Inside a transaction a scan locks what it returns (see PostgresStorage.scan): the ids of
# the page first, then the rows of that key range, locked, as they are once their locks
# are free (a row deleted meanwhile is left out; the page's cursor stays the same).
_WINDOW = (
    "SELECT id FROM taskengine_items WHERE coll = %s AND env = %s AND id {} %s ORDER BY id LIMIT %s"
)
_WINDOW_AFTER = _WINDOW.format(">")
_WINDOW_FROM = _WINDOW.format(">=")
_WINDOW_FIRST = "SELECT id FROM taskengine_items WHERE coll = %s AND env = %s ORDER BY id LIMIT %s"
_LOCKED = (
    "SELECT doc FROM taskengine_items WHERE coll = %s AND env = %s AND id {} %s AND id <= %s"
    " ORDER BY id FOR UPDATE"
)
_LOCKED_AFTER = _LOCKED.format(">")
_LOCKED_FROM = _LOCKED.format(">=")
_COUNT_ROWS = (
    "SELECT id, doc FROM taskengine_items WHERE coll = %s AND env = %s AND id > %s"
    " ORDER BY id LIMIT %s"
)
_COUNT = "SELECT count(*) FROM taskengine_items WHERE coll = %s AND env = %s"
_POINT_FIRST = (
    "SELECT id FROM taskengine_items WHERE coll = %s AND env = %s ORDER BY id LIMIT 1 OFFSET %s"
)
_POINT_AFTER = (
    "SELECT id FROM taskengine_items WHERE coll = %s AND env = %s AND id > %s"
    " ORDER BY id LIMIT 1 OFFSET %s"
)
_GET = "SELECT doc FROM taskengine_items WHERE coll = %s AND env = %s AND id = %s"
_INSERT = (
    "INSERT INTO taskengine_items (coll, env, id, doc)"
    " SELECT %s, %s, u.id, u.doc FROM unnest(%b::text[], %b::text[]) AS u(id, doc)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
# The batch's collection and environment are columns of the batch too (the server
# repeats them for each id): joined column to column, they leave the planner no
# "coll = $1 AND env = $2" range to estimate. Without statistics (a table filled a moment
# ago, before autovacuum analyzed it) that estimate is a few rows whatever the size, and
# reading the whole range for every batch looks cheapest: quadratic. Joined on all three
# key columns, the batch is weighed against the whole table, whose size the planner
# always knows: one index probe per id, or one pass over a table small enough.
_BATCH = (
    "unnest(array_fill(%s::integer, ARRAY[%s]), array_fill(%s::smallint, ARRAY[%s]),"
    " %b::text[]{}) AS u(coll, env, id{})"
)
_ON_KEY = "t.coll = u.coll AND t.env = u.env AND t.id = u.id"
_UPDATE = (
    f"UPDATE taskengine_items AS t SET doc = u.doc FROM {_BATCH.format(', %b::text[]', ', doc')}"
    f" WHERE {_ON_KEY} RETURNING t.id"
)
_DELETE = (
    f"DELETE FROM taskengine_items AS t USING {_BATCH.format('', '')} WHERE {_ON_KEY}"
    " RETURNING t.id"
)
_EXISTING = f"SELECT t.id FROM taskengine_items AS t JOIN {_BATCH.format('', '')} ON {_ON_KEY}"


def _check_encoding(database: PgDatabase) -> None:
    """Refuse a database whose encoding is not UTF-8: ``COLLATE "C"`` orders its bytes,
    which is code point order only in UTF-8, and other encodings cannot hold every
    string."""
    with database.read() as conn:
        row = conn.execute("SELECT current_setting('server_encoding')").fetchone()
    value = row[0] if row else b"?"
    # A SQL_ASCII database hands text back as bytes.
    encoding = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise PostgresError(
            "use the database for items",
            database.location,
            f"its encoding is {encoding}; PostgresStorage needs a UTF8 database "
            "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)",
        )


def _name_key(name: object) -> str | None:
    """The stored form of a collection name, or ``None`` when none can be stored."""
    if type(name) is not str or not name or not (name.isascii() or lookup_id(name)):
        return None
    return key(name)


_STATISTICS = (
    "SELECT c.reltuples, s.n_mod_since_analyze FROM pg_class AS c"
    " LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid"
    " WHERE c.oid = 'taskengine_items'::regclass"
)


def _analyze(conn: Connection) -> bool:
    """``ANALYZE`` the items table on ``conn`` unless it is inside a transaction (then
    nothing: a failing statement would abort the caller's work) or the server predates
    PostgreSQL 12, without waiting for a lock another ``ANALYZE`` or ``VACUUM`` holds
    (``SKIP_LOCKED``); whether it ran. A role that may not analyze the table gets a
    server warning, not an error."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    if conn.info.server_version < 120000:  # no SKIP_LOCKED
        return False
    conn.execute("ANALYZE (SKIP_LOCKED) taskengine_items")
    return True


def _has_statistics(conn: Connection) -> bool:
    """Whether the planner knows the items table: analyzed (``reltuples`` is -1 before,
    0 before PostgreSQL 14), and not changed by more rows than it held since."""
    row = conn.execute(_STATISTICS).fetchone()
    if row is None or row[0] is None or row[0] <= 0:
        return False
    return row[1] is None or row[1] <= row[0]


def _target(conn: Connection, collection: str, env: Environment, *, lock: bool = False) -> int:
    """The collection's row id, after checking it exists and has the environment.

    With ``lock``, the collection's row stays locked against ``drop_collection`` until
    the transaction ends.
    """
    stored = _name_key(collection)
    row = None
    if stored is not None:
        row = conn.execute(_LOOKUP_LOCKED if lock else _LOOKUP, (stored,)).fetchone()
    if row is None:
        raise CollectionNotFound(collection)
    if env is Environment.SANDBOX and not row[1]:
        raise SandboxNotEnabled(collection)
    coll: int = row[0]
    return coll


def _locked_page(
    conn: Connection,
    coll: int,
    env: int,
    after: str | None,
    limit: int,
    fetch: int,
    filter: ItemFilter | None,
) -> Page:
    """A scan page inside a transaction, its rows locked (see :meth:`PostgresStorage.scan`)."""
    if after is None:
        ids = [row[0] for row in conn.execute(_WINDOW_FIRST, (coll, env, fetch))]
        lower, inclusive = "", True
    else:
        lower, inclusive = lower_bound(after)
        sql = _WINDOW_FROM if inclusive else _WINDOW_AFTER
        ids = [row[0] for row in conn.execute(sql, (coll, env, lower, fetch))]
    more = len(ids) > limit
    if more:
        del ids[limit:]
    if not ids:
        return Page([], None)
    sql = _LOCKED_FROM if inclusive else _LOCKED_AFTER
    rows = conn.execute(sql, (coll, env, lower, ids[-1])).fetchall()
    items = [decode(doc) for (doc,) in rows]
    if filter is not None:
        items = [item for item in items if filter(item)]
    return Page(items, unkey(ids[-1]) if more else None)


def _key_columns(coll: int, env: Environment, stored: list[str]) -> tuple[int | list[str], ...]:
    """The parameters of :data:`_BATCH` for a batch of stored keys: the collection and
    environment (repeated by the server) and the keys."""
    return coll, len(stored), _ENV_CODE[env], len(stored), stored


def _first_duplicate(
    conn: Connection, coll: int, env: Environment, ids: list[str], stored: list[str]
) -> str:
    """The first of ``ids`` (in order) that is stored or repeats an earlier one."""
    found: set[str] = set()
    for start in range(0, len(stored), _CHUNK):
        columns = _key_columns(coll, env, stored[start : start + _CHUNK])
        rows = conn.execute(_EXISTING, columns).fetchall()
        found.update(row[0] for row in rows)
    seen: set[str] = set()
    for item_id, stored_key in zip(ids, stored, strict=True):
        if stored_key in found or item_id in seen:
            return item_id
        seen.add(item_id)
    raise StorageError("no duplicate _id in a batch that repeats one")  # pragma: no cover


def _outcome(wanted: Mapping[str, object], written: set[str]) -> WriteResult:
    """Each wanted id once, in order: done when written, else missing."""
    done = tuple(item_id for item_id in wanted if item_id in written)
    missing = tuple(item_id for item_id in wanted if item_id not in written)
    return WriteResult(done, missing)
