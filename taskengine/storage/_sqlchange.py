"""``SQLiteStorage.change_matching``: a batch changed by SQL statements, not item by item.

Which rows a batch covers, and how its statements name them:

* **without a filter**, the next ``limit`` rows by key: one range read of the key
  (``ORDER BY id LIMIT 2 OFFSET limit - 1``) finds the batch's last key, and every
  statement is bounded by ``id > after AND id <= last``;
* **with a filter SQL decides exactly** (no undecided rows), for a rewrite whose SQL form
  holds on every row (``applies`` is ``TRUE``): the same window of the next ``limit``
  keys, and one ``UPDATE`` over it with the filter in its ``WHERE`` (the filter runs once
  per row, nothing is read back); the matched rows it leaves as they are are counted by
  a function the statement calls on those rows alone (:data:`_UNCHANGED`);
* **with another filter**, or a delete with a filter, the next ``limit`` *candidate* rows
  (meeting its SQL ``where``): one read of their ids and whether each meets ``sure``, and
  the statements name them by id (``id IN (SELECT value FROM json_each(?))``), so the
  filter's SQL runs once per row.
  A batch holding an id with U+0000 (which ``json_each`` cannot carry) is left to
  :func:`~taskengine.storage.changes.change_by_scan`.

Within the batch, the rows sure to match and inside the change's SQL form (its
``applies``) are written by one statement: ``DELETE``, or ``UPDATE ... SET doc = <value>
WHERE ... AND <changes>`` (``RETURNING id`` only when the change needs the ids). The
others (undecided by the filter's SQL, or outside ``applies``) are read, checked with the
filter in Python and changed by the change's Python form, exactly as the scan path does.
Rows the statement leaves unchanged are counted from the batch's size (over a window of
keys, by :data:`_UNCHANGED`). Everything runs
in one transaction (the caller's ``atomic()`` block, with the task's checkpoint), so the
batch commits whole or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any, Final

from taskengine.storage.base import Item, ItemFilter, SQLFilterCondition
from taskengine.storage.changes import ChangeResult, ItemChange, SQLChange, split_outcomes
from taskengine.storage.codec import admit_text, decode

__all__ = ["change_rows"]

_ITEMS: Final = "taskengine_items WHERE coll = ? AND env = ?"
_BY_ID: Final = f"{_ITEMS} AND id IN (SELECT value FROM json_each(?))"
_UPDATE_ONE: Final = "UPDATE taskengine_items SET doc = ? WHERE coll = ? AND env = ? AND id = ?"
_DELETE_ONE: Final = "DELETE FROM taskengine_items WHERE coll = ? AND env = ? AND id = ?"
_UNCHANGED: Final = "taskengine_unchanged"
"""A function of the connection an ``UPDATE`` over a key window calls on each matched row
it leaves as it is (its ``changes`` false): it counts the row and returns false. It is
registered once per connection and never replaced (SQLite refuses to replace a function
while a statement of the connection is active); the count is the calling thread's."""
_TALLY: Final = threading.local()


def _unchanged() -> bool:
    _TALLY.count += 1
    return False


