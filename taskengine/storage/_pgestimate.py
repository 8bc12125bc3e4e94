"""``PostgresStorage.estimate_count``: the sample of :mod:`taskengine.storage._estimate` in
one statement.

The same sample as :func:`~taskengine.storage._estimate.estimate_accepted` (the same
windows, so the same estimate): :data:`~taskengine.storage._estimate.WINDOWS` windows of
:data:`~taskengine.storage._estimate.ROWS` consecutive items, each window starting
``total // WINDOWS`` keys after the previous one's start. There the windows were found
and read one query each (128 round trips, each with its own collection check: about 40
ms, a fifth of a 100,000-item ``DELETE_BY_QUERY`` on this machine); here a recursive
query steps over the keys (``OFFSET`` on the primary key, no document read) and a
lateral read takes each window, the filter's SQL form evaluated in the database. Only
the rows it leaves undecided send their document back, to be checked in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from taskengine.storage._estimate import EXACT_UP_TO, ROWS, WINDOWS
from taskengine.storage._pgdatabase import Connection
from taskengine.storage.base import Count, ItemFilter, SQLFilterCondition
from taskengine.storage.codec import decode

__all__ = ["estimate_in_one_query"]

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"
_COUNT: Final = "SELECT count(*) " + _ITEMS
# ``s``: the windows' first keys, each ``step`` keys after the previous one. ``w``: each
# window's rows, the filter's parts evaluated once a row; the document only when the
# row is undecided (``where`` but not ``sure``).
_SAMPLE: Final = (
    "WITH RECURSIVE s(n, id) AS ((SELECT 1, id " + _ITEMS + " ORDER BY id LIMIT 1)"
    " UNION ALL SELECT s.n + 1, (SELECT id " + _ITEMS + " AND id > s.id ORDER BY id"
    " LIMIT 1 OFFSET %s) FROM s WHERE s.n < %s AND s.id IS NOT NULL)"
    " SELECT w.sure IS TRUE, CASE WHEN w.sure IS NOT TRUE AND w.maybe IS TRUE THEN w.doc END,"
    " s.id"
    " FROM s CROSS JOIN LATERAL (SELECT ({sure}) AS sure, ({where}) AS maybe, doc "
    + _ITEMS
    + " AND id >= s.id ORDER BY id LIMIT %s) AS w WHERE s.id IS NOT NULL"
)


def estimate_in_one_query(
    conn: Connection,
    coll: int,
    env: int,
    condition: SQLFilterCondition | None,
    filter: ItemFilter,
    walked: Callable[[list[str]], None] | None = None,
) -> Count | None:
    """How many items of the item set ``(coll, env)`` ``filter`` accepts, estimated: the
    sample's share times the number of items (``condition``: the filter's SQL form,
    ``None`` to check every sampled row in Python); ``None`` when the item set holds at
    most :data:`EXACT_UP_TO` items (the caller counts them exactly).

    ``walked`` is told the windows' first keys (stored keys, ascending, spaced evenly):
    :mod:`taskengine.storage._pgsplit` splits by them.
    """
    row = conn.execute(_COUNT, (coll, env)).fetchone()
    total = 0 if row is None else int(row[0])
    if total <= EXACT_UP_TO:
        return None
    if condition is None:
        where: tuple[str, tuple[Any, ...]] = ("TRUE", ())
        sure: tuple[str, tuple[Any, ...]] = ("FALSE", ())
    else:
        where = (condition.where, condition.where_params)
        sure = where if condition.exact else (condition.sure, condition.sure_params)
    params = (
        *(coll, env),  # the first window's start
        *(coll, env, total // WINDOWS - 1, WINDOWS),  # the next starts
        *(*sure[1], *where[1], coll, env, ROWS),  # the windows
    )
    rows = conn.execute(_SAMPLE.format(sure=sure[0], where=where[0]), params).fetchall()
    if not rows:
        return Count(0, exact=True)
    if walked is not None:
        walked(list(dict.fromkeys(start for _, _, start in rows)))
    accepted = sum(1 for sure_row, text, _ in rows if sure_row or (text and filter(decode(text))))
    return Count(round(total * accepted / len(rows)), exact=False)
