"""One-pass set-based deletes on PostgreSQL: a batch is a few key windows, one ``DELETE`` each.

Used by :func:`taskengine.storage._pgchange.delete_rows` when the filter's SQL form says
which rows it may leave undecided by a cheap condition of their own (``undecided``: on
PostgreSQL the rows JSONB cannot hold, ``data IS NULL``, when the rest is exact), and
without a filter. A window is the next ``size`` keys; two statements run it:

1. the key ``size`` keys on and the one after it (a range read of the primary key,
   index-only on an all-visible table), and whether a row of the window meets
   ``undecided`` (the partial index ``taskengine_items_undecided`` of the rows without
   jsonb answers that without reading the window);
2. ``DELETE`` of the window's rows meeting ``sure`` (evaluated once per row over the key
   range; the count is the statement's row count, ``RETURNING id`` only when the change
   needs the ids).

Only when a row of the window meets ``undecided`` are those rows read (locked, as they
are once no other transaction holds them), checked with the filter in Python and the
accepted ones deleted by id.

**Windows on the estimate's grid.** The task's estimate walked the item set's keys just
before its first batch, keeping every 512th (:mod:`taskengine.storage._pgestimate`), and
the storage keeps that walk (:class:`~taskengine.storage._pgsplit.WalkMemo`). While it is
there, a window ends on one of its keys (:func:`grid_edge`: as many whole steps of the
walk as ``size`` allows) and statement 1 is not run: a look at the partial index for
undecided rows when the filter may leave some, then the ``DELETE``. The keys are not
read a second time (at 1M items, 187 reads of a window's keys took 0.14 s; the walk
replaces a count and a coarser walk the estimate took anyway). A walk may be stale
(keys added since), so such a window runs in a savepoint like a speculative one, and one
holding more candidates than the batch may take is rolled back, the walk forgotten, and
the window read again by keys: any walk leaves results and the ``limit`` rule intact (a
property test gives windows arbitrary keys). Savepoints are released with the batch, not
one by one (a round trip less a window).

**How many keys.** A batch may cover at most ``limit`` *candidates* (rows meeting
``where``: the sure ones and the undecided ones). The first window is ``limit`` keys,
which cannot hold more. It tells the share of candidates among keys: when fewer than
``limit`` candidates were found (a filter not matching every item), the batch goes on
with a *speculative* window sized by that share to hold the candidates still needed,
less three standard deviations, and at most :data:`SPREAD` keys per candidate still
needed, inside a savepoint: when it holds more candidates than needed after all (the
matches are not spread evenly), it is rolled back and the batch goes on with a window of
as many keys as candidates are needed, which cannot. At most :data:`WINDOWS` windows a
batch, and none once the batch has three quarters of its candidates. So a filter
matching 40% of the items runs about 2.2 times fewer batches (each a transaction with the
engine's checkpoint) than windows of ``limit`` keys did, and a sparse one up to seven
times fewer, while no batch covers more than ``limit`` candidates; a rolled back window
wastes at most twice the batch's work (measured on ids whose matches come in long runs,
the worst case: a cap of 16 ``limit`` keys instead wasted more than it saved).

Both deletes lock what they delete, and a row another transaction deleted first is
skipped (PostgreSQL checks the condition again on the row's latest version), so two
processes deleting the same items each count only the rows they deleted. Everything runs
in the caller's transaction (the engine's ``atomic()`` block, with the task's checkpoint).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any, Final

import attrs

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgkeys import unkey
from taskengine.storage._pgsplit import KeyWalk
from taskengine.storage.base import ItemFilter
from taskengine.storage.changes import ChangeResult
from taskengine.storage.codec import decode

__all__ = ["SPREAD", "WINDOWS", "delete_accepted", "key_after", "one_pass", "read_undecided"]

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"
# ``e``: the key ``size`` keys on (the window's last) and the one after it, if any; nothing
# when fewer keys are left (the window is then the rest of the item set).
_EDGE_ROWS: Final = (
    "WITH e AS MATERIALIZED (SELECT id " + _ITEMS + "{lower} ORDER BY id LIMIT 2 OFFSET %s)"
    " SELECT (SELECT min(id) FROM e), (SELECT count(*) FROM e), {undecided}"
)
_ANY_UNDECIDED: Final = (
    "EXISTS (SELECT 1 " + _ITEMS + "{lower} AND ((SELECT min(id) FROM e) IS NULL"
    " OR id <= (SELECT min(id) FROM e)) AND ({undecided}))"
)
_DELETE_WINDOW: Final = "DELETE " + _ITEMS + "{lower} AND ({sure})"
# Whether a row of a window (``{lower}``) meets ``undecided``, for a window whose end the
# grid gave (the partial index ``taskengine_items_undecided`` answers it).
_ANY_UNDECIDED_IN: Final = "SELECT EXISTS (SELECT 1 " + _ITEMS + "{lower} AND ({undecided}))"
_UNDECIDED: Final = (
    "SELECT id, doc " + _ITEMS + "{lower} AND ({where}) AND ({sure}) IS NOT TRUE"
    " ORDER BY id FOR UPDATE"
)
_DELETE_KEYS: Final = "DELETE " + _ITEMS + " AND id = ANY(%s::text[]) RETURNING id"
_SAVEPOINT: Final = "taskengine_window"

SPREAD: Final = 2
"""A speculative window is at most this many keys per candidate still needed."""
WINDOWS: Final = 4
"""Windows per batch at most."""
_ENOUGH: Final = 4
"""A batch ends once fewer than ``limit // _ENOUGH`` candidates are still needed."""

