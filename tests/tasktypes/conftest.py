"""Fixtures of the task-type tests: both storage adapters, a clock, an engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tasktypes_support import START

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Both storage adapters."""
    store: Storage
    store = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "i.db")
    yield store
    if isinstance(store, SQLiteStorage):
        store.close()


@pytest.fixture
def clock() -> ManualClock:
    """A hand-driven clock at 2026-01-01."""
    return ManualClock(START)


@pytest.fixture
def engine(storage: Storage, clock: ManualClock) -> TaskEngine:
    """An engine with the default task types and small batches."""
    return TaskEngine(storage, clock=clock, batch_size=3)


@pytest.fixture
def targets(storage: Storage) -> Storage:
    """``storage`` with three collections: plain, sandboxed ('boxed'), published ('pub')."""
    storage.create_collection("plain")
    storage.create_collection("boxed", sandbox=True)
    storage.create_collection("pub", publish_plugin=True)
    return storage
