"""``PostgresStorage``: items in a PostgreSQL database, shareable with the task store.

Layout (component ``"storage"``, schema version 3 in ``taskengine_schema``)::

    taskengine_collections(id INTEGER IDENTITY PRIMARY KEY, name TEXT COLLATE "C" UNIQUE,
                           sandbox BOOLEAN, publish_plugin BOOLEAN)
    taskengine_items(coll INTEGER, env SMALLINT, id TEXT COLLATE "C", doc TEXT,
                     data JSONB GENERATED ALWAYS AS (...) STORED,
                     publish_due, draft_due BIGINT GENERATED ALWAYS AS (...) STORED,
                     PRIMARY KEY (coll, env, id))

The two ``*_due`` columns and their partial indexes (version 2, added in place to a
version 1 database, rewriting the table once) hold the scheduled dates' keys
(:mod:`taskengine.storage._schedulesql`). Version 3 adds ``taskengine_items_undecided``, a
partial index of the rows whose ``data`` is ``NULL`` (built in place on an older
database, one read of the table), nearly always empty: a set-based delete asks it
whether a key window holds a row its filter's SQL cannot decide
(:mod:`taskengine.storage._pgchange`) without reading the window's rows again.

``env`` is 0 for ``LIVE`` and 1 for ``SANDBOX``. **Exactness**: ``doc`` holds the codec's
JSON text of the item (:func:`taskengine.storage.codec.admit_text`, dates as ``{"$date":
ISO}``), written and read back byte for byte, so every value rule of the contract holds as
it does on SQLite (64-bit ints, ``-0.0``, ``1.0`` against ``1``, key order, naive and
aware dates). JSONB would not keep them: it reorders keys and turns numbers into
``numeric``. ``data`` is JSONB *derived* from ``doc`` by the server (a generated column,
never written, so it cannot drift), for queries and indexes over item fields; it is
``NULL`` for a document holding ``\\u0000``, which JSONB refuses, so a query over it must
treat ``NULL`` as "decide in Python". Items are never read back from it; a compiled
filter runs over it inside scans and counts (:mod:`taskengine.storage._pgfilter`).

**Order**: ``id`` is ``text`` with the ``"C"`` collation, i.e. compared by UTF-8 bytes,
which is code point order, the order of Python ``str``; ids holding U+0000 (which
``text`` cannot store) are escaped in an order-preserving way (``_pgkeys``). A scan page
is one range read of the primary key (``WHERE coll = $1 AND env = $2 AND id > $3 ORDER
BY id LIMIT $4``).

**Writes** send a batch as arrays in PostgreSQL's binary format and ``UNNEST`` them (one
statement per 1000 items): ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` (an id
missing from the answer is the duplicate to name, and raising rolls the insert back),
``UPDATE ... FROM UNNEST(...) RETURNING id`` and ``DELETE ... USING UNNEST(...)
RETURNING id``: which ids were written is known from the statement itself, even when
other sessions write the same ids at the same time. Updates and deletes join the batch on
the whole key (see ``_BATCH``), so their plans do not depend on statistics a freshly
filled table does not have yet, and they lock rows in key order, so two batches over the
same ids wait for each other instead of deadlocking. Every write locks its collection's
row (``FOR KEY SHARE``) until it commits, so a concurrent ``drop_collection`` waits for
it (or the write finds the collection gone) and no item outlives its collection.

The schema, the statements and the row helpers are in
:mod:`taskengine.storage._pgitems`. Connections, transactions and error translation belong to
:class:`~taskengine.storage._pgdatabase.PgDatabase`, which this storage may share with the
PostgreSQL task store (``storage.database``): a batch's item writes and its checkpoint
then commit in one transaction. Importing this module needs the ``postgres`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    InvalidRequest,
    Violation,
)
from taskengine.storage._pgchange import delete_rows
from taskengine.storage._pgdatabase import (
    Connection,
    PgDatabase,
    PostgresError,
    TransactionConflict,
)
from taskengine.storage._pgedit import edit_form
from taskengine.storage._pgestimate import estimate_in_one_query, middle_key
from taskengine.storage._pgfilter import (
    BACKEND,
    DOCUMENT,
    PgReader,
    count_pushed,
    in_transaction,
    scan_pushed,
)
from taskengine.storage._pgitems import (
    _CHUNK,
    _COUNT,
    _COUNT_PAGE,
    _COUNT_ROWS,
    _DELETE,
    _ENV_CODE,
    _GET,
    _INSERT,
    _MAX_FETCH,
    _SCAN_AFTER,
    _SCAN_FIRST,
    _SCAN_FROM,
    _UPDATE,
    COMPONENT,
    SCHEMA,
    SCHEMA_VERSION,
    _analyze,
    _check_encoding,
    _first_duplicate,
    _has_statistics,
    _key_columns,
    _locked_page,
    _name_key,
    _outcome,
    _target,
)
from taskengine.storage._pgkeys import key, keys, lower_bound, unkey
from taskengine.storage._pgsplit import WalkMemo, points_from_walk, walk_points
from taskengine.storage._pgupdate import update_form, update_rows
from taskengine.storage._schedulesql import (
    pg_due,
    pg_next,
    read_due,
    read_next_date,
)
from taskengine.storage._sqlfilter import pushed_condition
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

# PgDatabase and its errors are re-exported: the public way to share one database
# between components or to catch a PostgreSQL failure in particular.
__all__ = ["PgDatabase", "PostgresError", "PostgresStorage", "TransactionConflict"]


class PostgresStorage(Storage, ChangingStorage):
    """Items in a PostgreSQL database: durable, shared by many processes, thread-safe.

    Args:
        source: a DSN (``"postgresql://user@host/db"``; the storage opens a
            :class:`PgDatabase` and closes it in :meth:`close`), or an open
            :class:`PgDatabase` to share (the storage then does not close it).

    The tables are created on first use (and versioned: a database written by a newer
    taskengine is refused). Every write runs in :meth:`PgDatabase.transaction`, so a
    write made inside :meth:`atomic` (by this storage, or by a task store on the same
    :attr:`database`, in the same thread) commits with the rest of the block or not at
    all. Other threads and processes see a write once it commits.

    Raises:
        StorageError: the server cannot be reached, the database is not UTF-8, or it
            holds a newer storage schema (a :class:`PostgresError` when PostgreSQL said
            so).
    """

    atomic_rolls_back = True
    scan_filters_exactly = True
    batches_by_time = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that overrides :meth:`scan`, :meth:`replace_items` or
        :meth:`delete_items` and not :meth:`change_matching` loses the capability
        (``change_matching = None``), so the engine runs its batches through them."""
        super().__init_subclass__(**kwargs)
        keep_only_if_unchanged(cls, PostgresStorage)

    def __init__(self, source: str | PgDatabase) -> None:
        if isinstance(source, PgDatabase):
            self.database = source
            self._owns_database = False
        else:
            self.database = PgDatabase(source)
            self._owns_database = True
        self._walks = WalkMemo()
        self._statistics_until = 0.0  # monotonic time until which the statistics are known
        self._analyze_after = 0.0  # monotonic time before which no ANALYZE runs again
        try:
            _check_encoding(self.database)
            self.database.ensure_schema(COMPONENT, SCHEMA_VERSION, SCHEMA)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStorage {self.database.location}>"

    def __enter__(self) -> PostgresStorage:
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
        """Create an empty collection (see :meth:`Storage.create_collection`).

        Raises:
            InvalidRequest: the name is not valid Unicode (holds a lone surrogate).
        """
        info = CollectionInfo(check_name(name), bool(sandbox), bool(publish_plugin))
        stored = _name_key(info.name)
        if stored is None:
            raise InvalidRequest(
                [Violation("name", "a collection name must be valid Unicode (lone surrogate)")]
            )
        with self.database.transaction() as conn:
            row = conn.execute(
                "INSERT INTO taskengine_collections (name, sandbox, publish_plugin)"
                " VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
                (stored, info.sandbox_enabled, info.publish_plugin),
            ).fetchone()
            if row is None:
                raise CollectionExists(info.name)
        return info

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection (see :meth:`Storage.collection_info`)."""
        stored = _name_key(name)
        row = None
        if stored is not None:
            with self.database.read() as conn:
                row = conn.execute(
                    "SELECT sandbox, publish_plugin FROM taskengine_collections WHERE name = %s",
                    (stored,),
                ).fetchone()
        if row is None:
            raise CollectionNotFound(name)
        return CollectionInfo(name, bool(row[0]), bool(row[1]))

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""
        with self.database.read() as conn:
            rows = conn.execute(
                "SELECT name, sandbox, publish_plugin FROM taskengine_collections"
            ).fetchall()
        infos = [CollectionInfo(unkey(name), bool(box), bool(plugin)) for name, box, plugin in rows]
        infos.sort(key=lambda info: info.name)
        return infos

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its items (see :meth:`Storage.drop_collection`).

        Waits for writes to the collection that have not committed yet.
        """
        stored = _name_key(name)
        with self.database.transaction() as conn:
            row = None
            if stored is not None:
                row = conn.execute(
                    "DELETE FROM taskengine_collections WHERE name = %s RETURNING id", (stored,)
                ).fetchone()
            if row is None:
                raise CollectionNotFound(name)
            conn.execute("DELETE FROM taskengine_items WHERE coll = %s", (row[0],))

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

        Reads ``limit`` stored items at most (plus one, to know whether more are left);
        with a filter, only the accepted ones are returned. A filter that offers a SQL
        condition (a compiled ``taskengine.Filter``) runs inside the query instead, and
        the page then holds ``limit`` accepted items unless the collection ends first
        (see :mod:`taskengine.storage._pgfilter`). Inside :meth:`atomic` the page's rows
        are locked (``FOR UPDATE``) until the block ends, and read as they are once no
        other transaction holds them: a batch's read, change and write of an item in one
        block cannot lose another process's write of it made in between.
        """
        check_limit(limit)
        check_after(after)
        env = Environment.coerce(environment)
        if filter is not None:
            condition = pushed_condition(filter, BACKEND, DOCUMENT)
            if condition is not None:
                return scan_pushed(
                    self._reader(collection, env), condition, filter, after, min(limit, _MAX_FETCH)
                )
        fetch = min(limit, _MAX_FETCH) + 1
        with self.database.read() as conn:
            coll = _target(conn, collection, env)
            if in_transaction(conn):
                return _locked_page(conn, coll, _ENV_CODE[env], after, limit, fetch, filter)
            if after is None:
                rows = conn.execute(_SCAN_FIRST, (coll, _ENV_CODE[env], fetch)).fetchall()
            else:
                bound, inclusive = lower_bound(after)
                sql = _SCAN_FROM if inclusive else _SCAN_AFTER
                rows = conn.execute(sql, (coll, _ENV_CODE[env], bound, fetch)).fetchall()
        more = len(rows) > limit
        if more:
            del rows[limit:]
        items = [decode(doc) for (doc,) in rows]
        cursor = items[-1]["_id"] if more else None
        if filter is not None:
            items = [item for item in items if filter(item)]
        return Page(items, cursor)

    def count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """The exact number of items (that ``filter`` accepts).

        With a filter that offers a SQL condition, the server counts the rows it decides
        and only the others are read and checked (:mod:`taskengine.storage._pgfilter`);
        with any other filter, the documents are read in pages of 4096 and each is
        decoded once, straight into the filter.
        """
        env = Environment.coerce(environment)
        code = _ENV_CODE[env]
        if filter is None:
            with self.database.read() as conn:
                coll = _target(conn, collection, env)
                row = conn.execute(_COUNT, (coll, code)).fetchone()
            return Count(int(row[0]) if row else 0, exact=True)
        condition = pushed_condition(filter, BACKEND, DOCUMENT)
        if condition is not None:
            return Count(count_pushed(self._reader(collection, env), condition, filter), True)
        total = 0
        after = ""  # every stored key is above the empty string
        while True:
            with self.database.read() as conn:
                coll = _target(conn, collection, env)
                rows = conn.execute(_COUNT_ROWS, (coll, code, after, _COUNT_PAGE)).fetchall()
            total += count_accepted([doc for _, doc in rows], filter)
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
        :mod:`taskengine.storage._estimate`), found by one walk of the keys that also
        counts them and read in one query (:mod:`taskengine.storage._pgestimate`; over
        :data:`~taskengine.storage._pgestimate.HALVES_ABOVE` items by the table's
        statistics, its two halves at once on two connections). The walk is kept for
        the split points and delete windows that follow. Over more than
        :data:`ANALYZE_ABOVE` items, a table without statistics is analyzed first (see
        ``_analyze_if_unknown``)."""
        env = Environment.coerce(environment)
        if filter is None:
            counted = self.count(collection, env)
            self._analyze_if_unknown(counted.value)
            return counted
        condition = pushed_condition(filter, BACKEND, DOCUMENT)
        walks: list[tuple[list[str], int]] = []
        with self.database.read() as conn:
            coll = _target(conn, collection, env)
            code = _ENV_CODE[env]
            # Two halves at once only outside a transaction: a helper's connection would
            # not see the transaction's own writes.
            split = None if in_transaction(conn) else middle_key(conn, coll, code)
            with self.database.spare() if split is not None else _NO_SPARE as spare:
                estimate = estimate_in_one_query(
                    conn,
                    coll,
                    code,
                    condition,
                    filter,
                    lambda *walk: walks.append(walk),
                    split,
                    spare,
                )
        for points, spacing in walks:  # one walk, or none of an empty item set
            self._walks.keep(coll, code, points, spacing)
            self._analyze_if_unknown((len(points) - 1) * spacing + 1)  # at most the items
        return self.count(collection, env, filter) if estimate is None else estimate

    def _analyze_if_unknown(self, items: int) -> None:
        """Before a task over ``items`` items: ``ANALYZE`` the items table when the item
        set is large (above :data:`ANALYZE_ABOVE`) and the table has no statistics worth
        the name (never analyzed, or changed by more rows than it held since: a table
        filled a moment ago), so that the task's batches run set-based instead of
        taking the scan path (measured on 1M items just loaded: a ``DELETE_BY_QUERY`` in
        4.6-5.0 s on the scan path, 0.2 s of ``ANALYZE`` and 1.3 s set-based). At most
        once per :data:`ANALYZE_EVERY` seconds per storage (a role that may not analyze
        the table gets a warning and keeps the scan path), never inside a transaction of
        the caller's, never waiting for another ``ANALYZE`` or ``VACUUM``."""
        if items <= ANALYZE_ABOVE:
            return
        now = time.monotonic()
        if now < self._analyze_after:
            return
        try:
            with self.database.read() as conn:
                if self._statistics_known(conn) or not _analyze(conn):
                    return
        except PostgresError as exc:
            # Only an optimization: the task goes on (on the scan path) whatever failed.
            _log.warning("could not analyze the items table on %s: %s", self.database.location, exc)
        self._analyze_after = now + ANALYZE_EVERY

    def _reader(self, collection: str, env: Environment) -> PgReader:
        """Opens a read of one item set: ``(connection, collection row id, env code)``."""
        database, code = self.database, _ENV_CODE[env]

        @contextlib.contextmanager
        def read() -> Iterator[tuple[Connection, int, int]]:
            with database.read() as conn:
                yield conn, _target(conn, collection, env), code

        return read

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            coll = _target(conn, collection, env)
            wanted = lookup_id(item_id)
            if wanted is None:
                return None
            row = conn.execute(_GET, (coll, _ENV_CODE[env], key(wanted))).fetchone()
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

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items, all or nothing (see :meth:`Storage.insert_items`)."""
        encoded = [admit_text(item) for item in items]
        env = Environment.coerce(environment)
        code = _ENV_CODE[env]
        ids = [item_id for item_id, _ in encoded]
        stored = keys(ids)
        docs = [text for _, text in encoded]
        with self.database.transaction() as conn:
            coll = _target(conn, collection, env, lock=True)
            if len(set(ids)) < len(ids):
                raise DuplicateItem(collection, _first_duplicate(conn, coll, env, ids, stored))
            for start in range(0, len(ids), _CHUNK):
                chunk = stored[start : start + _CHUNK]
                rows = conn.execute(
                    _INSERT, (coll, code, chunk, docs[start : start + _CHUNK])
                ).fetchall()
                if len(rows) < len(chunk):
                    # The ids missing from RETURNING were already stored; raising here
                    # rolls back everything this call inserted.
                    written = {row[0] for row in rows}
                    first = next(n for n, k in enumerate(chunk) if k not in written)
                    raise DuplicateItem(collection, ids[start + first])
        return len(encoded)

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
        # Rows are locked in key order, the same in every session, which keeps two
        # batches over the same ids from deadlocking.
        pairs = sorted(zip(keys(batch), batch.values(), strict=True))
        written = 0
        seen: set[str] = set()
        with self.database.transaction() as conn:
            coll = _target(conn, collection, env, lock=True)
            for start in range(0, len(pairs), _CHUNK):
                chunk = pairs[start : start + _CHUNK]
                columns = _key_columns(coll, env, [k for k, _ in chunk])
                rows = conn.execute(_UPDATE, (*columns, [doc for _, doc in chunk])).fetchall()
                written += len(rows)
                seen.update(row[0] for row in rows)
        if written == len(batch):  # the common case: every id is stored
            return WriteResult(tuple(batch), ())
        return _outcome(batch, {unkey(k) for k in seen})

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id`` (see :meth:`Storage.delete_items`)."""
        wanted: dict[str, None] = {}
        present: list[str] = []
        for item_id in ids:
            lookup = lookup_id(item_id)  # raises on an id that is not a string
            if item_id not in wanted:
                wanted[item_id] = None
                if lookup is not None:
                    present.append(lookup)
        env = Environment.coerce(environment)
        stored = sorted(keys(present))
        gone: set[str] = set()
        with self.database.transaction() as conn:
            coll = _target(conn, collection, env, lock=True)
            for start in range(0, len(stored), _CHUNK):
                columns = _key_columns(coll, env, stored[start : start + _CHUNK])
                rows = conn.execute(_DELETE, columns).fetchall()
                gone.update(row[0] for row in rows)
        if len(gone) == len(wanted):
            return WriteResult(tuple(wanted), ())
        return _outcome(wanted, {unkey(k) for k in gone})

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
        """Change the next batch in the database (see :class:`ChangingStorage`).

        A delete covers key windows holding at most ``limit`` candidate rows when the
        only rows the filter's SQL form can leave undecided are those without ``jsonb``
        (one ``DELETE`` per window, the filter evaluated once per row: the first window
        ``limit`` keys, the next sized by the candidates it held, each ending on a key
        the estimate's walk kept when there is one,
        :mod:`taskengine.storage._pgonepass`), else the next ``limit`` candidate rows: the
        rows the filter's SQL form accepts go in one ``DELETE`` over the batch's key
        range, the ones it leaves undecided are read locked, checked in Python and
        deleted by id (:mod:`taskengine.storage._pgchange`); either way no key above
        ``until``. A rewrite that sets one top-level field (publish status and dates,
        a copy, an append) is one ``UPDATE`` per batch splicing the stored text where
        that is exact, the other rows of the batch through the change's Python form
        (:mod:`taskengine.storage._pgupdate`). Another rewrite, or a filter without a SQL
        form, takes :func:`change_by_scan`, and so does any batch while the items table
        has no statistics worth the name (never analyzed, or changed by more rows than it
        held since): the set-based statements' plans then cost 2-4x the scan path's
        (measured on freshly filled tables: a delete at 100k items, 0.6x once analyzed;
        publish status at 30k, 2.02 s against 0.52 s, 0.37 s against 0.77 s once
        analyzed); a task's estimate over a large item set analyzes such a table first
        (:meth:`estimate_count`). Either runs
        in the caller's transaction (the engine's :meth:`atomic` block, with no
        savepoint of its own: a batch that fails fails the block) or, outside one, in a
        transaction of its own.
        """
        check_limit(limit)
        check_after(after)
        env = Environment.coerce(environment)
        condition = None if filter is None else pushed_condition(filter, BACKEND, DOCUMENT)
        with self._block() as conn:
            form = None
            if not change.deletes:
                form = update_form(change) or edit_form(getattr(change, "array_edit", None))
            if (
                (filter is not None and condition is None)
                or (until is not None and lookup_id(until) is None)
                or (form is None and not change.deletes)
                or not self._statistics_known(conn)
            ):
                return change_by_scan(
                    self,
                    collection,
                    env,
                    after=after,
                    limit=limit,
                    filter=filter,
                    change=change,
                    until=until,
                )
            coll, code = _target(conn, collection, env, lock=True), _ENV_CODE[env]
            bound = None if until is None else key(until)
            limit = min(limit, _MAX_FETCH)
            if form is not None:
                return update_rows(
                    conn,
                    coll,
                    code,
                    after=after,
                    limit=limit,
                    filter=filter,
                    condition=condition,
                    change=change,
                    form=form,
                    until=bound,
                )
            return delete_rows(
                conn,
                coll,
                code,
                after=after,
                limit=limit,
                filter=filter,
                condition=condition,
                needs_ids=change.needs_ids,
                until=bound,
                grid=self._walks.grid(coll, code),
                stale=self._walks.drop,
            )

    def _statistics_known(self, conn: Connection) -> bool:
        """Whether the items table has statistics worth the name (``_has_statistics``),
        a yes trusted for :data:`STATISTICS_FRESH_FOR` seconds (a batch of a task then
        skips the catalog read: 0.27 ms, a fortieth of a 5,000-row delete)."""
        now = time.monotonic()
        if now < self._statistics_until:
            return True
        if not _has_statistics(conn):
            return False
        self._statistics_until = now + STATISTICS_FRESH_FOR
        return True

    @contextlib.contextmanager
    def _block(self) -> Iterator[Connection]:
        """The open transaction's connection (no savepoint: a batch that fails leaves
        the block's transaction to roll back), or a transaction of its own."""
        with self.database.read() as conn:
            if in_transaction(conn):
                yield conn
                return
        with self.database.transaction() as conn:
            yield conn

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """``database.transaction()``: every write in the block commits together or not at all.

        Writes by other components sharing :attr:`database` (the PostgreSQL task store)
        in the same thread join the same transaction. Reentrant (a nested block is a
        savepoint); an exception rolls the block back. Reads in the block see its writes;
        other sessions see them when the outermost block commits.
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
            return read_due(conn, _DUE, where, high, limit, unkey)

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

        A count and one walk of the primary key index (each point ``OFFSET`` keys after
        the previous one): no document is read; or, right after an estimate of the same
        item set, the keys that estimate walked (:mod:`taskengine.storage._pgsplit`).
        """
        env = Environment.coerce(environment)
        with self.database.read() as conn:
            coll, code = _target(conn, collection, env), _ENV_CODE[env]
            walk = self._walks.take(coll, code) if parts >= 2 else None
            points = None if walk is None else points_from_walk(walk, parts)
            if points is None:
                points = walk_points(conn, coll, code, parts)
        return [unkey(point) for point in points]


_log = logging.getLogger("taskengine.storage")
_NO_SPARE: contextlib.nullcontext[None] = contextlib.nullcontext()
ANALYZE_ABOVE = 50_000
"""Item sets larger than this get the items table analyzed before a task, when needed."""
ANALYZE_EVERY = 60.0
"""Seconds between two ``ANALYZE`` runs of one ``PostgresStorage`` at most."""
STATISTICS_FRESH_FOR = 5.0
"""Seconds a ``PostgresStorage`` trusts its last look finding the items table analyzed."""
_DUE = {field: pg_due(field) for field in DATE_FIELDS}
_NEXT = {field: pg_next(field) for field in DATE_FIELDS}
