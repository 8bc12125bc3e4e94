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
    CollectionNotFound,
)
from taskengine.storage._database import Database
from taskengine.storage._estimate import estimate_on_reads
from taskengine.storage._schedulesql import (
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
from taskengine.storage._sqlitems import (
    COMPONENT,
    COUNT,
    ENV_CODE,
    HAS_RETURNING,
    MAX_FETCH,
    SCHEMA,
    SCHEMA_VERSION,
    delete_collection,
    delete_keys,
    delete_rows,
    get_row,
    insert_collection,
    insert_rows,
    read_collection,
    read_collections,
    read_rows,
    replace_rows,
    split_points,
    target,
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

__all__ = ["COMPONENT", "SCHEMA", "SCHEMA_VERSION", "SQLiteStorage"]

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
    batches_by_time = True

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
            insert_collection(conn, info)
        return info

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection (see :meth:`Storage.collection_info`)."""
        with self.database.read() as conn:
            info = read_collection(conn, name) if type(name) is str else None
        if info is None:
            raise CollectionNotFound(name)
        return info

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""
        with self.database.read() as conn:
            infos = read_collections(conn)
        infos.sort(key=lambda info: info.name)
        return infos

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its items (see :meth:`Storage.drop_collection`)."""
        with self.database.transaction() as conn:
            delete_collection(conn, name)

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
                    self._reader(collection, env), condition, filter, after, min(limit, MAX_FETCH)
                )
        fetch = min(limit, MAX_FETCH) + 1
        with self.database.read() as conn:
            rows = read_rows(conn, target(conn, collection, env), ENV_CODE[env], after, fetch)
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
                coll = target(conn, collection, env)
                return Count(int(conn.execute(COUNT, (coll, ENV_CODE[env])).fetchone()[0]), True)
        condition = pushed_condition(filter)
        if condition is not None:
            return Count(count_pushed(self._reader(collection, env), condition, filter), True)
        # Rows are read in large keyset pages (the lock is held while reading, not
        # while decoding) and each document is decoded once, straight into the filter:
        # no Page, no per-item copy or list, no generator.
        code = ENV_CODE[env]
        total = 0
        after: str | None = None
        while True:
            with self.database.read() as conn:
                rows = read_rows(conn, target(conn, collection, env), code, after, _COUNT_PAGE)
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
            lambda conn: target(conn, collection, env),
            ENV_CODE[env],
            "?",
            pushed_condition(filter),
            filter,
            lambda: self.count(collection, env, filter),
        )

    def _reader(self, collection: str, env: Environment) -> Reader:
        """Opens a read of one item set: ``(connection, collection row id, env code)``."""
        database, code = self.database, ENV_CODE[env]

        @contextlib.contextmanager
        def read() -> Iterator[tuple[sqlite3.Connection, int, int]]:
            with database.read() as conn:
                yield conn, target(conn, collection, env), code

        return read

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items, all or nothing (see :meth:`Storage.insert_items`)."""
        encoded = [admit_text(item) for item in items]
        env = Environment.coerce(environment)
        database = self.database
        with database.transaction() as conn:
            coll = target(conn, collection, env)
            return insert_rows(database, conn, coll, ENV_CODE[env], collection, encoded)

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            coll = target(conn, collection, env)
            key = lookup_id(item_id)
            if key is None:
                return None
            text = get_row(conn, coll, ENV_CODE[env], key)
        return None if text is None else decode(text)

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
        with self.database.transaction() as conn:
            return replace_rows(conn, target(conn, collection, env), ENV_CODE[env], batch)

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id`` (see :meth:`Storage.delete_items`).

        One counted ``DELETE ... IN (...)`` per chunk in a savepoint; ``RETURNING``
        learns the missing ids when some are (see ``_sqlitems.delete_rows``).
        """
        wanted, keys = delete_keys(ids)
        env = Environment.coerce(environment)
        database = self.database
        with database.transaction() as conn:
            coll = target(conn, collection, env)
            return delete_rows(database, conn, coll, ENV_CODE[env], wanted, keys)

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
        if (filter is not None and condition is None) or not HAS_RETURNING:
            with self.database.transaction():
                return by_scan()
        with self.database.transaction() as conn:
            result = change_rows(
                conn,
                target(conn, collection, env),
                ENV_CODE[env],
                after=after,
                limit=min(limit, MAX_FETCH),
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
            where = (target(conn, collection, env), ENV_CODE[env])
            return read_due(conn, _DUE, where, high, limit)

    def next_due_date(self, collection: str, environment: Environment | str) -> datetime | None:
        """The earliest scheduled date of the item set, or ``None`` (see
        :meth:`taskengine.storage.schedule.ScheduleIndex.next_due_date`)."""
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            return read_next_date(conn, _NEXT, (target(conn, collection, env), ENV_CODE[env]))

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
            return split_points(conn, target(conn, collection, env), ENV_CODE[env], parts)


_DUE = {field: sqlite_due(field) for field in DATE_FIELDS}
_NEXT = {field: sqlite_next(field) for field in DATE_FIELDS}
