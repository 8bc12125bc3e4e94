"""``PostgresStorage.change_matching`` for deletes: one ``DELETE`` per batch, not one per id.

A batch covers the next ``limit`` *candidate* rows after the checkpoint (rows meeting the
filter's ``where``, or every row without a filter), window by window as the pushed-down
scan reads (:mod:`taskengine.storage._pgfilter`): every part of a statement is bounded by
keys, ``id > lo AND id <= hi`` with ``hi`` the key ``size`` rows on (a range read of the
primary key), so no plan reads past its window whatever the statistics say (a table
filled a moment ago has none). One statement per window finds its end, counts its first
``need + 1`` candidates, takes the ``need``-th as the batch's last key when more follow,
and deletes the candidates up to that key that meet ``sure`` (found by their keys, so
``sure`` is evaluated on them alone; ``RETURNING id`` only when the change needs the
ids, else a count). ``sure`` implies ``where``, so when it deleted fewer
rows than the candidates up to that key, the others are undecided (``where`` but not
``sure``: rows whose ``data`` is ``NULL``, or parts of a filter SQL cannot decide); they
are then read ``FOR UPDATE`` (locked, and read as they are once no other transaction
holds them), checked with the filter in Python, and the accepted ones deleted by id. A
batch that needs more candidates goes on with the next window, sized by the candidates
seen so far (the first: three keys per candidate needed, so a dense filter takes one
window and one round trip per batch; at most :data:`WINDOW`).

**One pass** when the filter says which rows it may leave undecided by a cheap condition
of their own (its SQL form's ``undecided``: on PostgreSQL the rows JSONB cannot hold,
``data IS NULL``, when the rest is exact), and without a filter: the batch is a few
windows of *keys*, one ``DELETE`` of the rows meeting ``sure`` each, the first ``limit``
keys and the next sized by the candidates it held
(:mod:`taskengine.storage._pgonepass`).

Both deletes lock what they delete, and a row another transaction deleted first is
skipped (PostgreSQL checks the condition again on the row's latest version), so two
processes deleting the same items each count only the rows they deleted. Everything runs
in the caller's transaction (the engine's ``atomic()`` block, with the task's checkpoint),
so the batch commits whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgfilter import WINDOW
from taskengine.storage._pgkeys import lower_bound, unkey
from taskengine.storage._pgonepass import delete_accepted, key_after, one_pass, read_undecided
from taskengine.storage._pgsplit import KeyWalk
from taskengine.storage.base import ItemFilter, SQLFilterCondition
from taskengine.storage.changes import ChangeResult

__all__ = ["delete_rows"]

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"
# ``k`` and ``edge``: the key a window of keys after ``{lower}`` ends on (its size the first
# parameter after them; a range read of the primary key), or the item set's last key when
# fewer are left, and whether more keys follow it.
_EDGE: Final = (
    "WITH k AS MATERIALIZED (SELECT array_agg(id ORDER BY id) AS ids FROM (SELECT id "
    + _ITEMS
    + "{lower} ORDER BY id LIMIT 2 OFFSET %s) AS edges),"
    " edge AS MATERIALIZED (SELECT coalesce(k.ids[1], (SELECT id "
    + _ITEMS
    + " ORDER BY id DESC LIMIT 1)) AS last, coalesce(cardinality(k.ids), 0) = 2 AS more"
    " FROM k),"
)
# One window of a batch, one statement. ``edge`` (:data:`_EDGE`): the key the window
# ends on, ``size`` keys on. ``c``: the window's first ``need + 1`` candidates. ``b``: how
# many, and the key the batch's part of this window ends on (the ``need``-th candidate
# when more follow it, else the window's end). ``d``: below.
_WINDOW: Final = (
    _EDGE
    + " c AS (SELECT id "
    + _ITEMS
    + "{lower} AND id <= (SELECT last FROM edge) AND ({where}) ORDER BY id LIMIT %s),"
    " b AS MATERIALIZED (SELECT count(*) AS n,"
    " CASE WHEN count(*) > %s THEN (array_agg(id ORDER BY id))[%s]"
    " ELSE (SELECT last FROM edge) END AS bound FROM c),"
    # The candidates up to that key that are sure, deleted, found by their keys (``sure``
    # is evaluated on the candidates alone, not over the range), and checked again by
    # PostgreSQL on a row another transaction changed meanwhile. The key range bounds
    # the statement whatever its plan: without statistics, ``id = ANY(...)`` alone was
    # planned as a read of the whole item set for every window (quadratic).
    " d AS (DELETE " + _ITEMS + "{lower} AND id <= (SELECT bound FROM b)"
    " AND id = ANY(ARRAY(SELECT id FROM c WHERE id <= (SELECT bound FROM b)))"
    " AND ({sure}) RETURNING id)"
    " SELECT b.n, b.bound, (SELECT more FROM edge), {deleted} FROM b"
)
_COUNTED: Final = "(SELECT count(*) FROM d)"
_LISTED: Final = "(SELECT array_agg(id) FROM d)"
_SUBSCRIPT: Final = 2**31 - 1
"""The largest array subscript (an ``integer``); a larger ``need`` is never reached."""
_FIRST: Final = 3
"""The first window of a batch is this many keys per candidate it needs (plus 16)."""


def delete_rows(
    conn: Connection,
    coll: int,
    env: int,
    *,
    after: str | None,
    limit: int,
    filter: ItemFilter | None,
    condition: SQLFilterCondition | None,
    needs_ids: bool,
    until: str | None = None,
    grid: KeyWalk | None = None,
    stale: Callable[[KeyWalk], None] | None = None,
) -> ChangeResult:
    """Delete the next batch of the item set ``(coll, env)`` inside the open transaction.

    ``condition`` is ``filter``'s SQL form (``None`` only when ``filter`` is ``None``);
    ``limit`` is below 2**62; ``until`` (a stored key) bounds every part of every
    statement (a slice's last id, inclusive). ``grid`` and ``stale``: a walk of the keys
    the one-pass windows may end on, and whom to tell when it proved stale
    (:func:`~taskengine.storage._pgonepass.one_pass`).
    """
    if condition is None:
        where: tuple[str, tuple[Any, ...]] = ("TRUE", ())
        sure = where
    else:
        where = (condition.where, condition.where_params)
        sure = where if condition.exact else (condition.sure, condition.sure_params)
    lower = None if after is None else lower_bound(after)
    undecided = ("FALSE", ()) if condition is None else _undecided_of(condition)
    if undecided is not None:
        return one_pass(
            conn,
            coll,
            env,
            lower,
            limit,
            filter,
            where,
            sure,
            undecided,
            needs_ids,
            until,
            grid,
            stale,
        )
    need = limit
    size = min(WINDOW, need * _FIRST + 16)
    seen = found = 0  # keys and candidates of the batch's windows so far
    done: list[str] = []
    written = 0
    while True:
        keyed, keys = ("", ()) if lower is None else key_after(lower)
        if until is not None:
            keyed, keys = keyed + " AND id <= %s", (*keys, until)
        statement = _WINDOW.format(
            lower=keyed,
            where=where[0],
            sure=sure[0],
            deleted=_LISTED if needs_ids else _COUNTED,
        )
        params = (
            *(coll, env, *keys, size - 1),  # k: the window's end and the key after it
            *(coll, env),  # edge: the last key, when fewer than size are left
            *(coll, env, *keys, *where[1], need + 1),  # c
            *(need, min(need, _SUBSCRIPT)),  # b
            *(coll, env, *keys, *sure[1]),  # d
        )
        row = conn.execute(statement, params).fetchone()
        assert row is not None  # an aggregate without GROUP BY returns one row
        n, bound, more, deleted = int(row[0]), row[1], bool(row[2]), row[3]
        if needs_ids:
            done.extend(unkey(stored) for stored in deleted or ())
            count = len(deleted or ())
        else:
            count = int(deleted)
        written += count
        # Candidates the DELETE left are undecided (or gone meanwhile): read them.
        if min(n, need) > count and filter is not None:
            bounded = (keyed + " AND id <= %s", (*keys, bound))
            rows = read_undecided(conn, coll, env, *bounded, where, sure)
            gone = delete_accepted(conn, coll, env, rows, filter)
            done.extend(gone)
            written += len(gone)
        if n > need:
            cursor: str | None = bound  # more candidates follow the batch's last one
            break
        if not more:
            cursor = None  # the item set ends within this window
            break
        if n == need:
            cursor = bound  # no candidate between the need-th and the window's end
            break
        need -= n
        seen, found = seen + size, found + n
        # The next window: as many keys as the candidates seen so far say it needs.
        size = WINDOW if not found else min(WINDOW, need * seen // found + need // 4 + 16)
        lower = (bound, False)
    if len(done) > 1:
        done.sort()
    return ChangeResult(None if cursor is None else unkey(cursor), written, tuple(done))


def _undecided_of(condition: SQLFilterCondition) -> tuple[str, tuple[Any, ...]] | None:
    """The condition's cheap test for its undecided rows (``FALSE`` when exact), if any."""
    if condition.exact:
        return ("FALSE", ())
    text: str | None = getattr(condition, "undecided", None)
    if text is None:
        return None
    params: tuple[Any, ...] = getattr(condition, "undecided_params", ())
    return (text, params)
