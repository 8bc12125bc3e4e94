"""The publish scheduler on a store that keeps the schedule (ScheduleIndex): no rebuild.

Every bundled adapter has the capability: an engine's start reads no item, and each tick
asks the store what is due. Engine-level, on MemoryStorage, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import StorageError
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage
from taskengine.storage.base import Environment, ItemFilter, Page
from taskengine.tasktypes._publish_schedule import RETRY_DELAY, PublishScheduler

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


class _Reads:
    """Counts item reads that walk an item set (scan, find, count)."""

    walks = 0

    def scan(self, *args: Any, **kwargs: Any) -> Page:
        self.walks += 1
        return super().scan(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def find(
        self, collection: str, environment: Environment | str, filter: ItemFilter | None = None
    ) -> Iterator[dict[str, Any]]:
        self.walks += 1
        return super().find(collection, environment, filter)  # type: ignore[misc, no-any-return]


class CountingMemory(_Reads, MemoryStorage):
    """MemoryStorage counting walks."""


class CountingSQLite(_Reads, SQLiteStorage):
    """SQLiteStorage counting walks."""


def _items() -> list[dict[str, Any]]:
    return [
        {"_id": "past", "_publishStatus": "DRAFT", "_publishDate": at(-60)},
        {"_id": "both", "_publishDate": at(-30), "_draftDate": at(-20)},  # the later wins
        {"_id": "soon", "_publishStatus": "DRAFT", "_publishDate": at(10)},
        {"_id": "moved", "_publishStatus": "DRAFT", "_publishDate": at(10)},
        {"_id": "cancelled", "_publishStatus": "DRAFT", "_publishDate": at(10)},
        {"_id": "deleted", "_publishStatus": "DRAFT", "_publishDate": at(10)},
        {"_id": "text", "_publishStatus": "DRAFT", "_publishDate": "2020-01-01T00:00:00Z"},
        {"_id": "plain", "k": 1},
    ]


def _restart_and_check(make: Callable[[], Storage]) -> None:
    """Dates stored before the engine starts: overdue ones apply on the first round with
    no walk of any item set; a moved, cancelled or deleted date is honoured."""
    first = make()
    first.create_collection("pub", sandbox=True, publish_plugin=True)
    first.insert_items("pub", "LIVE", _items())
    first.insert_items("pub", "SANDBOX", [{"_id": "box", "_draftDate": at(-1)}])
    _close(first)

    storage = make()
    clock = ManualClock(T0)
    engine = TaskEngine(storage, clock=clock)
    scheduler = _scheduler(engine)
    engine.run_until_idle()
    if isinstance(storage, _Reads):
        assert storage.walks == 0  # no rebuild pass: the store answered from its index
    assert scheduler.uses_store_index
    assert len(scheduler) == 0
    assert storage.get_item("pub", "LIVE", "past") == {"_id": "past", "_publishStatus": "PUBLISHED"}
    assert storage.get_item("pub", "LIVE", "both") == {"_id": "both", "_publishStatus": "DRAFT"}
    assert storage.get_item("pub", "SANDBOX", "box") == {"_id": "box", "_publishStatus": "DRAFT"}
    assert storage.get_item("pub", "LIVE", "text")["_publishStatus"] == "DRAFT"  # type: ignore[index]
    assert scheduler.next_due() == at(10)

    storage.replace_items("pub", "LIVE", [{"_id": "moved", "_publishDate": at(20)}])
    storage.replace_items("pub", "LIVE", [{"_id": "cancelled", "_publishStatus": "DRAFT"}])
    storage.delete_items("pub", "LIVE", ["deleted"])
    clock.set(at(10))
    engine.run_until_idle()
    assert storage.get_item("pub", "LIVE", "soon") == {"_id": "soon", "_publishStatus": "PUBLISHED"}
    assert storage.get_item("pub", "LIVE", "moved") == {"_id": "moved", "_publishDate": at(20)}
    assert storage.get_item("pub", "LIVE", "cancelled") == {
        "_id": "cancelled",
        "_publishStatus": "DRAFT",
    }
    assert storage.get_item("pub", "LIVE", "deleted") is None
    assert scheduler.next_due() == at(20)
    clock.set(at(20))
    engine.run_until_idle()
    assert storage.get_item("pub", "LIVE", "moved") == {
        "_id": "moved",
        "_publishStatus": "PUBLISHED",
    }
    assert scheduler.next_due() is None
    _close(storage)


def _scheduler(engine: TaskEngine) -> PublishScheduler:
    found = [slot.service for slot in engine._services._slots]
    return next(s for s in found if isinstance(s, PublishScheduler))


def _close(storage: Storage) -> None:
    close = getattr(storage, "close", None)
    if close is not None:
        close()


def test_memory_restart_applies_dates_without_a_rebuild() -> None:
    """A new engine on a MemoryStorage holding dates reads no item set to find them."""
    shared = CountingMemory()
    made = iter([shared, shared])

    def make() -> Storage:
        storage = next(made)
        storage.walks = 0
        return storage

    _restart_and_check(make)


def test_sqlite_restart_applies_dates_without_a_rebuild(tmp_path: Path) -> None:
    """An engine opened on a SQLite file with dates reads no item set to find them."""
    _restart_and_check(lambda: CountingSQLite(tmp_path / "items.db"))


@pytest.mark.postgres
def test_postgres_restart_applies_dates_without_a_rebuild(pg_database: str) -> None:
    """The same on PostgreSQL (the dates come from the generated key columns' indexes)."""
    from taskengine.storage.postgres import PostgresStorage

    _restart_and_check(lambda: PostgresStorage(pg_database))


def test_many_due_items_are_drained_in_one_tick() -> None:
    """More due items than one chunk: all applied by one tick, oldest first."""
    storage = MemoryStorage()
    storage.create_collection("pub", publish_plugin=True)
    storage.insert_items(
        "pub", "LIVE", [{"_id": f"i{n:04d}", "_publishDate": at(-(n % 7))} for n in range(1_200)]
    )
    scheduler = PublishScheduler(storage)
    assert scheduler.tick(at(0)) is None
    assert all(
        item == {"_id": item["_id"], "_publishStatus": "PUBLISHED"}
        for item in storage.find("pub", "LIVE")
    )


class FlakyMemory(MemoryStorage):
    """MemoryStorage whose replace_items fails while ``failing``."""

    failing = False

    def replace_items(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise StorageError("disk on fire")
        return super().replace_items(*args, **kwargs)


def test_storage_error_retries_after_the_delay() -> None:
    """A failed write postpones the work by RETRY_DELAY; the next tick applies it."""
    storage = FlakyMemory()
    storage.create_collection("pub", publish_plugin=True)
    storage.insert_items("pub", "LIVE", [{"_id": "a", "_publishDate": at(0)}])
    scheduler = PublishScheduler(storage)
    storage.failing = True
    assert scheduler.tick(at(1)) == at(1) + RETRY_DELAY
    assert storage.get_item("pub", "LIVE", "a") == {"_id": "a", "_publishDate": at(0)}
    storage.failing = False
    assert scheduler.tick(at(1) + RETRY_DELAY) is None
    assert storage.get_item("pub", "LIVE", "a") == {"_id": "a", "_publishStatus": "PUBLISHED"}


def test_scheduled_task_flips_through_the_store_index(tmp_path: Path) -> None:
    """SCHEDULE_PUBLISHED_STATUS through the engine, then a restart: the date applies."""
    path = tmp_path / "items.db"
    clock = ManualClock(T0)
    with SQLiteStorage(path) as storage:
        storage.create_collection("pub", publish_plugin=True)
        storage.insert_items("pub", "LIVE", [{"_id": str(n), "n": n} for n in range(10)])
        engine = TaskEngine(storage, clock=clock)
        engine.create_task(
            {
                "type": "UPDATE_PUBLISH_STATUS",
                "updatePublishStatusOptions": {
                    "dataCollectionId": "pub",
                    "filter": {"n": {"$lt": 5}},
                    "operation": "SCHEDULE_PUBLISHED_STATUS",
                    "schedulePublishedStatusOptions": {"date": "2026-01-01T03:00:00+02:00"},
                },
            }
        )
        engine.run_until_idle()
        assert _scheduler(engine).next_due() == at(60)
        assert len(_scheduler(engine)) == 0  # nothing held in memory
    clock.set(at(60))
    with SQLiteStorage(path) as storage:
        engine = TaskEngine(storage, clock=clock)
        engine.run_until_idle()
        flipped = [item["_id"] for item in storage.find("pub", "LIVE") if "_publishStatus" in item]
        assert flipped == ["0", "1", "2", "3", "4"]
