"""``PostgresStorage.split_points``: ascending ids splitting an item set into ranges of
about equal size, from a walk of the keys or from the walk of an estimate just before
(:mod:`taskengine.storage._pgsplit`), against a real server."""

from __future__ import annotations

import bisect
from typing import Any

import pytest
from pg_conftest_plugin import emptied

from taskengine.filters import compile_filter
from taskengine.storage import _pgsplit
from taskengine.storage._estimate import WINDOWS
from taskengine.storage._pgkeys import key
from taskengine.storage._pgsplit import KeyWalk, WalkMemo, points_from_walk
from taskengine.storage.postgres import PgDatabase, PostgresStorage

pytestmark = pytest.mark.postgres

ITEMS = 60_000  # above the estimate's exact count (50,000): the estimate walks


def filled(shared: PgDatabase) -> PostgresStorage:
    storage = emptied(shared, "big", "other")
    storage.create_collection("big")
    storage.create_collection("other")
    docs = [{"_id": f"{n:06d}", "even": n % 2 == 0} for n in range(ITEMS)]
    for start in range(0, ITEMS, 10_000):
        storage.insert_items("big", "LIVE", docs[start : start + 10_000])
    storage.insert_items("other", "LIVE", docs[:100])
    return storage


def shares(points: list[str], ids: list[str]) -> list[int]:
    """How many of ``ids`` (sorted) each range of ``points`` holds."""
    ends = [*(bisect.bisect_right(ids, point) for point in points), len(ids)]
    return [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@pytest.fixture(scope="module")
def storage(pg_module_database: PgDatabase) -> PostgresStorage:
    return filled(pg_module_database)


@pytest.mark.parametrize("parts", [2, 3, 7, 64])
def test_points_split_the_set_evenly_with_or_without_an_estimate_before(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    ids = [f"{n:06d}" for n in range(ITEMS)]
    walked = storage.split_points("big", "LIVE", parts)
    even = compile_filter({"even": True})
    assert storage.estimate_count("big", "LIVE", even).exact is False
    calls: list[Any] = []
    monkeypatch.setattr(
        "taskengine.storage.postgres.walk_points", lambda *args: calls.append(args) or []
    )
    reused = storage.split_points("big", "LIVE", parts)
    assert calls == [], "the estimate's walk was not reused"
    for points in (walked, reused):
        assert len(points) == parts - 1
        assert points == sorted(set(points))
        sizes = shares(points, ids)
        # the walk: exact shares; the estimate's: within a window (ITEMS / WINDOWS) of them
        assert max(sizes) - min(sizes) <= ITEMS // WINDOWS + 1, sizes
    assert shares(walked, ids) == [
        ITEMS * (k + 1) // parts - ITEMS * k // parts for k in range(parts)
    ]


def test_a_walk_serves_once_its_own_item_set_while_fresh(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    even = compile_filter({"even": True})
    calls: list[Any] = []
    real = _pgsplit.walk_points

    def counted(*args: Any) -> list[str]:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr("taskengine.storage.postgres.walk_points", counted)
    storage.estimate_count("big", "LIVE", even)
    storage.split_points("other", "LIVE", 2)  # another item set: walks its own
    assert len(calls) == 1
    storage.split_points("big", "LIVE", 2)  # the walk kept for "big"
    assert len(calls) == 1
    storage.split_points("big", "LIVE", 2)  # served once
    assert len(calls) == 2
    storage.estimate_count("big", "LIVE", even)
    storage.estimate_count("other", "LIVE", even)  # exact (small): walks nothing
    storage.split_points("big", "LIVE", 2)
    assert len(calls) == 2


def test_a_walk_older_than_its_freshness_is_not_used() -> None:
    now = [100.0]
    memo = WalkMemo(lambda: now[0])
    memo.keep(1, 0, ["a", "b"])
    now[0] += _pgsplit.FRESH_FOR + 0.1
    assert memo.take(1, 0) is None
    memo.keep(1, 0, ["a", "b"])
    now[0] += _pgsplit.FRESH_FOR
    assert memo.take(1, 0) is not None
    assert memo.take(1, 0) is None


def test_points_from_a_walk_are_ascending_and_none_when_too_coarse() -> None:
    starts = tuple(key(f"{n:03d}") for n in range(128))
    walk = KeyWalk(1, 0, starts, 0.0)
    assert points_from_walk(walk, 4) == [starts[32], starts[64], starts[96]]
    assert points_from_walk(KeyWalk(1, 0, starts[:3], 0.0), 4) is None


def test_the_memo_forgets_the_oldest_walks_beyond_its_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most KEPT item sets and KEPT_KEYS keys in all: the oldest walks go first (a
    walk kept again counts as new), a walk alone above the keys' bound is not kept, and
    a kept walk serves a delete's windows until it is dropped."""
    monkeypatch.setattr(_pgsplit, "KEPT", 3)
    monkeypatch.setattr(_pgsplit, "KEPT_KEYS", 10)
    memo = WalkMemo(lambda: 0.0)
    for coll in (1, 2, 3):
        memo.keep(coll, 0, ["a", "b"], 512)
    memo.keep(1, 0, ["a", "b", "c"], 512)  # now the newest
    memo.keep(4, 0, ["a"], 512)  # four item sets: 2, the oldest, goes
    assert [memo.grid(coll, 0) is not None for coll in (1, 2, 3, 4)] == [True, False, True, True]
    memo.keep(5, 0, ["a"] * 7)  # four item sets: 3 goes; then 3 + 1 + 7 keys: 1 goes too
    assert memo.take(3, 0) is None
    assert memo.take(1, 0) is None
    assert memo.take(4, 0) is not None
    assert memo.take(5, 0) is not None
    memo.keep(6, 0, ["a"] * 11, 512)  # alone above the bound
    assert memo.grid(6, 0) is None
    memo.keep(7, 0, ["a", "b"], 512)
    walk = memo.grid(7, 0)
    assert walk is not None
    assert memo.grid(7, 0) is walk  # not used up
    memo.drop(walk)
    assert memo.grid(7, 0) is None
