"""How many items a filter accepts, estimated from a sample: a task's start without a
second pass over the collection.

A task's ``estimatedItemCount`` is counted when it starts (ref: "may be re-estimated"; the
engine sets it to the exact number processed when the task completes). An exact filtered
count is a full pass over the item set, as long as the task's own scan when the filter
runs inside the database (a selective ``DELETE_BY_QUERY`` spent half its time counting).
The SQL adapters therefore count exactly only small item sets (at most
:data:`EXACT_UP_TO` items) and estimate larger ones from :data:`WINDOWS` windows of
:data:`ROWS` consecutive items spread evenly over the item set in ``_id`` order: the
share of the sample the filter accepts, times the number of items (a count of the
primary key, no document read). The window starts are found by stepping over keys
(``ORDER BY id LIMIT 1 OFFSET step``), chained from one window to the next, so finding
them costs one walk of the key index; the sample is 4,096 documents whatever the size
(many small windows, so that items matching in runs of neighbouring ids weigh less than
in a few large windows).

The filter's SQL condition (when it offers one) decides most sampled rows in the
database; the others are decoded and checked with the filter, as a scan does. The
answer is a :class:`~taskengine.storage.base.Count` marked ``exact=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from taskengine.storage.base import Count, ItemFilter, SQLFilterCondition
from taskengine.storage.codec import decode

__all__ = [
    "EXACT_UP_TO",
    "ROWS",
    "SAMPLE",
    "WINDOWS",
    "Query",
    "estimate_accepted",
    "estimate_on_reads",
    "split_by_query",
    "split_by_walk",
]

EXACT_UP_TO: Final = 50_000
"""Item sets at most this large are counted exactly (a pass over them is cheap)."""
WINDOWS: Final = 64
"""Windows in a sample."""
ROWS: Final = 64
"""Consecutive items per window."""
SAMPLE: Final = WINDOWS * ROWS
"""Items in a sample (``MemoryStorage`` takes them one by one at even steps)."""

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one read query on the adapter's connection: ``(sql, params) -> rows`` (the SQL is
written with the adapter's placeholder, ``mark``)."""


def estimate_on_reads(
    read: Callable[[], AbstractContextManager[Any]],
    locate: Callable[[Any], int],
    env_code: int,
    mark: str,
    condition: SQLFilterCondition | None,
    filter: ItemFilter,
    count_exactly: Callable[[], Count],
) -> Count:
    """:func:`estimate_accepted` for a SQL adapter: each query in a read of its own
    (``read()`` yields a connection), the item set located by ``locate(conn)`` (the
    collection's row id; it raises when the collection is gone, checked again before
    every query)."""
    with read() as conn:
        target = (locate(conn), env_code)

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with read() as conn:
            locate(conn)  # still there
            rows: list[tuple[Any, ...]] = conn.execute(sql, tuple(params)).fetchall()
            return rows

    return estimate_accepted(query, mark, target, condition, filter, count_exactly)


def estimate_accepted(
    query: Query,
    mark: str,
    target: tuple[int, int],
    condition: SQLFilterCondition | None,
    filter: ItemFilter,
    count_exactly: Callable[[], Count],
) -> Count:
    """How many items of the item set ``target`` (``(collection row id, env code)``) the
    filter accepts: ``count_exactly()`` up to :data:`EXACT_UP_TO` items, else an
    estimate from a sample.

    Args:
        query: runs a read on the adapter's connection (see :data:`Query`).
        mark: the adapter's placeholder (``"?"`` or ``"%s"``).
        condition: the filter's SQL condition, or ``None`` to check every row in Python.
        count_exactly: the adapter's exact filtered count.
    """
    items = f"FROM taskengine_items WHERE coll = {mark} AND env = {mark}"
    counted = query(f"SELECT count(*) {items}", target)
    total = int(counted[0][0]) if counted else 0
    if total <= EXACT_UP_TO:
        return count_exactly()
    if condition is None:
        head, head_params = "SELECT id, FALSE, TRUE, doc", ()
    else:
        # An exact condition is its own sure part.
        sure = condition.where if condition.exact else condition.sure
        sure_params = condition.where_params if condition.exact else condition.sure_params
        head = f"SELECT id, ({sure}), ({condition.where}), doc"
        head_params = (*sure_params, *condition.where_params)
    sample = f"{head} {items} AND id >= {mark} ORDER BY id LIMIT {mark}"
    first = f"{head} {items} ORDER BY id LIMIT {mark}"
    edge = f"SELECT id {items} AND id > {mark} ORDER BY id LIMIT 1 OFFSET {mark}"
    step = total // WINDOWS
    sampled = accepted = 0
    rows = query(first, (*head_params, *target, ROWS))
    for window in range(WINDOWS):
        for _, sure_row, where_row, text in rows:
            sampled += 1
            if sure_row or (where_row and filter(decode(text))):
                accepted += 1
        if window + 1 == WINDOWS or not rows:
            break
        # The next window starts `step` items after this one's first item.
        found = query(edge, (*target, rows[-1][0], step - len(rows)))
        if not found:
            break
        rows = query(sample, (*head_params, *target, found[0][0], ROWS))
    if sampled == 0:
        return Count(0, exact=True)
    return Count(round(total * accepted / sampled), exact=False)


def split_by_walk(
    size: int,
    parts: int,
    first: Callable[[int], str | None],
    after: Callable[[str, int], str | None],
) -> list[str]:
    """Up to ``parts - 1`` keys splitting an item set of ``size`` items into ``parts``
    ranges of about equal size, ascending (the SQL adapters' ``split_points``): one walk
    of the keys, each point ``OFFSET`` keys after the previous one. ``first(n)`` is the
    key ``n`` keys after the first one, ``after(key, n)`` the key ``n`` keys after the
    one following ``key``; either is ``None`` past the end."""
    if parts < 2 or size < parts:
        return []
    points: list[str] = []
    position = -1
    for k in range(1, parts):
        wanted = size * k // parts - 1
        found = after(points[-1], wanted - position - 1) if points else first(wanted)
        if found is None:
            break
        points.append(found)
        position = wanted
    return points


def split_by_query(
    query: Query, count: str, first: str, after: str, coll: int, env: int, parts: int
) -> list[str]:
    """:func:`split_by_walk` of the item set ``(coll, env)`` through ``query``: ``count``
    its size, ``first`` the key ``OFFSET`` keys in, ``after`` the key ``OFFSET`` keys
    after the one following a key (each takes ``coll, env`` first, then those)."""

    def key_at(statement: str, *args: Any) -> str | None:
        rows = query(statement, (coll, env, *args))
        return str(rows[0][0]) if rows else None

    rows = query(count, (coll, env))
    size = int(rows[0][0]) if rows else 0
    return split_by_walk(
        size, parts, lambda n: key_at(first, n), lambda last, n: key_at(after, last, n)
    )
