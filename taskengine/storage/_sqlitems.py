"""The SQLite item tables: their schema, their statements, and reads and writes of rows.

Owns everything :class:`~taskengine.storage.sqlite.SQLiteStorage` says to SQLite about
``taskengine_collections`` and ``taskengine_items`` by key: the schema (component
``"storage"``, version 2), the statement texts, the collections' rows
(:func:`insert_collection`, :func:`read_collection`, :func:`delete_collection`), the
collection lookup of every item call (:func:`target`) and the row-level work of a batch
(:func:`insert_rows`,
:func:`replace_rows`, :func:`delete_rows`, :func:`split_points`). Every function here runs
on a connection the caller holds the database's lock on (``Database.read()`` or
``Database.transaction()``); a function that needs a savepoint opens it on the caller's
:class:`~taskengine.storage._database.Database`, inside the caller's transaction. Ids go
``IN (...)`` in chunks of 500, well under every SQLite's variable limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    SandboxNotEnabled,
    StorageError,
)
from taskengine.storage._database import Database
from taskengine.storage._estimate import split_by_query
from taskengine.storage._schedulesql import SQLITE_PUBLISH_ID, SQLITE_SCHEMA
from taskengine.storage.base import CollectionInfo, Environment, WriteResult
from taskengine.storage.codec import lookup_id

__all__ = [
    "COMPONENT",
    "COUNT",
    "ENV_CODE",
    "HAS_RETURNING",
    "MAX_FETCH",
    "SCHEMA",
    "SCHEMA_VERSION",
    "delete_collection",
    "delete_keys",
    "delete_rows",
    "get_row",
    "insert_collection",
    "insert_rows",
    "read_collection",
    "read_collections",
    "read_rows",
    "replace_rows",
    "split_points",
    "target",
]

COMPONENT = "storage"
"""The schema component of the item tables in ``taskengine_schema``."""
SCHEMA_VERSION = 2
"""The item tables' schema version (2: the scheduled-date indexes)."""
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS taskengine_collections ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " sandbox INTEGER NOT NULL,"
    " publish_plugin INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS taskengine_items ("
    " coll INTEGER NOT NULL,"
    " env INTEGER NOT NULL,"
    " id TEXT NOT NULL,"
    " doc TEXT NOT NULL,"
    " PRIMARY KEY (coll, env, id)) WITHOUT ROWID",
    *SQLITE_SCHEMA,  # version 2: the scheduled dates (ScheduleIndex)
)
"""The item tables, as ``CREATE ... IF NOT EXISTS`` statements."""

ENV_CODE = {Environment.LIVE: 0, Environment.SANDBOX: 1}
"""The ``env`` column's value for each environment."""
MAX_FETCH = 2**62
"""A ``LIMIT`` larger than any table, still a 64-bit SQLite integer."""
_CHUNK = 500  # ids per IN (...) list; well under every SQLite's variable limit
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
"""Whether this SQLite has ``RETURNING`` (3.35 and later)."""

_SELECT_COLLECTION = "SELECT id, sandbox FROM taskengine_collections WHERE name = ?"
_SCAN_FIRST = "SELECT id, doc FROM taskengine_items WHERE coll = ? AND env = ? ORDER BY id LIMIT ?"
_SCAN_AFTER = (
    "SELECT id, doc FROM taskengine_items WHERE coll = ? AND env = ? AND id > ? ORDER BY id LIMIT ?"
)
_INSERT = "INSERT INTO taskengine_items (coll, env, id, doc) VALUES (?, ?, ?, ?)"
_UPDATE = "UPDATE taskengine_items SET doc = ? WHERE coll = ? AND env = ? AND id = ?"
_DELETE = "DELETE FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"
_GET = "SELECT doc FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"
COUNT = "SELECT count(*) FROM taskengine_items WHERE coll = ? AND env = ?"
"""The number of items of an item set."""
_POINT_FIRST = (
    "SELECT id FROM taskengine_items WHERE coll = ? AND env = ? ORDER BY id LIMIT 1 OFFSET ?"
)
_POINT_AFTER = (
    "SELECT id FROM taskengine_items WHERE coll = ? AND env = ? AND id > ?"
    " ORDER BY id LIMIT 1 OFFSET ?"
)


def insert_collection(conn: sqlite3.Connection, info: CollectionInfo) -> None:
    """Add the collection's row; a publish-plugin collection gets a negative id.

    Raises:
        CollectionExists: a collection of that name exists.
    """
    if conn.execute(_SELECT_COLLECTION, (info.name,)).fetchone() is not None:
        raise CollectionExists(info.name)
    conn.execute(
        "INSERT INTO taskengine_collections (id, name, sandbox, publish_plugin)"
        f" VALUES ({SQLITE_PUBLISH_ID if info.publish_plugin else 'NULL'}, ?, ?, ?)",
        (info.name, int(info.sandbox_enabled), int(info.publish_plugin)),
    )


