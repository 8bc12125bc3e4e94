"""``estimate_count``: a task's item estimate without a second pass over a large item set.

Exact (``Count.exact``) up to ``EXACT_UP_TO`` items; above, estimated from evenly spread
windows of consecutive items (single items in memory). On memory, SQLite and PostgreSQL,
with filters that run inside the database, filters that run partly in Python, and plain
Python functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskengine import MemoryStorage, MemoryTaskStore, SQLiteStorage, TaskEngine
from taskengine.filters import compile_filter
from taskengine.storage._estimate import EXACT_UP_TO, ROWS, WINDOWS
from taskengine.storage.base import Storage

BIG = EXACT_UP_TO + 10_000


def _items(count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield {"_id": f"i{n:07d}", "k": n % 10, "name": f"n{n}", "tags": ["a"] if n % 4 else []}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def big(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A storage whose collection "C" holds BIG items (k = n % 10)."""
    storage: Any
    if request.param == "memory":
        storage = MemoryStorage()
    elif request.param == "sqlite":
        storage = SQLiteStorage(tmp_path / "big.db")
    else:
        from taskengine import PostgresStorage

        storage = PostgresStorage(request.getfixturevalue("pg_database"))
    try:
        storage.create_collection("C")
        storage.insert_items("C", "LIVE", _items(BIG))
        yield storage
    finally:
        if hasattr(storage, "close"):
            storage.close()


FILTERS: list[tuple[str, Callable[[], Any], int]] = [
    ("pushed exactly", lambda: compile_filter({"k": 3}), BIG // 10),
    ("pushed, checked in Python", lambda: compile_filter({"name": {"$regex": "3$"}}), BIG // 10),
    ("a Python function", lambda: lambda item: item["k"] < 5, BIG // 2),
    ("nothing", lambda: compile_filter({"k": 99}), 0),
    ("everything", lambda: compile_filter({"k": {"$gte": 0}}), BIG),
]


@pytest.mark.parametrize(("name", "make", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
def test_a_large_item_set_is_estimated_from_a_sample(
    big: Storage, name: str, make: Callable[[], Any], expected: int
) -> None:
    """Above EXACT_UP_TO items the count is an estimate (marked so) within 5% of the
    exact one (0 and all of them exactly), read from WINDOWS * ROWS documents."""
    accept = make()
    exact = big.count("C", "LIVE", accept).value
    if expected >= 0:
        assert exact == expected
    estimate = big.estimate_count("C", "LIVE", accept)  # type: ignore[attr-defined]
    assert estimate.exact is False
    if exact in (0, BIG):
        assert estimate.value == exact
    else:
        assert abs(estimate.value - exact) <= 0.05 * exact, (estimate, exact)


def test_a_sample_reads_a_bounded_number_of_documents(big: Storage) -> None:
    """The estimate checks at most WINDOWS * ROWS items in Python, whatever the size."""
    calls = 0

    def accept(item: Any) -> bool:
        nonlocal calls
        calls += 1
        return bool(item["k"] == 1)

    estimate = big.estimate_count("C", "LIVE", accept)  # type: ignore[attr-defined]
    assert calls <= WINDOWS * ROWS
    assert abs(estimate.value - BIG // 10) <= 0.05 * BIG // 10


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_small_item_set_is_counted_exactly(kind: str, tmp_path: Path) -> None:
    """Up to EXACT_UP_TO items (and without a filter) the estimate is the exact count."""
    storage: Any = SQLiteStorage(tmp_path / "s.db") if kind == "sqlite" else MemoryStorage()
    storage.create_collection("C")
    storage.insert_items("C", "LIVE", _items(1_000))
    accept = compile_filter({"name": {"$regex": "7"}})
    got = storage.estimate_count("C", "LIVE", accept)
    assert (got.value, got.exact) == (storage.count("C", "LIVE", accept).value, True)
    got = storage.estimate_count("C", "LIVE")
    assert (got.value, got.exact) == (1_000, True)


class _Recording(MemoryTaskStore):
    """A task store that records every stored estimate, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.estimates: list[tuple[str, int]] = []

    def update(self, task_id: str, change: Any, fence: Any = None, *, now: Any = None) -> Any:
        task = super().update(task_id, change, fence, now=now)
        if task is not None:
            self.estimates.append((task.status.value, task.estimated_item_count))
        return task


def test_a_task_on_a_large_collection_starts_with_the_estimate_and_ends_exact(
    tmp_path: Path,
) -> None:
    """DELETE_BY_QUERY over BIG items: estimatedItemCount is the sampled estimate while it
    runs; once COMPLETED it is the exact number deleted."""
    with SQLiteStorage(tmp_path / "t.db") as storage:
        storage.create_collection("C")
        storage.insert_items("C", "LIVE", _items(BIG))
        spec = {"name": {"$startsWith": "n1"}}  # clustered: the sample is not exact
        exact = storage.count("C", "LIVE", compile_filter(spec, dialect="wix")).value
        sampled = storage.estimate_count("C", "LIVE", compile_filter(spec, dialect="wix")).value
        assert sampled != exact
        store = _Recording()
        engine = TaskEngine(storage, task_store=store, batch_size=5_000)
        task = engine.create_task(
            {
                "type": "DELETE_BY_QUERY",
                "deleteByQueryOptions": {"dataCollectionId": "C", "filter": spec},
            }
        )
        engine.run_until_idle()
        done = engine.get_task(task.id)
    running = [estimate for status, estimate in store.estimates if status == "RUNNING"]
    assert running
    assert set(running) == {sampled}
    assert (done.status.value, done.items_succeeded, done.estimated_item_count) == (
        "COMPLETED",
        exact,
        exact,
    )
