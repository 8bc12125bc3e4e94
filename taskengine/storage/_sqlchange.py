"""``SQLiteStorage.change_matching``: a batch changed by SQL statements, not item by item.

A batch covers the next ``limit`` *candidate* rows after the checkpoint (rows meeting
the filter's ``where``, or every row without a filter), found by one range read of the
key (``ORDER BY id LIMIT 2 OFFSET limit - 1``): its last key bounds every statement of
the batch, ``id > after AND id <= last``. Within that range:

* rows meeting the filter's ``sure`` condition (every row, without a filter) and the
  change's ``applies`` are written by one statement: ``DELETE ... RETURNING id``, or
  ``UPDATE ... SET doc = <value> WHERE ... AND <changes> RETURNING id``;
* the other candidates (undecided by the filter's SQL, or outside ``applies``) are read,
  checked with the filter in Python, and changed by the change's Python form, exactly as
  the scan path does; rows the SQL form leaves unchanged are counted in the same read.

Everything runs in one transaction (the caller's ``atomic()`` block, with the task's
checkpoint), so the batch commits whole or not at all.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from taskengine.storage.base import ItemFilter, SQLFilterCondition
from taskengine.storage.changes import ChangeResult, ItemChange, SQLChange, split_outcomes
from taskengine.storage.codec import admit_text, decode

__all__ = ["change_rows"]

_ITEMS: Final = "taskengine_items WHERE coll = ? AND env = ?"
_UPDATE_ONE: Final = "UPDATE taskengine_items SET doc = ? WHERE coll = ? AND env = ? AND id = ?"
_DELETE_ONE: Final = "DELETE FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"


class _Query:
    """SQL text and its parameters, built in placeholder order."""

    def __init__(self, sql: str = "", params: tuple[Any, ...] = ()) -> None:
        self.sql = sql
        self.params = list(params)

    def add(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> _Query:
        self.sql += sql
        self.params.extend(params)
        return self


def change_rows(
    conn: sqlite3.Connection,
    coll: int,
    env: int,
    *,
    after: str | None,
    limit: int,
    filter: ItemFilter | None,
    condition: SQLFilterCondition | None,
    change: ItemChange,
    backend: str,
    document: str,
) -> ChangeResult:
    """Change the next batch of the item set ``(coll, env)`` inside the open transaction.

    ``condition`` is ``filter``'s SQL form (``None`` only when ``filter`` is ``None``).
    """
    # The batch's key range: up to ``limit`` candidates after ``after``.
    candidates = _Query(f" AND ({condition.where})", condition.where_params) if condition else None
    keys = _Query("" if after is None else " AND id > ?", () if after is None else (after,))

    def in_range(head: _Query) -> _Query:
        head.add(f" FROM {_ITEMS}", (coll, env)).add(keys.sql, keys.params)
        if candidates is not None:
            head.add(candidates.sql, candidates.params)
        return head

    edge = in_range(_Query("SELECT id")).add(" ORDER BY id LIMIT 2 OFFSET ?", (limit - 1,))
    bounds = conn.execute(edge.sql, edge.params).fetchall()
    cursor: str | None = None
    if len(bounds) == 2:
        cursor = bounds[0][0]
        keys.add(" AND id <= ?", (cursor,))
    exact = condition is None or condition.exact
    sure = _Query("TRUE") if exact else _Query(f"({condition.sure})", condition.sure_params)  # type: ignore[union-attr]
    form: SQLChange | None = None if change.deletes else change.to_sql(backend, document)

    # Rows for Python: undecided by the filter's SQL, or outside the change's SQL form.
    if form is None and not change.deletes:
        by_hand: _Query | None = _Query("TRUE")
    else:
        applies = "TRUE" if form is None else form.applies
        if exact and applies == "TRUE":
            by_hand = None  # the statement decides every row
        else:
            by_hand = _Query(f"({sure.sql} IS NOT TRUE OR ({applies}) IS NOT TRUE)")
            by_hand.params = [*sure.params, *(() if form is None else form.applies_params)]
    items = []
    read_rows = 0
    if by_hand is not None:
        read = in_range(_Query(f"SELECT doc, {sure.sql}", tuple(sure.params)))
        read.add(f" AND {by_hand.sql}", by_hand.params)
        for text, decided in conn.execute(read.sql, read.params):
            read_rows += 1
            item = decode(text)
            if decided or filter is None or filter(item):
                items.append(item)

    # The statement: every sure row within the change's SQL form, at once.
    written = unchanged = 0
    done: list[str] = []
    if change.deletes or form is not None:
        if change.deletes:
            write = in_range(_Query("DELETE")).add(f" AND {sure.sql}", sure.params)
            decided = 0
        else:
            assert form is not None
            write = _Query(f"UPDATE taskengine_items SET doc = {form.value}", form.value_params)
            write.add(f" WHERE coll = ? AND env = ?{keys.sql}", (coll, env, *keys.params))
            if candidates is not None:
                write.add(candidates.sql, candidates.params)
            write.add(f" AND {sure.sql} AND ({form.applies})", (*sure.params, *form.applies_params))
            write.add(f" AND ({form.changes})", form.changes_params)
            # The rows the statement decides, written or not (for the unchanged count).
            if cursor is not None or len(bounds) == 1:
                decided = limit - read_rows
            else:
                total = in_range(_Query("SELECT count(*)"))
                decided = conn.execute(total.sql, total.params).fetchone()[0] - read_rows
        if change.needs_ids:
            done = [row[0] for row in conn.execute(write.sql + " RETURNING id", write.params)]
            written = len(done)
        else:
            written = conn.execute(write.sql, write.params).rowcount
        unchanged = decided - written if not change.deletes else 0

    # The rest, item by item, as on the scan path.
    refused: tuple[tuple[str, str], ...] = ()
    if items:
        if change.deletes:
            ids = [item["_id"] for item in items]
            conn.executemany(_DELETE_ONE, [(coll, env, item_id) for item_id in ids])
        else:
            writes, kept, refusals = split_outcomes(change, items)
            unchanged += kept
            refused = tuple(refusals)
            texts = [admit_text(item) for item in writes]
            conn.executemany(_UPDATE_ONE, [(text, coll, env, item_id) for item_id, text in texts])
            ids = [item_id for item_id, _ in texts]
        done += ids
        written += len(ids)
    return ChangeResult(cursor, written, tuple(done), unchanged, refused)