def _start_tally(conn: sqlite3.Connection) -> None:
    """Register :data:`_UNCHANGED` on ``conn`` unless it is, and zero this thread's count."""
    _TALLY.count = 0
    try:
        conn.execute(f"SELECT {_UNCHANGED}()").fetchall()
    except sqlite3.OperationalError:  # no such function: this connection's first time
        conn.create_function(_UNCHANGED, 0, _unchanged)
    _TALLY.count = 0


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
    until: str | None = None,
) -> ChangeResult | None:
    """Change the next batch of the item set ``(coll, env)`` inside the open transaction.

    ``condition`` is ``filter``'s SQL form (``None`` only when ``filter`` is ``None``);
    ``until`` bounds the scan (a slice's last id, inclusive).
    Returns ``None``, having written nothing, for a batch this cannot name by id.
    """
    form: SQLChange | None = None if change.deletes else change.to_sql(backend, document)
    keys = _Query(f"{_ITEMS}{'' if after is None else ' AND id > ?'}", (coll, env))
    if after is not None:
        keys.params.append(after)
    if until is not None:
        keys.add(" AND id <= ?", (until,))
    cursor: str | None = None
    unsure: list[str] = []
    # A window of keys, with the filter (if any) in the statement's WHERE.
    # (A filtered delete names its candidates by id: at 10% density, 300k items, that
    # measured 1.47x plain SQL against 1.61x for a window of keys, ten times the batches.)
    windowed = condition is None or (
        condition.exact and form is not None and form.applies == "TRUE"
    )
    tally = False  # whether the statement counts the rows it leaves (see _UNCHANGED)
    if windowed:
        edge = _Query("SELECT id FROM ").add(keys.sql, keys.params)
        bounds = conn.execute(
            edge.add(" ORDER BY id LIMIT 2 OFFSET ?", (limit - 1,)).sql, edge.params
        ).fetchall()
        if len(bounds) == 2:
            cursor = bounds[0][0]
            keys.add(" AND id <= ?", (cursor,))
        scope = keys
        if condition is not None:  # the filter goes in the statement's one test (below)
            size = limit  # (not counted: the statement runs over the window)
            tally = True
            _start_tally(conn)
        elif len(bounds) == 0 and not change.deletes:  # (a delete needs no unchanged count)
            size = conn.execute(
                _Query("SELECT count(*) FROM ").add(keys.sql, keys.params).sql, keys.params
            ).fetchone()[0]
        else:
            size = limit
    else:
        assert condition is not None
        sure_sql = "TRUE" if condition.exact else f"({condition.sure})"
        sure_params = () if condition.exact else condition.sure_params
        read = _Query(f"SELECT id, {sure_sql} FROM ", sure_params).add(keys.sql, keys.params)
        read.add(
            f" AND ({condition.where}) ORDER BY id LIMIT ?", (*condition.where_params, limit + 1)
        )
        rows = conn.execute(read.sql, read.params).fetchall()
        if len(rows) > limit:
            del rows[limit:]
            cursor = rows[-1][0]
        if any("\x00" in row[0] for row in rows):
            return None
        sure = [item_id for item_id, decided in rows if decided]
        unsure = [item_id for item_id, decided in rows if not decided]
        scope = _Query(_BY_ID, (coll, env, json.dumps(sure)))
        size = len(sure)

    # Rows for Python: undecided by the filter's SQL, and rows outside the change's SQL form.
    items: list[Item] = []
    if unsure:
        by_id = _Query(f"SELECT doc FROM {_BY_ID}", (coll, env, json.dumps(unsure)))
        items = [
            item for item in map(decode, _texts(conn, by_id)) if filter is None or filter(item)
        ]
    # The statement: every sure row within the change's SQL form, at once.
    written = unchanged = 0
    done: list[str] = []
    if change.deletes or (form is not None and size):
        if change.deletes:
            write = _Query("DELETE FROM ").add(scope.sql, scope.params)
        else:
            assert form is not None
            write = _Query(
                f"UPDATE taskengine_items SET doc = {form.value} WHERE ", form.value_params
            )
            write.add(scope.sql.removeprefix("taskengine_items WHERE "), scope.params)
            if not tally:
                write.add(
                    f" AND ({form.applies}) AND ({form.changes})",
                    (*form.applies_params, *form.changes_params),
                )
            else:
                # ``applies`` is TRUE. One test, so that SQLite cannot evaluate it before
                # the filter (it defers a term holding a subquery): the matched rows
                # ``changes`` leaves as they are are counted, not written.
                assert condition is not None
                write.add(
                    f" AND CASE WHEN ({condition.where}) THEN CASE WHEN ({form.changes})"
                    f" THEN TRUE ELSE {_UNCHANGED}() END ELSE FALSE END",
                    (*condition.where_params, *form.changes_params),
                )
        if change.needs_ids:
            done = [row[0] for row in conn.execute(write.sql + " RETURNING id", write.params)]
            written = len(done)
        else:
            written = conn.execute(write.sql, write.params).rowcount

    # Sure rows outside the change's SQL form, for Python. Read after the statement (a row
    # it wrote still meets ``applies``), and only when it did not write every sure row.
    if not change.deletes:
        outside = 0
        if form is None or (form.applies != "TRUE" and written < size):
            read = _Query("SELECT doc FROM ").add(scope.sql, scope.params)
            if form is not None:
                read.add(f" AND ({form.applies}) IS NOT TRUE", form.applies_params)
            texts = _texts(conn, read)
            outside = len(texts)
            items += map(decode, texts)
        if tally:
            unchanged = _TALLY.count
        elif form is not None:
            unchanged = size - outside - written

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
            encoded = [admit_text(item) for item in writes]
            conn.executemany(_UPDATE_ONE, [(text, coll, env, item_id) for item_id, text in encoded])
            ids = [item_id for item_id, _ in encoded]
        done += ids
        written += len(ids)
    return ChangeResult(cursor, written, tuple(done), unchanged, refused)


def _texts(conn: sqlite3.Connection, query: _Query) -> list[str]:
    return [row[0] for row in conn.execute(query.sql, query.params)]
