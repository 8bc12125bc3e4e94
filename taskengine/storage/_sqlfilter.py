"""``SQLiteStorage`` reads with a filter pushed into SQL: scans and counts in key windows.

A filter that offers a SQL form (:class:`~taskengine.storage.base.SQLFilter`, asked by
duck typing: storage knows no filter language) gives a condition pair ``where``/``sure``
over the ``doc`` column. Rows failing ``where`` are never read; rows meeting ``sure``
are accepted without a Python check; the rest are decoded and checked with the filter,
so a scan still returns only accepted items (``scan_filters_exactly``).

Reads go through the collection in *windows* of :data:`WINDOW` keys: each query is
bounded to one window (``id > lo AND id <= hi``), so the database lock is held for a
bounded time however selective the filter, and released between windows (the lock
discipline of the unfiltered paths). A scan loops over windows until its page holds
``limit`` accepted items or the collection ends.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Final

from taskengine.storage.base import ItemFilter, Page, SQLFilterCondition
from taskengine.storage.codec import count_accepted, decode

__all__ = ["WINDOW", "Reader", "count_pushed", "pushed_condition", "scan_pushed"]

WINDOW: Final = 8192
"""Keys per window: the most rows one query examines."""

BACKEND: Final = "sqlite"
DOCUMENT: Final = "doc"

Reader = Callable[[], contextlib.AbstractContextManager[tuple[sqlite3.Connection, int, int]]]
"""Opens a read of the target item set: ``(connection, collection row id, env code)``."""

# The key WINDOW rows on: SQLite steps over rows to an OFFSET without reading them.
_EDGE = (
    "SELECT id FROM taskengine_items WHERE coll = ? AND env = ?{after} ORDER BY id LIMIT 1 OFFSET ?"
)


def pushed_condition(
    filter: ItemFilter | None, backend: str = BACKEND, document: str = DOCUMENT
) -> SQLFilterCondition | None:
    """The filter's condition for ``backend`` over ``document`` (by default SQLite's,
    over ``doc``), when it offers one."""
    to_sql = getattr(filter, "to_sql", None)
    if to_sql is None:
        return None
    condition: SQLFilterCondition | None = to_sql(backend, document)
    return condition


@contextlib.contextmanager
def _window(
    reader: Reader, after: str | None
) -> Iterator[tuple[sqlite3.Connection, tuple[Any, ...], str, str | None]]:
    """A read of the next window after ``after``.

    Yields ``(conn, key params, key condition, last key)``: the key condition (``AND id >
    ? AND id <= ?``) bounds a query to the window; the last key is ``None`` when fewer
    than :data:`WINDOW` keys are left, and the window then runs to the end.
    """
    with reader() as (conn, coll, env):
        keys: tuple[Any, ...] = (coll, env) if after is None else (coll, env, after)
        bounds = "" if after is None else " AND id > ?"
        edge = conn.execute(_EDGE.format(after=bounds), (*keys, WINDOW - 1)).fetchone()
        last: str | None = None if edge is None else edge[0]
        if last is not None:
            keys += (last,)
            bounds += " AND id <= ?"
        yield conn, keys, bounds, last


def scan_pushed(
    reader: Reader,
    condition: SQLFilterCondition,
    filter: ItemFilter,
    after: str | None,
    limit: int,
) -> Page:
    """A page of up to ``limit`` accepted items after ``after`` (``limit`` < 2**62)."""
    items: list[dict[str, Any]] = []
    exact = condition.exact
    where = f" AND ({condition.where})"
    if exact:
        head, head_params = "SELECT id, doc, TRUE", ()
    else:
        head, head_params = f"SELECT id, doc, ({condition.sure})", condition.sure_params
    while True:
        need = limit - len(items)
        with _window(reader, after) as (conn, keys, bounds, last):
            sql = (
                f"{head} FROM taskengine_items WHERE coll = ? AND env = ?{bounds}{where}"
                " ORDER BY id LIMIT ?"
            )
            params = (*head_params, *keys, *condition.where_params, need + 1)
            rows = conn.execute(sql, params).fetchall()
        for item_id, text, sure in rows:
            item = decode(text)
            if sure or filter(item):
                items.append(item)
                if len(items) == limit:
                    # A candidate row is left when this was not the window's last row.
                    more = item_id != rows[-1][0] or last is not None or len(rows) > need
                    return Page(items, item_id if more else None)
        if len(rows) > need:
            after = rows[-1][0]  # the window holds more candidates after these
        elif last is None:
            return Page(items, None)
        else:
            after = last


def count_pushed(reader: Reader, condition: SQLFilterCondition, filter: ItemFilter) -> int:
    """How many items the filter accepts, window by window."""
    total = 0
    after: str | None = None
    where = f" AND ({condition.where})"
    while True:
        with _window(reader, after) as (conn, keys, bounds, last):
            base = f" FROM taskengine_items WHERE coll = ? AND env = ?{bounds}{where}"
            if condition.exact:
                total += conn.execute(
                    "SELECT count(*)" + base, (*keys, *condition.where_params)
                ).fetchone()[0]
                texts: list[str] = []
            else:
                # Sure rows are counted without their text; the others come back to check.
                rows = conn.execute(
                    f"SELECT CASE WHEN ({condition.sure}) THEN NULL ELSE doc END" + base,
                    (*condition.sure_params, *keys, *condition.where_params),
                ).fetchall()
                texts = [row[0] for row in rows if row[0] is not None]
                total += len(rows) - len(texts)
        total += count_accepted(texts, filter)
        if last is None:
            return total
        after = last
