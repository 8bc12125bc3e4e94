"""Fixtures of the task API tests: a manual clock, an engine over reference items, a gated one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reference_tasks import GatedStorage, items_storage

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at 2026-01-01."""
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> TaskEngine:
    """A synchronous engine over ten items, batch size 3."""
    return TaskEngine(items_storage(), clock=clock, batch_size=3)


@pytest.fixture
def gated() -> Iterator[tuple[TaskEngine, GatedStorage]]:
    """A started engine whose task stops before its second batch."""
    storage = GatedStorage()
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"{i:03d}", "a": i} for i in range(10)])
    engine = TaskEngine(storage, batch_size=4)
    engine.start()
    try:
        yield engine, storage
    finally:
        storage.release.set()
        engine.stop()
