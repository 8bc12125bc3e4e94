"""``PostgresStorage.change_matching`` for deletes: one ``DELETE`` per batch, not one per id.

A batch covers the next ``limit`` *candidate* rows after the checkpoint (rows meeting the
filter's ``where``, or every row without a filter). Its last key is found window by
window, as the pushed-down scan does (:mod:`taskengine.storage._pgfilter`): each query is
bounded by keys, ``id > lo AND id <= hi`` with ``hi`` the key :data:`WINDOW` rows on
(the plain range read of the primary key), so no plan reads past the window whatever the
statistics say. One query per window counts its first ``need + 1`` candidates, names the
``need``-th and says whether any of them is undecided (``where`` but not ``sure``: rows
whose ``data`` is ``NULL``, or parts of a filter SQL cannot decide). Within the batch's
key range, ``id > after AND id <= last``:

* the undecided rows, when there are any, are read ``FOR UPDATE`` (locked, and read as
  they are once no other transaction holds them), checked with the filter in Python and
  the accepted ones deleted by id;
* every row meeting ``sure`` is deleted by one statement, ``DELETE ... RETURNING id``
  when the change needs the ids, else only its row count.

Both statements lock what they delete, and a row another transaction deleted first is
skipped (PostgreSQL checks the condition again on the row's latest version), so two
processes deleting the same items each count only the rows they deleted. Everything runs
in the caller's transaction (the engine's ``atomic()`` block, with the task's checkpoint),
so the batch commits whole or not at all.
"""

from __future__ import annotations

from typing import Any, Final

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgfilter import WINDOW
from taskengine.storage._pgkeys import lower_bound, unkey
from taskengine.storage.base import ItemFilter, SQLFilterCondition
from taskengine.storage.changes import ChangeResult
from taskengine.storage.codec import decode

__all__ = ["delete_rows"]

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"
# The key a window ends on: a range read of the primary key, stepping over WINDOW - 1 keys.
_EDGE: Final = "SELECT id " + _ITEMS + "{keyed} ORDER BY id LIMIT 1 OFFSET %s"
# The window's first ``need + 1`` candidates: how many, the ``need``-th, how many undecided.
_NTH: Final = (
    "SELECT count(*), (array_agg(id ORDER BY id))[%s], count(*) FILTER (WHERE NOT s)"
    " FROM (SELECT id, ({sure}) IS TRUE AS s " + _ITEMS + "{keyed} AND ({where})"
    " ORDER BY id LIMIT %s) AS candidates"
)
_UNDECIDED: Final = (
    "SELECT id, doc " + _ITEMS + "{keyed} AND ({where}) AND ({sure}) IS NOT TRUE"
    " ORDER BY id FOR UPDATE"
)
_DELETE: Final = "DELETE " + _ITEMS + "{keyed} AND ({sure})"
_DELETE_KEYS: Final = "DELETE " + _ITEMS + " AND id = ANY(%s::text[]) RETURNING id"


class _Keys:
    """A key range ``lo < id <= hi`` (``lo`` may be inclusive, either end open) as SQL."""

    def __init__(self, lower: tuple[str, bool] | None) -> None:
        self.lower = lower
        self.upper: str | None = None

    def sql(self) -> tuple[str, tuple[str, ...]]:
        """The condition (``AND``-ed) and its parameters."""
        params: tuple[str, ...]
        text, params = "", ()
        if self.lower is not None:
            text, params = (" AND id >= %s" if self.lower[1] else " AND id > %s"), (self.lower[0],)
        if self.upper is not None:
            text, params = text + " AND id <= %s", (*params, self.upper)
        return text, params


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
) -> ChangeResult:
    """Delete the next batch of the item set ``(coll, env)`` inside the open transaction.

    ``condition`` is ``filter``'s SQL form (``None`` only when ``filter`` is ``None``);
    ``limit`` is below 2**62.
    """
    if condition is None:
        where: tuple[str, tuple[Any, ...]] = ("TRUE", ())
        sure = where
    else:
        where = (condition.where, condition.where_params)
        sure = where if condition.exact else (condition.sure, condition.sure_params)
    start = None if after is None else lower_bound(after)
    cursor, undecided = _batch_end(conn, coll, env, start, limit, where, sure)
    batch = _Keys(start)
    batch.upper = cursor
    keyed, keys = batch.sql()

    done: list[str] = []
    written = 0
    if undecided and filter is not None:
        rows = conn.execute(
            _UNDECIDED.format(keyed=keyed, where=where[0], sure=sure[0]),
            (coll, env, *keys, *where[1], *sure[1]),
        ).fetchall()
        accepted = [stored for stored, text in rows if filter(decode(text))]
        if accepted:
            gone = conn.execute(_DELETE_KEYS, (coll, env, accepted)).fetchall()
            done.extend(unkey(row[0]) for row in gone)
            written += len(gone)
    statement = _DELETE.format(keyed=keyed, sure=sure[0])
    params = (coll, env, *keys, *sure[1])
    if needs_ids:
        deleted = [unkey(row[0]) for row in conn.execute(statement + " RETURNING id", params)]
        done.extend(deleted)
        written += len(deleted)
    else:
        written += conn.execute(statement, params).rowcount
    if len(done) > 1:
        done.sort()
    return ChangeResult(None if cursor is None else unkey(cursor), written, tuple(done))


def _batch_end(
    conn: Connection,
    coll: int,
    env: int,
    start: tuple[str, bool] | None,
    limit: int,
    where: tuple[str, tuple[Any, ...]],
    sure: tuple[str, tuple[Any, ...]],
) -> tuple[str | None, bool]:
    """The stored key the batch ends on (``None``: the batch runs to the end of the item
    set), and whether any of its candidates may be undecided by ``sure``."""
    need = limit
    window = _Keys(start)
    undecided = False
    while True:
        window.upper = None
        keyed, keys = window.sql()
        edge = conn.execute(_EDGE.format(keyed=keyed), (coll, env, *keys, WINDOW - 1)).fetchone()
        window.upper = None if edge is None else edge[0]
        keyed, keys = window.sql()
        row = conn.execute(
            _NTH.format(keyed=keyed, where=where[0], sure=sure[0]),
            (need, *sure[1], coll, env, *keys, *where[1], need + 1),
        ).fetchone()
        found, nth, unsure = (0, None, 0) if row is None else (int(row[0]), row[1], int(row[2]))
        undecided = undecided or unsure > 0
        if found > need:
            return nth, undecided  # more candidates follow the batch's last one
        if found == need and window.upper is not None:
            return window.upper, undecided  # no candidate between the need-th and the edge
        if window.upper is None:
            return None, undecided  # the item set ends within this window
        need -= found
        window.lower = (window.upper, False)
