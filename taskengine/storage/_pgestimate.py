"""``PostgresStorage.estimate_count``: the sample of :mod:`taskengine.storage._estimate` in
two statements, after one pass over the keys.

The same sample as :func:`~taskengine.storage._estimate.estimate_accepted` (the same
windows, so the same estimate): :data:`~taskengine.storage._estimate.WINDOWS` windows of
:data:`~taskengine.storage._estimate.ROWS` consecutive items, each window starting
``total // WINDOWS`` keys after the previous one's start. There the item set is counted,
then the windows found and read one query each (128 round trips, each with its own
collection check). Here one recursive query steps over the keys (``OFFSET`` on the
primary key, no document read), keeping every :data:`GRID`-th key, and counts the few
keys after the last one kept: the number of items, exact, from that one pass (a count
and a second walk read every key twice: about 0.16 s of a 1M-item ``DELETE_BY_QUERY``
that takes 1.2 s). A second query reads the windows, each found from the kept key before
it (at most ``GRID`` keys on), the filter's SQL form evaluated in the database. Only the
rows it leaves undecided send their document back, to be checked in Python.

The kept keys (a *grid*) are handed on: split points come from them
(:mod:`taskengine.storage._pgsplit`), and a delete's key windows end on them instead of
reading the keys again (:mod:`taskengine.storage._pgonepass`).
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
GRID: Final = 512
"""Keys from one point of the walk to the next."""
# ``g``: the keys at positions 0, GRID, 2 * GRID, ... (``OFFSET`` steps over the primary
# key, no document read), the last one NULL. Then the keys from the last point on: with
# them, the number of items, exactly, from the same one pass over the keys.
_WALK: Final = (
    "WITH RECURSIVE g(id) AS ((SELECT id " + _ITEMS + " ORDER BY id LIMIT 1)"
    " UNION ALL SELECT (SELECT id " + _ITEMS + " AND id > g.id ORDER BY id"
    " LIMIT 1 OFFSET %s) FROM g WHERE g.id IS NOT NULL),"
    " p AS MATERIALIZED (SELECT array_agg(id ORDER BY id) AS ids FROM g WHERE id IS NOT NULL)"
    " SELECT p.ids, (SELECT count(*) " + _ITEMS + " AND id >= p.ids[cardinality(p.ids)])"
    " FROM p"
)
# ``s``: each window's position as a point of the walk and the keys after it; ``k``: the
# window's first key (an index read of at most GRID keys); ``w``: the window's rows, the
# filter's parts evaluated once a row, the document only when the row is undecided
# (``where`` but not ``sure``).
_SAMPLE: Final = (
    "SELECT w.sure IS TRUE, CASE WHEN w.sure IS NOT TRUE AND w.maybe IS TRUE THEN w.doc END"
    " FROM unnest(%s::text[], %s::integer[]) AS s(point, skip)"
    " CROSS JOIN LATERAL (SELECT id " + _ITEMS + " AND id >= s.point ORDER BY id"
    " LIMIT 1 OFFSET s.skip) AS k"
    " CROSS JOIN LATERAL (SELECT ({sure}) AS sure, ({where}) AS maybe, doc "
    + _ITEMS
    + " AND id >= k.id ORDER BY id LIMIT %s) AS w"
)


def walk_grid(conn: Connection, coll: int, env: int) -> tuple[list[str], int]:
    """The keys of the item set ``(coll, env)`` at positions ``0, GRID, 2 * GRID, ...``
    (stored keys, ascending) and the number of items: one pass over its keys."""
    row = conn.execute(_WALK, (coll, env, coll, env, GRID - 1, coll, env)).fetchone()
    if row is None or row[0] is None:
        return [], 0  # an empty item set
    points = [str(point) for point in row[0]]
    return points, (len(points) - 1) * GRID + int(row[1])


def estimate_in_one_query(
    conn: Connection,
    coll: int,
    env: int,
    condition: SQLFilterCondition | None,
    filter: ItemFilter,
    walked: Callable[[list[str], int], None] | None = None,
) -> Count | None:
    """How many items of the item set ``(coll, env)`` ``filter`` accepts, estimated: the
    sample's share times the number of items (``condition``: the filter's SQL form,
    ``None`` to check every sampled row in Python); ``None`` when the item set holds at
    most :data:`EXACT_UP_TO` items (the caller counts them exactly).

    ``walked`` is told the walk's keys and their spacing (``(keys, GRID)``, stored keys,
    ascending, the key at every ``GRID``-th position): :mod:`taskengine.storage._pgsplit`
    splits by them, and a delete's windows end on them.
    """
    points, total = walk_grid(conn, coll, env)
    if walked is not None and points:
        walked(points, GRID)
    if total <= EXACT_UP_TO:
        return None
    if condition is None:
        where: tuple[str, tuple[Any, ...]] = ("TRUE", ())
        sure: tuple[str, tuple[Any, ...]] = ("FALSE", ())
    else:
        where = (condition.where, condition.where_params)
        sure = where if condition.exact else (condition.sure, condition.sure_params)
    # The windows start ``total // WINDOWS`` items apart, from the first item.
    step = total // WINDOWS
    positions = [window * step for window in range(WINDOWS)]
    params = (
        [points[position // GRID] for position in positions],
        [position % GRID for position in positions],
        *(coll, env),  # k
        *(*sure[1], *where[1], coll, env, ROWS),  # w
    )
    rows = conn.execute(_SAMPLE.format(sure=sure[0], where=where[0]), params).fetchall()
    if not rows:
        return Count(0, exact=True)
    accepted = sum(1 for sure_row, text in rows if sure_row or (text and filter(decode(text))))
    return Count(round(total * accepted / len(rows)), exact=False)