def read_collection(conn: sqlite3.Connection, name: str) -> CollectionInfo | None:
    """The collection of that name, or ``None``."""
    row = conn.execute(
        "SELECT name, sandbox, publish_plugin FROM taskengine_collections WHERE name = ?",
        (name,),
    ).fetchone()
    return None if row is None else CollectionInfo(row[0], bool(row[1]), bool(row[2]))


def read_collections(conn: sqlite3.Connection) -> list[CollectionInfo]:
    """Every collection, in no particular order."""
    rows = conn.execute("SELECT name, sandbox, publish_plugin FROM taskengine_collections")
    return [CollectionInfo(name, bool(box), bool(plugin)) for name, box, plugin in rows]


def delete_collection(conn: sqlite3.Connection, name: str) -> None:
    """Delete the collection's row and its items.

    Raises:
        CollectionNotFound: no collection of that name (or a name that is not a string).
    """
    row = None
    if type(name) is str:
        row = conn.execute(_SELECT_COLLECTION, (name,)).fetchone()
    if row is None:
        raise CollectionNotFound(name)
    conn.execute("DELETE FROM taskengine_items WHERE coll = ?", (row[0],))
    conn.execute("DELETE FROM taskengine_collections WHERE id = ?", (row[0],))


def read_rows(
    conn: sqlite3.Connection, coll: int, env: int, after: str | None, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` ``(id, doc)`` rows of the item set in ``_id`` order, after ``after``."""
    if after is None:
        return conn.execute(_SCAN_FIRST, (coll, env, limit)).fetchall()
    return conn.execute(_SCAN_AFTER, (coll, env, after, limit)).fetchall()


def get_row(conn: sqlite3.Connection, coll: int, env: int, key: str) -> str | None:
    """The stored JSON text of the item with this ``_id``, or ``None``."""
    row = conn.execute(_GET, (coll, env, key)).fetchone()
    return None if row is None else str(row[0])


def insert_rows(
    database: Database,
    conn: sqlite3.Connection,
    coll: int,
    env: int,
    collection: str,
    encoded: Sequence[tuple[str, str]],
) -> int:
    """Insert ``(id, JSON text)`` rows, all or nothing; how many (all of them).

    Raises:
        DuplicateItem: the first id (in order) that is stored or repeats an earlier one;
            nothing of the batch is left written.
    """
    ids = [item_id for item_id, _ in encoded]
    if len(set(ids)) == len(ids):
        try:
            # A savepoint: when SQLite refuses a row, the rows this batch already
            # wrote are undone before the offending id is looked for.
            with database.transaction():
                conn.executemany(_INSERT, [(coll, env, item_id, text) for item_id, text in encoded])
        except StorageError as exc:
            if not isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise
        else:
            return len(encoded)
    raise DuplicateItem(collection, _first_duplicate(conn, coll, env, ids))


def replace_rows(
    conn: sqlite3.Connection, coll: int, env: int, batch: dict[str, str]
) -> WriteResult:
    """Overwrite the stored rows of ``{id: JSON text}``; the ids written and those missing."""
    rows = [(text, coll, env, item_id) for item_id, text in batch.items()]
    changed = conn.executemany(_UPDATE, rows).rowcount
    if changed == len(batch):  # the common case: every id is stored
        return WriteResult(tuple(batch), ())
    # An UPDATE of an id that is not stored changes nothing, so which ones were
    # written is simply which ones are stored.
    stored = _existing(conn, coll, env, list(batch))
    done = tuple(item_id for item_id in batch if item_id in stored)
    missing = tuple(item_id for item_id in batch if item_id not in stored)
    return WriteResult(done, missing)


def delete_rows(
    database: Database,
    conn: sqlite3.Connection,
    coll: int,
    env: int,
    wanted: dict[str, None],
    keys: list[str],
) -> WriteResult:
    """Delete items by ``_id``; the ids deleted and those missing, each once, in order.

    ``wanted`` and ``keys`` are :func:`delete_keys` of the ids. The common case (every id
    stored) is one ``DELETE ... IN (...)`` per chunk in a savepoint, checked by its row
    count; when fewer rows went, the savepoint is undone and the chunks are deleted again
    with ``RETURNING`` to learn which ids were missing.
    """
    if len(keys) == len(wanted):
        try:
            with database.transaction():
                if _delete_counted(conn, coll, env, keys) != len(keys):
                    raise _SomeMissing
        except _SomeMissing:
            pass
        else:
            return WriteResult(tuple(wanted), ())
    gone = _delete(conn, coll, env, keys)
    done = tuple(item_id for item_id in wanted if item_id in gone)
    missing = tuple(item_id for item_id in wanted if item_id not in gone)
    return WriteResult(done, missing)


def split_points(conn: sqlite3.Connection, coll: int, env: int, parts: int) -> list[str]:
    """Up to ``parts - 1`` ids splitting the item set into ``parts`` ranges of about equal
    size, ascending: a count and one walk of the primary key (:func:`split_by_query`); no
    document is read."""
    return split_by_query(
        lambda sql, args: conn.execute(sql, args).fetchall(),
        COUNT,
        _POINT_FIRST,
        _POINT_AFTER,
        coll,
        env,
        parts,
    )


def target(conn: sqlite3.Connection, collection: str, env: Environment) -> int:
    """The collection's row id, after checking it exists and has the environment."""
    row = None
    if type(collection) is str:
        row = conn.execute(_SELECT_COLLECTION, (collection,)).fetchone()
    if row is None:
        raise CollectionNotFound(collection)
    if env is Environment.SANDBOX and not row[1]:
        raise SandboxNotEnabled(collection)
    coll: int = row[0]
    return coll


def _first_duplicate(conn: sqlite3.Connection, coll: int, env: int, ids: list[str]) -> str:
    """The first of ``ids`` (in order) that is stored or repeats an earlier one.

    Must run on the item set as it was before the batch (the failed insert undone).
    """
    stored = _existing(conn, coll, env, ids)
    seen: set[str] = set()
    for item_id in ids:
        if item_id in stored or item_id in seen:
            return item_id
        seen.add(item_id)
    raise StorageError(  # pragma: no cover - SQLite refused a batch without a duplicate
        "SQLite refused an insert batch that has no duplicate _id"
    )


class _SomeMissing(Exception):
    """A counted delete removed fewer rows than ids: undo it and learn which ones."""


def delete_keys(ids: Sequence[str]) -> tuple[dict[str, None], list[str]]:
    """Each id once, in order; and those of them that a stored item can have.

    Raises:
        InvalidItem: an id that is not a string.
    """
    if type(ids) is not list and type(ids) is not tuple:
        ids = list(ids)  # read twice below, so any iterable works
    if set(map(type, ids)) <= {str}:
        wanted = dict.fromkeys(ids)
        if "".join(wanted).isascii() and "" not in wanted:
            return wanted, list(wanted)  # the common case, checked in C
    keys = list(map(lookup_id, ids))  # raises on the first id that is not a string
    wanted = dict.fromkeys(ids)
    return wanted, list(dict.fromkeys(key for key in keys if key is not None))


_DELETE_IN = "DELETE FROM taskengine_items WHERE coll = ? AND env = ? AND id IN ({})"
_DELETE_FULL = _DELETE_IN.format(",".join("?" * _CHUNK))
_DELETE_FULL_RETURNING = _DELETE_FULL + " RETURNING id"


def _delete_counted(conn: sqlite3.Connection, coll: int, env: int, ids: list[str]) -> int:
    """Delete ``ids`` (each once) from the item set; how many rows went."""
    total = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        sql = (
            _DELETE_FULL if len(chunk) == _CHUNK else _DELETE_IN.format(",".join("?" * len(chunk)))
        )
        total += conn.execute(sql, (coll, env, *chunk)).rowcount
    return total


def _delete(conn: sqlite3.Connection, coll: int, env: int, ids: list[str]) -> set[str]:
    """Delete ``ids`` from the item set; the ones that were stored (and are now gone).

    One ``DELETE ... IN (...) RETURNING id`` per chunk on SQLite 3.35 and later; before
    that, a lookup of the stored ids and then one ``DELETE`` per stored id.
    """
    if not HAS_RETURNING:
        found = _existing(conn, coll, env, ids)
        conn.executemany(_DELETE, [(coll, env, item_id) for item_id in found])
        return found
    gone: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        if len(chunk) == _CHUNK:
            sql = _DELETE_FULL_RETURNING
        else:
            sql = _DELETE_IN.format(",".join("?" * len(chunk))) + " RETURNING id"
        gone.update(row[0] for row in conn.execute(sql, (coll, env, *chunk)))
    return gone


def _existing(conn: sqlite3.Connection, coll: int, env: int, ids: list[str]) -> set[str]:
    """Which of ``ids`` are stored in the item set."""
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT id FROM taskengine_items WHERE coll = ? AND env = ? AND id IN ({marks})",
            (coll, env, *chunk),
        )
        found.update(row[0] for row in rows)
    return found
