"""``PostgresStorage`` reads with a filter pushed into SQL: scans and counts in key windows.

A filter that offers a SQL form (:class:`~taskengine.storage.base.SQLFilter`, asked by
duck typing, as on SQLite: :func:`~taskengine.storage._sqlfilter.pushed_condition`) gives
a condition pair ``where``/``sure`` over the ``data`` column (``jsonb`` generated from
``doc``, ``NULL`` where JSONB cannot hold the item; the translation itself leaves such
rows to Python: ``where`` holds on them and ``sure`` does not). Rows failing ``where``
are never sent; rows meeting ``sure`` are accepted without a Python check; the rest are
decoded and checked with the filter, so a scan still returns only accepted items
(``scan_filters_exactly``).

**Windows.** Reads go through the collection in windows of :data:`WINDOW` keys, as on
SQLite, but for another reason: outside a transaction a PostgreSQL read holds no lock a
writer waits for (inside one a scan locks its candidate rows, see :func:`_window`), while
the plan of a keyset query ``id > $after AND (where) ORDER BY id LIMIT n`` depends on
statistics. Without them (a table filled a moment ago, before autovacuum analyzed it) the
planner expects a few rows, and reads *every* row after ``$after`` and sorts the
candidates, for each page: quadratic in the pages of a scan. Here each query is bounded
by keys, ``id > lo AND id <= hi``, whatever its plan: the window's last key ``hi`` comes
from the plain scan's range read (``ORDER BY id LIMIT 1 OFFSET WINDOW - 1``, an index scan
whatever the statistics). A scan loops over windows until its page holds ``limit``
accepted items or the collection ends.

**Counting.** One pass counts the rows meeting ``sure`` and, beside them, the rows meeting
``where`` but not ``sure`` (a count of the whole item set is linear whatever its plan);
only when there are some are those rows read, window by window, and checked in Python.
Nothing of an item decided in SQL is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgkeys import lower_bound
from taskengine.storage.base import ItemFilter, Page, SQLFilterCondition
from taskengine.storage.codec import count_accepted, decode

__all__ = [
    "BACKEND",
    "DOCUMENT",
    "WINDOW",
    "PgReader",
    "count_pushed",
    "in_transaction",
    "scan_pushed",
]

BACKEND: Final = "postgresql"
DOCUMENT: Final = "data"
WINDOW: Final = 8192
"""Keys per window: the most rows one query examines."""

PgReader = Callable[[], contextlib.AbstractContextManager[tuple[Connection, int, int]]]
"""Opens a read of the target item set: ``(connection, collection row id, env code)``."""

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"
_MAX_FETCH: Final = 2**62  # a LIMIT larger than any table, still a bigint

# The key a window ends on: the plain scan's range read over the primary key (an index
# scan whatever the statistics), stepping over WINDOW - 1 keys.
_EDGE = "SELECT id {items}{keyed} ORDER BY id LIMIT 1 OFFSET %s"


def in_transaction(conn: Connection) -> bool:
    """Whether ``conn`` is inside a transaction (a block of :meth:`PgDatabase.transaction`)."""
    from psycopg.pq import TransactionStatus  # imported with _pgdatabase, which needs it

    return conn.info.transaction_status == TransactionStatus.INTRANS


Row = tuple[str, str, bool]
"""A candidate row: ``(stored key, doc, meets sure)``."""


def _window(
    reader: PgReader,
    condition: tuple[str, tuple[Any, ...], str, tuple[Any, ...]],
    after: tuple[str, bool] | None,
    fetch: int,
    *,
    lock: bool = False,
) -> tuple[list[Row], str | None]:
    """Up to ``fetch`` candidate rows of the window after ``after`` (``(stored key,
    inclusive)``), in key order; and the window's last key, ``None`` when fewer than
    :data:`WINDOW` keys are left (the window then runs to the end).

    ``condition`` is ``(where, its parameters, sure, its parameters)``. With ``lock``,
    inside a transaction, the candidate rows are locked (``FOR UPDATE``) and read as they
    are once no other transaction holds them: PostgreSQL checks ``where`` again on a row
    another transaction changed meanwhile, and the ``LIMIT`` counts only the rows still
    candidates, so a window that returns ``fetch`` rows or fewer is still exhausted.
    """
    where, where_params, sure, sure_params = condition
    keys: tuple[Any, ...] = ()
    keyed = ""
    if after is not None:
        keyed, keys = (" AND id >= %s" if after[1] else " AND id > %s"), (after[0],)
    with reader() as (conn, coll, env):
        edge = conn.execute(
            _EDGE.format(items=_ITEMS, keyed=keyed), (coll, env, *keys, WINDOW - 1)
        ).fetchone()
        last: str | None = None if edge is None else edge[0]
        if last is not None:
            keyed, keys = keyed + " AND id <= %s", (*keys, last)
        locking = " FOR UPDATE" if lock and in_transaction(conn) else ""
        rows: list[Row] = conn.execute(
            f"SELECT id, doc, ({sure}) {_ITEMS}{keyed} AND ({where}) ORDER BY id LIMIT %s"
            + locking,
            (*sure_params, coll, env, *keys, *where_params, fetch),
        ).fetchall()
    return rows, last


def scan_pushed(
    reader: PgReader,
    condition: SQLFilterCondition,
    filter: ItemFilter,
    after: str | None,
    limit: int,
) -> Page:
    """A page of up to ``limit`` accepted items after ``after`` (``limit`` < 2**62).

    The cursor is the last returned item's ``_id``, or ``None`` when no candidate row is
    left after it. Inside a transaction the candidate rows are locked until it ends (see
    :func:`_window`), so a batch's read, change and write of an item cannot lose another
    process's write of it made in between.
    """
    items: list[dict[str, Any]] = []
    sure = "TRUE" if condition.exact else condition.sure
    sure_params = () if condition.exact else condition.sure_params
    parts = (condition.where, condition.where_params, sure, sure_params)
    start = None if after is None else lower_bound(after)
    while True:
        need = limit - len(items)
        rows, last = _window(reader, parts, start, need + 1, lock=True)
        for n, (_, text, sure_row) in enumerate(rows):
            item = decode(text)
            if sure_row or filter(item):
                items.append(item)
                if len(items) == limit:
                    # Candidates may be left unless this is the last row of the last
                    # window and the LIMIT did not cut it short.
                    more = n + 1 < len(rows) or last is not None or len(rows) > need
                    return Page(items, item["_id"] if more else None)
        if len(rows) > need:
            start = (rows[-1][0], False)  # the window holds more candidates after these
        elif last is None:
            return Page(items, None)
        else:
            start = (last, False)


def count_pushed(reader: PgReader, condition: SQLFilterCondition, filter: ItemFilter) -> int:
    """How many items the filter accepts: counted in SQL, the undecided checked in Python."""
    where = f" AND ({condition.where})"
    with reader() as (conn, coll, env):
        if condition.exact:
            row = conn.execute(
                f"SELECT count(*) {_ITEMS}{where}", (coll, env, *condition.where_params)
            ).fetchone()
            return int(row[0]) if row else 0
        # One pass: the sure rows, and whether any candidate is left to Python.
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE s), count(*) FILTER (WHERE NOT s)"
            f" FROM (SELECT ({condition.sure}) IS TRUE AS s {_ITEMS}{where}) AS candidates",
            (*condition.sure_params, coll, env, *condition.where_params),
        ).fetchone()
    total, undecided = (int(row[0]), int(row[1])) if row else (0, 0)
    if not undecided:
        return total
    # The undecided rows, window by window (their condition has no sure part).
    parts = (
        f"({condition.where}) AND ({condition.sure}) IS NOT TRUE",
        (*condition.where_params, *condition.sure_params),
        "FALSE",
        (),
    )
    start: tuple[str, bool] | None = None
    while True:
        rows, last = _window(reader, parts, start, _MAX_FETCH)
        total += count_accepted([text for _, text, _ in rows], filter)
        if last is None:
            return total
        start = (last, False)
