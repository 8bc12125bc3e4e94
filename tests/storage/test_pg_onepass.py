"""One-pass deletes on PostgreSQL (``storage/_pgonepass.py``): key windows sized by the
candidates seen, never more than ``limit`` candidates a batch.

A batch's first window is ``limit`` keys; a later one is sized by the share of candidates
so far and runs in a savepoint, rolled back when it holds more candidates than the batch
may still take. Against a real server: every batch covers at most ``limit`` accepted
items, changes exactly them, and a whole run ends as ``change_by_scan`` ends on a copy.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied, grid_edges

from taskengine.filters import compile_filter
from taskengine.storage import _pgonepass
from taskengine.storage import postgres as postgres_module
from taskengine.storage._pgsplit import KeyWalk
from taskengine.storage.changes import change_by_scan
from taskengine.storage.postgres import PgDatabase, PostgresStorage
from taskengine.tasktypes._changes import DELETE_MATCHED

pytestmark = pytest.mark.postgres

MATCH = compile_filter({"m": 1})


@pytest.fixture(autouse=True)
def set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables here are never analyzed: the set-based statements are forced."""
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    return pg_module_database


def _items(pattern: list[int]) -> list[dict[str, Any]]:
    """Item k matches when pattern[k] is 1 or 3; 2 and 3 hold U+0000 (no jsonb)."""
    return [
        {"_id": f"{k:03d}", "m": value % 2, **({"z": "\x00"} if value >= 2 else {})}
        for k, value in enumerate(pattern)
    ]


def _ids(storage: PostgresStorage, name: str) -> list[str]:
    return [item["_id"] for item in storage.find(name, "LIVE")]


# Runs of equal values: sparse stretches before dense ones make speculative windows
# overflow (and be rolled back).
_RUNS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 12)), max_size=8).map(
    lambda runs: [value for value, length in runs for _ in range(length)]
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(_RUNS, st.lists(st.integers(0, 3), max_size=40)),
    st.integers(1, 12),
    st.booleans(),
    st.data(),
)
def test_batches_never_exceed_the_limit_and_end_as_the_scan_path(
    shared: PgDatabase, pattern: list[int], limit: int, needs_ids: bool, data: st.DataObject
) -> None:
    """Whatever the runs of matching items, each batch deletes at most ``limit`` items,
    exactly the matching ones of its key range, reports their ids when asked, and the
    whole run deletes what ``change_by_scan`` deletes."""
    storage = emptied(shared, "a", "b")
    _batches_end_as_the_scan_path(storage, _items(pattern), limit, needs_ids, data)


# Any ascending keys: the items' own, others, a few or none of them.
_KEYS = st.lists(st.integers(-1, 45), max_size=30).map(
    lambda numbers: sorted({f"{n:03d}" for n in numbers})
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(_RUNS, st.lists(st.integers(0, 3), max_size=40)),
    st.integers(1, 12),
    st.booleans(),
    st.integers(1, 4),
    st.data(),
)
def test_windows_ending_on_any_grid_keep_the_limit_and_end_as_the_scan_path(
    shared: PgDatabase,
    pattern: list[int],
    limit: int,
    needs_ids: bool,
    spacing: int,
    data: st.DataObject,
) -> None:
    """Windows ending on the keys of an estimate's walk (``grid_edge``): whether the walk
    is of these items (every ``spacing``-th key) or stale (any keys at all, said to be
    ``spacing`` apart), no batch covers more than ``limit`` candidates and the run ends
    as ``change_by_scan``'s."""
    items = _items(pattern)
    own = [item["_id"] for item in items][::spacing]
    starts = data.draw(st.one_of(st.just(own), _KEYS), label="walk")
    storage = emptied(shared, "a", "b")
    walk = KeyWalk(0, 0, tuple(starts), 0.0, spacing)
    stale: list[KeyWalk] = []
    storage._walks.grid = lambda coll, env: walk  # type: ignore[method-assign]
    storage._walks.drop = stale.append  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        used = grid_edges(patch)
        _batches_end_as_the_scan_path(storage, items, limit, needs_ids, data)
    if starts == own and (limit - 1) // spacing >= 2:
        assert stale == [], "a walk of these very items was taken for stale"
        assert any(edge is not None for edge in used), "no window ended on the walk"