Clause = tuple[str, tuple[Any, ...]]
"""SQL text and its parameters."""


@attrs.frozen
class _Window:
    """What a window's statements did: its last key (``None``: the rest of the item
    set), whether keys follow it, the ids deleted (when asked for) and how many, and the
    undecided rows read (locked, not deleted yet)."""

    last: str | None
    more: bool
    ids: list[str]
    deleted: int
    undecided: list[tuple[str, str]]


def one_pass(
    conn: Connection,
    coll: int,
    env: int,
    lower: tuple[str, bool] | None,
    limit: int,
    filter: ItemFilter | None,
    where: Clause,
    sure: Clause,
    undecided: Clause,
    needs_ids: bool,
    until: str | None,
    grid: KeyWalk | None = None,
    stale: Callable[[KeyWalk], None] | None = None,
) -> ChangeResult:
    """Delete the next batch after ``lower`` (see the module docstring): windows of keys
    holding at most ``limit`` candidates in all, none above ``until`` (a slice's last
    stored key, inclusive). ``undecided`` is ``("FALSE", ())`` when nothing is.

    ``grid``: keys of the item set at fixed steps (an estimate's walk), on which windows
    end without reading their keys; ``stale(grid)`` is told when a window ending on it
    held more candidates than its keys by the walk could (keys were added since)."""
    checked = undecided if undecided[0] != "FALSE" and filter is not None else None
    need = size = limit
    seen = found = 0  # keys and candidates of the windows kept
    done: list[str] = []
    written = 0
    cursor: str | None = None
    speculate = True  # until a window is rolled back
    kept = 0
    while kept < WINDOWS:
        speculative = size > need
        edge = None if grid is None else grid_edge(grid, lower, until, size)
        guarded = speculative or edge is not None
        if guarded:
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        window = _run_window(
            conn, coll, env, lower, until, size, where, sure, checked, needs_ids, edge
        )
        candidates = window.deleted + len(window.undecided)
        if guarded and candidates > need:
            # More candidates than the batch may take: this window is not part of it; the
            # batch goes on with a window that cannot hold too many.
            conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
            if speculative:
                size, speculate = need, False
            else:
                # At most ``need`` keys by the grid, so keys were added since its walk:
                # the windows are found by reading keys from now on.
                assert grid is not None
                if stale is not None:
                    stale(grid)
                grid = None
            continue
        kept += 1
        gone: list[str] = []
        if window.undecided:
            assert filter is not None
            gone = delete_accepted(conn, coll, env, window.undecided, filter)
        done.extend(window.ids)
        done.extend(gone)
        written += window.deleted + len(gone)
        if window.last is None or not window.more:
            cursor = None  # the item set (or the slice) ends within this window
            break
        cursor = window.last
        need -= candidates
        seen, found = seen + size, found + candidates
        if need < max(1, limit // _ENOUGH):
            break
        size = _next_size(need, seen, found) if speculate else need
        lower = (window.last, False)
    if len(done) > 1:
        done.sort()
    return ChangeResult(None if cursor is None else unkey(cursor), written, tuple(done))


def _next_size(need: int, seen: int, found: int) -> int:
    """Keys for the next window: ``need`` (it cannot hold more candidates), or more when
    the share of candidates so far says that many keys hold, with three standard
    deviations to spare, at most ``need`` candidates (at most :data:`SPREAD` times
    ``need`` keys, which bounds the work a rolled back window wastes)."""
    most = SPREAD * need
    if not found:
        return most
    target = need - 3 * math.sqrt(need)
    if target <= 0:
        return need
    return max(need, min(most, int(target * seen / found)))


def grid_edge(
    grid: KeyWalk, lower: tuple[str, bool] | None, until: str | None, size: int
) -> tuple[str | None, bool] | None:
    """Where a window of at most ``size`` keys after ``lower`` ends by ``grid`` (a walk
    of fixed steps, as it was): ``(its last key, True)``, or ``(None, False)`` when it
    reaches the item set's end (or ``until``); ``None`` when it would be less than two
    steps of the grid (read its keys instead).

    ``grid.starts[i]`` was the key at position ``i * spacing``. After a key between
    ``starts[i - 1]`` and ``starts[i]`` the window ends on ``starts[i - 1 + size //
    spacing]``: at most ``size // spacing`` steps of keys; from the item set's start, on
    ``starts[(size - 1) // spacing]``. When that is past the last key kept, the window
    is the rest (fewer keys: the last step holds at most ``spacing``).
    """
    spacing, starts = grid.spacing, grid.starts
    if (size - 1) // spacing < 2:
        return None
    if lower is None:
        first = 0
    else:
        find = bisect.bisect_left if lower[1] else bisect.bisect_right
        first = find(starts, lower[0])  # starts[first] is the first point after lower
    end = (size - 1) // spacing if first == 0 else first - 1 + size // spacing
    if end >= len(starts):
        return (None, False)
    last = starts[end]
    if until is not None and last >= until:
        return (None, False)
    return (last, True)


def _run_window(
    conn: Connection,
    coll: int,
    env: int,
    lower: tuple[str, bool] | None,
    until: str | None,
    size: int,
    where: Clause,
    sure: Clause,
    undecided: Clause | None,
    needs_ids: bool,
    edge: tuple[str | None, bool] | None = None,
) -> _Window:
    """The window of the next ``size`` keys after ``lower`` (or up to ``edge``, from
    :func:`grid_edge`): its ``sure`` rows deleted, its undecided rows read locked."""
    keyed, keys = ("", ()) if lower is None else key_after(lower)
    if until is not None:
        keyed, keys = keyed + " AND id <= %s", (*keys, until)
    if edge is not None:
        return _run_grid_window(
            conn, coll, env, keyed, keys, edge, where, sure, undecided, needs_ids
        )
    statement = _EDGE_ROWS.format(
        lower=keyed,
        undecided="FALSE"
        if undecided is None
        else _ANY_UNDECIDED.format(lower=keyed, undecided=undecided[0]),
    )
    params = (
        *(coll, env, *keys, size - 1),  # e
        *(() if undecided is None else (coll, env, *keys, *undecided[1])),
    )
    row = conn.execute(statement, params).fetchone()
    assert row is not None  # aggregates without GROUP BY: one row
    last: str | None = row[0]
    more, any_undecided = int(row[1]) == 2, bool(row[2])
    if last is not None:
        keyed, keys = keyed + " AND id <= %s", (*keys, last)
    checked = undecided if any_undecided else None
    return _delete_window(conn, coll, env, keyed, keys, last, more, where, sure, checked, needs_ids)


def _delete_window(
    conn: Connection,
    coll: int,
    env: int,
    keyed: str,
    keys: tuple[str, ...],
    last: str | None,
    more: bool,
    where: Clause,
    sure: Clause,
    undecided: Clause | None,
    needs_ids: bool,
) -> _Window:
    """Delete the ``sure`` rows of the window ``keyed`` (its keys bound), then read
    locked the rows it left that meet ``undecided`` and ``where`` (``None``: it has none
    of them)."""
    cursor = conn.execute(
        _DELETE_WINDOW.format(lower=keyed, sure=sure[0]) + (" RETURNING id" if needs_ids else ""),
        (coll, env, *keys, *sure[1]),
    )
    if needs_ids:
        ids = [unkey(stored) for (stored,) in cursor.fetchall()]
        deleted = len(ids)
    else:
        ids, deleted = [], cursor.rowcount
    rows: list[tuple[str, str]] = []
    if undecided is not None:
        # The undecided rows are among those meeting ``undecided``: tested first.
        among = (f"({undecided[0]}) AND ({where[0]})", (*undecided[1], *where[1]))
        rows = read_undecided(conn, coll, env, keyed, keys, among, sure)
    return _Window(last, more, ids, deleted, rows)


def _run_grid_window(
    conn: Connection,
    coll: int,
    env: int,
    keyed: str,
    keys: tuple[str, ...],
    edge: tuple[str | None, bool],
    where: Clause,
    sure: Clause,
    undecided: Clause | None,
    needs_ids: bool,
) -> _Window:
    """:func:`_run_window` for a window whose end the grid gave: its delete, after a look
    for undecided rows when there may be some."""
    last, more = edge
    if last is not None:
        keyed, keys = keyed + " AND id <= %s", (*keys, last)
    any_undecided = False
    if undecided is not None:
        found = conn.execute(
            _ANY_UNDECIDED_IN.format(lower=keyed, undecided=undecided[0]),
            (coll, env, *keys, *undecided[1]),
        ).fetchone()
        any_undecided = found is not None and bool(found[0])
    checked = undecided if any_undecided else None
    return _delete_window(conn, coll, env, keyed, keys, last, more, where, sure, checked, needs_ids)


def key_after(lower: tuple[str, bool]) -> tuple[str, tuple[str]]:
    """The condition ``id > lower`` (``>=`` when inclusive) and its parameter."""
    return (" AND id >= %s" if lower[1] else " AND id > %s"), (lower[0],)


def read_undecided(
    conn: Connection,
    coll: int,
    env: int,
    keyed: str,
    keys: tuple[str, ...],
    where: Clause,
    sure: Clause,
) -> list[tuple[str, str]]:
    """The rows of the key range ``keyed`` meeting ``where`` but not ``sure``, locked:
    ``(stored key, doc)`` in key order."""
    rows = conn.execute(
        _UNDECIDED.format(lower=keyed, where=where[0], sure=sure[0]),
        (coll, env, *keys, *where[1], *sure[1]),
    ).fetchall()
    return [(str(stored), str(text)) for stored, text in rows]


def delete_accepted(
    conn: Connection, coll: int, env: int, rows: list[tuple[str, str]], filter: ItemFilter
) -> list[str]:
    """Delete the ``rows`` (locked, read by :func:`read_undecided`) that ``filter``
    accepts; their ids."""
    accepted = [stored for stored, text in rows if filter(decode(text))]
    if not accepted:
        return []
    gone = conn.execute(_DELETE_KEYS, (coll, env, accepted)).fetchall()
    return [unkey(row[0]) for row in gone]
