"""``SQLiteStorage``: items as JSON text in a SQLite file (or ``":memory:"``).

Layout (component ``"storage"``, schema version 2 in ``taskengine_schema``)::

    taskengine_collections(id INTEGER PRIMARY KEY, name TEXT UNIQUE, sandbox, publish_plugin)
    taskengine_items(coll, env, id TEXT, doc TEXT, PRIMARY KEY (coll, env, id)) WITHOUT ROWID

plus a partial expression index per scheduled-date field over the items of publish-plugin
collections, which have negative ids (version 2, created in place on a version 1 file;
:mod:`taskengine.storage._schedulesql`). ``env`` is 0 for ``LIVE`` and
1 for ``SANDBOX``. Items are clustered by their key, so a
scan page is one range read (``WHERE coll = ? AND env = ? AND id > ? ORDER BY id LIMIT
?``) and each row's JSON is decoded exactly once. SQLite compares ``TEXT`` with the
``BINARY`` collation, i.e. by UTF-8 bytes, which is code point order: the same order as
Python ``str``. A compiled filter runs inside the query, over ``doc`` with SQLite's JSON
functions (:mod:`taskengine.storage._sqlfilter`). Connections, locking, transactions and
error translation belong to :class:`taskengine.storage._database.Database`, which this
storage may share with the task store.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    SandboxNotEnabled,
    StorageError,
)
from taskengine.storage._database import Database
from taskengine.storage._estimate import estimate_on_reads
from taskengine.storage._schedulesql import (
    SQLITE_PUBLISH_ID,
    SQLITE_SCHEMA,
    read_due,
    read_next_date,
    sqlite_due,
    sqlite_next,
)
from taskengine.storage._sqlchange import change_rows
from taskengine.storage._sqlfilter import (
    BACKEND,
    DOCUMENT,
    Reader,
    count_pushed,
    pushed_condition,
    scan_pushed,
)
from taskengine.storage.base import (
    CollectionInfo,
    Count,
    Environment,
    Item,
    ItemFilter,
    Page,
    Storage,
    WriteResult,
    check_after,
    check_limit,
    check_name,
)
from taskengine.storage.changes import (
    ChangeResult,
    ChangingStorage,
    ItemChange,
    change_by_scan,
    keep_only_if_unchanged,
)
from taskengine.storage.codec import admit_text, count_accepted, decode, lookup_id
from taskengine.storage.schedule import (
    DATE_FIELDS,
    now_key,
)

__all__ = ["SQLiteStorage"]

COMPONENT = "storage"
SCHEMA_VERSION = 2
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

_ENV_CODE = {Environment.LIVE: 0, Environment.SANDBOX: 1}
_MAX_FETCH = 2**62  # a LIMIT larger than any table, still a 64-bit SQLite integer
_CHUNK = 500  # ids per IN (...) list; well under every SQLite's variable limit
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35)

_SELECT_COLLECTION = "SELECT id, sandbox FROM taskengine_collections WHERE name = ?"
_SCAN_FIRST = "SELECT id, doc FROM taskengine_items WHERE coll = ? AND env = ? ORDER BY id LIMIT ?"
_SCAN_AFTER = (
    "SELECT id, doc FROM taskengine_items WHERE coll = ? AND env = ? AND id > ? ORDER BY id LIMIT ?"
)
_INSERT = "INSERT INTO taskengine_items (coll, env, id, doc) VALUES (?, ?, ?, ?)"
_UPDATE = "UPDATE taskengine_items SET doc = ? WHERE coll = ? AND env = ? AND id = ?"
_DELETE = "DELETE FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"
_GET = "SELECT doc FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"
_COUNT = "SELECT count(*) FROM taskengine_items WHERE coll = ? AND env = ?"
_POINT_FIRST = (
    "SELECT id FROM taskengine_items WHERE coll = ? AND env = ? ORDER BY id LIMIT 1 OFFSET ?"
)
_POINT_AFTER = (
    "SELECT id FROM taskengine_items WHERE coll = ? AND env = ? AND id > ?"
    " ORDER BY id LIMIT 1 OFFSET ?"
)
_second = operator.itemgetter(1)
_COUNT_PAGE = 4096  # rows per read of a filtered count (the lock is released between)


class SQLiteStorage(Storage, ChangingStorage):
    """Items in a SQLite database: durable, shareable with the task store, thread-safe.

    Args:
        path: a file path, ``":memory:"``, or an open :class:`taskengine.storage._database.Database`
            to share (the storage then does not close it).
        timeout: seconds to wait for another process's write lock (when opening a path).

    Every call holds the database's lock; writes run in :meth:`Database.transaction`, so
    a write made inside :meth:`atomic` (by this storage or by a task store on the same
    :attr:`database`) commits with the rest of the block or not at all.

    Raises:
        StorageError: the file cannot be opened or created, is not a SQLite database, or
            was written by a newer taskengine.
    """

    atomic_rolls_back = True
    scan_filters_exactly = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that overrides :meth:`scan`, :meth:`replace_items` or
        :meth:`delete_items` and not :meth:`change_matching` loses the capability
        (``change_matching = None``), so the engine runs its batches through them."""
        super().__init_subclass__(**kwargs)
        keep_only_if_unchanged(cls, SQLiteStorage)

    def __init__(self, path: str | os.PathLike[str] | Database, *, timeout: float = 30.0) -> None:
        if isinstance(path, Database):
            self.database = path
            self._owns_database = False
        else:
            self.database = Database(path, timeout=timeout)
            self._owns_database = True
        try:
            self.database.ensure_schema(COMPONENT, SCHEMA_VERSION, SCHEMA)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.database.path!r}>"

    def __enter__(self) -> SQLiteStorage:
        """Use as a context manager: :meth:`close` on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the storage."""
        self.close()

    def close(self) -> None:
        """Close the database if this storage opened it; later calls raise StorageError."""
        if self._owns_database:
            self.database.close()

    # -- collections ---------------------------------------------------------------------

    def create_collection(
        self, name: str, *, sandbox: bool = False, publish_plugin: bool = False
    ) -> CollectionInfo:
        """Create an empty collection (see :meth:`Storage.create_collection`)."""
        info = CollectionInfo(check_name(name), bool(sandbox), bool(publish_plugin))
        with self.database.transaction() as conn:
            if conn.execute(_SELECT_COLLECTION, (info.name,)).fetchone() is not None:
                raise CollectionExists(info.name)
            conn.execute(
                "INSERT INTO taskengine_collections (id, name, sandbox, publish_plugin)"
                f" VALUES ({SQLITE_PUBLISH_ID if info.publish_plugin else 'NULL'}, ?, ?, ?)",
                (info.name, int(info.sandbox_enabled), int(info.publish_plugin)),
            )
        return info

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection (see :meth:`Storage.collection_info`)."""
        with self.database.read() as conn:
            row = None
            if type(name) is str:
                row = conn.execute(
                    "SELECT name, sandbox, publish_plugin FROM taskengine_collections"
                    " WHERE name = ?",
                    (name,),
                ).fetchone()
        if row is None:
            raise CollectionNotFound(name)
        return CollectionInfo(row[0], bool(row[1]), bool(row[2]))

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""
        with self.database.read() as conn:
            rows = conn.execute(
                "SELECT name, sandbox, publish_plugin FROM taskengine_collections"
            ).fetchall()
        infos = [CollectionInfo(name, bool(box), bool(plugin)) for name, box, plugin in rows]
        infos.sort(key=lambda info: info.name)
        return infos

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its items (see :meth:`Storage.drop_collection`)."""
        with self.database.transaction() as conn:
            row = None
            if type(name) is str:
                row = conn.execute(_SELECT_COLLECTION, (name,)).fetchone()
            if row is None:
                raise CollectionNotFound(name)
            conn.execute("DELETE FROM taskengine_items WHERE coll = ?", (row[0],))
            conn.execute("DELETE FROM taskengine_collections WHERE id = ?", (row[0],))

    # -- items ---------------------------------------------------------------------------

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = 1000,
        filter: ItemFilter | None = None,
    ) -> Page:
        """A page in ``_id`` order (see :meth:`Storage.scan`).

        Reads ``limit`` stored items at most (plus one key, to know whether more are
        left); with a filter, only the accepted ones are returned. A filter that offers
        a SQL condition (a compiled ``taskengine.Filter``) runs inside the query
        instead, and the page then holds ``limit`` accepted items unless the
        collection ends first (see :mod:`taskengine.storage._sqlfilter`).
        """
        check_limit(limit)
        check_after(after)
        env = Environment.coerce(environment)
        if filter is not None:
            condition = pushed_condition(filter)
            if condition is not None:
                return scan_pushed(
                    self._reader(collection, env), condition, filter, after, min(limit, _MAX_FETCH)
                )
        fetch = min(limit, _MAX_FETCH) + 1
        with self.database.read() as conn:
            coll = _target(conn, collection, env)
            if after is None:
                rows = conn.execute(_SCAN_FIRST, (coll, _ENV_CODE[env], fetch)).fetchall()
            else:
                rows = conn.execute(_SCAN_AFTER, (coll, _ENV_CODE[env], after, fetch)).fetchall()
        cursor: str | None = None
        if len(rows) > limit:
            del rows[limit:]
            cursor = rows[-1][0]
        if filter is None:
            items = [decode(doc) for _, doc in rows]
        else:
            items = [item for item in [decode(doc) for _, doc in rows] if filter(item)]
        return Page(items, cursor)

    def count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """The exact number of items (that ``filter`` accepts)."""
        env = Environment.coerce(environment)
        if filter is None:
            with self.database.read() as conn:
                coll = _target(conn, collection, env)
                return Count(int(conn.execute(_COUNT, (coll, _ENV_CODE[env])).fetchone()[0]), True)
        condition = pushed_condition(filter)
        if condition is not None:
            return Count(count_pushed(self._reader(collection, env), condition, filter), True)
        # Rows are read in large keyset pages (the lock is held while reading, not
        # while decoding) and each document is decoded once, straight into the filter:
        # no Page, no per-item copy or list, no generator.
        code = _ENV_CODE[env]
        total = 0
        after: str | None = None
        while True:
            with self.database.read() as conn:
                coll = _target(conn, collection, env)
                if after is None:
                    rows = conn.execute(_SCAN_FIRST, (coll, code, _COUNT_PAGE)).fetchall()
                else:
                    rows = conn.execute(_SCAN_AFTER, (coll, code, after, _COUNT_PAGE)).fetchall()
            total += count_accepted(map(_second, rows), filter)
            if len(rows) < _COUNT_PAGE:
                return Count(total, exact=True)
            after = rows[-1][0]

    def estimate_count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """How many items ``filter`` accepts, for a task's estimate: exact up to 50,000
        items, else estimated from a sample of 4,096 (see
        :mod:`taskengine.storage._estimate`)."""
        env = Environment.coerce(environment)
        if filter is None:
            return self.count(collection, env)
        return estimate_on_reads(
            self.database.read,
            lambda conn: _target(conn, collection, env),
            _ENV_CODE[env],
            "?",
            pushed_condition(filter),
            filter,
            lambda: self.count(collection, env, filter),
        )

    def _reader(self, collection: str, env: Environment) -> Reader:
        """Opens a read of one item set: ``(connection, collection row id, env code)``."""
        database, code = self.database, _ENV_CODE[env]

        @contextlib.contextmanager
        def read() -> Iterator[tuple[sqlite3.Connection, int, int]]:
            with database.read() as conn:
                yield conn, _target(conn, collection, env), code

        return read

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items, all or nothing (see :meth:`Storage.insert_items`)."""
        encoded = [admit_text(item) for item in items]
        env = Environment.coerce(environment)
        code = _ENV_CODE[env]
        ids = [item_id for item_id, _ in encoded]
        with self.database.transaction() as conn:
            coll = _target(conn, collection, env)
            if len(set(ids)) == len(ids):
                try:
                    # A savepoint: when SQLite refuses a row, the rows this batch already
                    # wrote are undone before the offending id is looked for.
                    with self.database.transaction():
                        conn.executemany(
                            _INSERT, [(coll, code, item_id, text) for item_id, text in encoded]
                        )
                except StorageError as exc:
                    if not isinstance(exc.__cause__, sqlite3.IntegrityError):
                        raise
                else:
                    return len(encoded)
            raise DuplicateItem(collection, _first_duplicate(conn, coll, code, ids))

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            coll = _target(conn, collection, env)
            key = lookup_id(item_id)
            if key is None:
                return None
            row = conn.execute(_GET, (coll, _ENV_CODE[env], key)).fetchone()
        return None if row is None else decode(row[0])

    def find(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Iterator[Item]:
        """Every accepted item in ``_id`` order (see :meth:`Storage.find`)."""
        first = self.scan(collection, environment, filter=filter)
        return self._find(collection, environment, filter, first)

    def _find(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None,
        page: Page,
    ) -> Iterator[Item]:
        while True:
            yield from page.items
            if page.cursor is None:
                return
            page = self.scan(collection, environment, after=page.cursor, filter=filter)

    def replace_items(
        self,
        collection: str,
        environment: Environment | str,
        items: Sequence[Mapping[str, Any]],
    ) -> WriteResult:
        """Overwrite stored items by ``_id`` (see :meth:`Storage.replace_items`)."""
        batch: dict[str, str] = {}
        for item_id, text in map(admit_text, items):
            batch[item_id] = text
        env = Environment.coerce(environment)
        code = _ENV_CODE[env]
        with self.database.transaction() as conn:
            coll = _target(conn, collection, env)
            rows = [(text, coll, code, item_id) for item_id, text in batch.items()]
            changed = conn.executemany(_UPDATE, rows).rowcount
            if changed == len(batch):  # the common case: every id is stored
                return WriteResult(tuple(batch), ())
            # An UPDATE of an id that is not stored changes nothing, so which ones were
            # written is simply which ones are stored.
            stored = _existing(conn, coll, code, list(batch))
        done = tuple(item_id for item_id in batch if item_id in stored)
        missing = tuple(item_id for item_id in batch if item_id not in stored)
        return WriteResult(done, missing)

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id`` (see :meth:`Storage.delete_items`).

        The common case (every id stored) is one ``DELETE ... IN (...)`` per chunk in a
        savepoint, checked by its row count; when fewer rows went, the savepoint is
        undone and the chunks are deleted again with ``RETURNING`` to learn which ids
        were missing.
        """
        wanted, keys = _delete_keys(ids)
        env = Environment.coerce(environment)
        code = _ENV_CODE[env]
        database = self.database
        with database.transaction() as conn:
            coll = _target(conn, collection, env)
            if len(keys) == len(wanted):
                try:
                    with database.transaction():
                        if _delete_counted(conn, coll, code, keys) != len(keys):
                            raise _SomeMissing
                except _SomeMissing:
                    pass
                else:
                    return WriteResult(tuple(wanted), ())
            gone = _delete(conn, coll, code, keys)
        done = tuple(item_id for item_id in wanted if item_id in gone)
        missing = tuple(item_id for item_id in wanted if item_id not in gone)
        return WriteResult(done, missing)

    def change_matching(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None,
        limit: int,
        filter: ItemFilter | None,
        change: ItemChange,
        until: str | None = None,
    ) -> ChangeResult:
        """Change the next batch with SQL statements (see :class:`ChangingStorage`).

        A batch is the next ``limit`` keys when the filter's SQL decides every row and
        the change's SQL form holds on all of them (one statement over the window, the
        filter evaluated once per row), else the next ``limit`` candidate rows, named by
        id; either way no key above ``until``. The rows the SQL forms decide are written
        by one ``DELETE``/``UPDATE`` statement, the others in Python as on the scan path
        (:mod:`taskengine.storage._sqlchange`). A filter without a SQL form, or an
        SQLite without ``RETURNING`` (before 3.35), takes :func:`change_by_scan`.
        """
        check_limit(limit)
        check_after(after)
        env = Environment.coerce(environment)
        condition = pushed_condition(filter) if filter is not None else None
        by_scan = functools.partial(
            change_by_scan,
            self,
            collection,
            env,
            after=after,
            limit=limit,
            filter=filter,
            change=change,
            until=until,
        )
        if (filter is not None and condition is None) or not _HAS_RETURNING:
            with self.database.transaction():
                return by_scan()
        with self.database.transaction() as conn:
            result = change_rows(
                conn,
                _target(conn, collection, env),
                _ENV_CODE[env],
                after=after,
                limit=min(limit, _MAX_FETCH),
                filter=filter,
                condition=condition,
                change=change,
                backend=BACKEND,
                document=DOCUMENT,
                until=until,
            )
            if result is None:  # a batch it cannot name by id (U+0000 in one)
                result = by_scan()
            return result

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """``database.transaction()``: every write in the block commits together or not at all.

        Writes by other components sharing :attr:`database` (the SQLite task store) join
        the same transaction. Reentrant; an exception rolls the whole block back.
        """
        with self.database.transaction():
            yield

    def due_items(
        self,
        collection: str,
        environment: Environment | str,
        now: datetime,
        *,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        """Items whose scheduled date is at most ``now``, oldest first (see
        :meth:`taskengine.storage.schedule.ScheduleIndex.due_items`): two range reads of
        the date indexes, ``O(limit)`` rows."""
        check_limit(limit)
        high = now_key(now)
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            where = (_target(conn, collection, env), _ENV_CODE[env])
            return read_due(conn, _DUE, where, high, limit)

    def next_due_date(self, collection: str, environment: Environment | str) -> datetime | None:
        """The earliest scheduled date of the item set, or ``None`` (see
        :meth:`taskengine.storage.schedule.ScheduleIndex.next_due_date`)."""
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            return read_next_date(conn, _NEXT, (_target(conn, collection, env), _ENV_CODE[env]))

    def split_points(
        self, collection: str, environment: Environment | str, parts: int
    ) -> list[str]:
        """Up to ``parts - 1`` ids that split the item set into ``parts`` ranges of about
        equal size, ascending (see :class:`~taskengine.storage.base.SplittingStorage`).

        A count and one walk of the primary key (each point ``OFFSET`` rows after the
        previous one), in SQLite: no document is read or decoded (about 0.1 s at 1M).
        """
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            coll, code = _target(conn, collection, env), _ENV_CODE[env]
            size = int(conn.execute(_COUNT, (coll, code)).fetchone()[0])
            if parts < 2 or size < parts:
                return []
            points: list[str] = []
            position = -1
            for k in range(1, parts):
                wanted = size * k // parts - 1
                if points:
                    row = conn.execute(
                        _POINT_AFTER, (coll, code, points[-1], wanted - position - 1)
                    )
                else:
                    row = conn.execute(_POINT_FIRST, (coll, code, wanted))
                found = row.fetchone()
                if found is None:
                    break
                points.append(found[0])
                position = wanted
        return points


_DUE = {field: sqlite_due(field) for field in DATE_FIELDS}
_NEXT = {field: sqlite_next(field) for field in DATE_FIELDS}


def _target(conn: sqlite3.Connection, collection: str, env: Environment) -> int:
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


def _delete_keys(ids: Sequence[str]) -> tuple[dict[str, None], list[str]]:
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
    if not _HAS_RETURNING:
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