def _batches_end_as_the_scan_path(
    storage: PostgresStorage,
    items: list[dict[str, Any]],
    limit: int,
    needs_ids: bool,
    data: st.DataObject,
) -> None:
    """Delete the matching ``items`` from collection ``a`` batch by batch (up to an
    ``until`` drawn from ``data``), checking every batch, then from ``b`` by
    ``change_by_scan``: the same items are left."""
    for name in ("a", "b"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", items)
    change = DELETE_MATCHED if not needs_ids else _WithIds()
    ids = [item["_id"] for item in items]
    until = data.draw(st.sampled_from([None, *ids]), label="until")
    after: str | None = None
    left = ids
    for _ in range(len(items) + 2):
        with storage.atomic():
            result = storage.change_matching(
                "a", "LIVE", after=after, limit=limit, filter=MATCH, change=change, until=until
            )
        covered = [
            item["_id"]
            for item in items
            if (after is None or item["_id"] > after)
            and (result.cursor is None or item["_id"] <= result.cursor)
            and (until is None or item["_id"] <= until)
            and MATCH(item)
        ]
        assert len(covered) <= limit
        assert result.written == len(covered)
        if needs_ids:
            assert list(result.done) == covered
        left = [item_id for item_id in left if item_id not in covered]
        assert _ids(storage, "a") == left
        if result.cursor is None:
            break
        assert after is None or result.cursor > after
        after = result.cursor
    else:
        pytest.fail("the batches did not reach the end")
    written = 0
    after = None
    while True:
        with storage.atomic():
            reference = change_by_scan(
                storage, "b", "LIVE", after=after, limit=limit, filter=MATCH, change=change,
                until=until,
            )  # fmt: skip
        written += reference.written
        if reference.cursor is None:
            break
        after = reference.cursor
    assert _ids(storage, "a") == _ids(storage, "b")
    assert written == len(ids) - len(left)


class _WithIds:
    """A delete that asks for the ids (as ``DELETE_MATCHED`` with ``needs_ids``)."""

    deletes = True
    needs_ids = True

    def __call__(self, item: Any, /) -> Any:
        raise AssertionError("a delete has no per-item form")

    def to_sql(self, backend: str, document: str) -> None:
        return None


def test_a_window_with_too_many_candidates_is_rolled_back(shared: PgDatabase) -> None:
    """A first window without candidates, then a dense run: the speculative window over
    the run (20 keys, twice the candidates needed) holds more than the batch may take, so
    it is undone, and the batch goes on with a window of 10 keys; the block goes on and
    commits."""
    storage = emptied(shared, "r")
    storage.create_collection("r")
    storage.insert_items("r", "LIVE", _items([0] * 10 + [1] * 30))
    with storage.atomic():
        first = storage.change_matching(
            "r", "LIVE", after=None, limit=10, filter=MATCH, change=_WithIds()
        )
        # The block is still usable after the rollback to the savepoint.
        second = storage.change_matching(
            "r", "LIVE", after=first.cursor, limit=10, filter=MATCH, change=_WithIds()
        )
    assert (first.cursor, first.written) == ("019", 10)
    assert first.done == tuple(f"{k:03d}" for k in range(10, 20))
    assert (second.cursor, second.written) == ("029", 10)
    assert second.done == tuple(f"{k:03d}" for k in range(20, 30))
    assert _ids(storage, "r") == [f"{k:03d}" for k in (*range(10), *range(30, 40))]


def test_a_sparse_filter_takes_few_batches(shared: PgDatabase) -> None:
    """One item in ten matches: a batch of 100 covers far more than 100 keys (100, then
    windows of twice the candidates still needed: 540 keys, 53 candidates), so 3,000
    items take 6 batches, not 30."""
    storage = emptied(shared, "s")
    storage.create_collection("s")
    storage.insert_items("s", "LIVE", _items([1 if k % 10 == 3 else 0 for k in range(3000)]))
    batches, written, after = 0, 0, None
    while True:
        with storage.atomic():
            result = storage.change_matching(
                "s", "LIVE", after=after, limit=100, filter=MATCH, change=DELETE_MATCHED
            )
        batches += 1
        written += result.written
        assert result.written <= 100
        if result.cursor is None:
            break
        after = result.cursor
    assert written == 300
    assert batches == 6, batches
    assert _pgonepass.SPREAD == 2


@pytest.mark.parametrize("accept", [MATCH, None])
def test_a_walk_of_the_items_ends_every_window_without_reading_keys(
    shared: PgDatabase, accept: Any
) -> None:
    """40 matching items, a walk of every third key, batches of 10: from the start the
    window ends on the fourth key kept (10 keys), after a kept key on the third one on (9
    keys), no statement reads the window's keys (no ``OFFSET``), and the walk is never
    taken for stale; with a filter that may leave rows undecided (the window's delete
    also says whether it has such rows) or without one (a plain delete)."""
    storage = emptied(shared, "g")
    storage.create_collection("g")
    items = _items([1] * 40)
    storage.insert_items("g", "LIVE", items)
    walk = KeyWalk(0, 0, tuple(item["_id"] for item in items[::3]), 0.0, 3)
    stale: list[KeyWalk] = []
    storage._walks.grid = lambda coll, env: walk  # type: ignore[method-assign]
    storage._walks.drop = stale.append  # type: ignore[method-assign]
    statements: list[str] = []
    written: list[int] = []
    after: str | None = None
    with pytest.MonkeyPatch.context() as patch:
        real = _pgonepass._run_window

        def spy(conn: Any, *args: Any) -> Any:
            class Seen:
                def execute(self, sql: str, params: Any = ()) -> Any:
                    statements.append(sql)
                    return conn.execute(sql, params)

            return real(Seen(), *args)

        patch.setattr(_pgonepass, "_run_window", spy)
        while True:
            with storage.atomic():
                result = storage.change_matching(
                    "g", "LIVE", after=after, limit=10, filter=accept, change=DELETE_MATCHED
                )
            written.append(result.written)
            if result.cursor is None:
                break
            after = result.cursor
    assert written == [10, 9, 9, 9, 3]
    assert stale == []
    assert statements
    assert not any("OFFSET" in sql for sql in statements)
    assert _ids(storage, "g") == []
