"""The publish-status schedule timeline (see docs/task-types.md, scheduled changes).

These tests exercise the in-memory timeline, which the scheduler keeps for adapters
without a schedule index: the bundled adapters with the capability taken away. The
store-index mode is tested in test_publish_schedule_store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.storage import MemoryStorage, SQLiteStorage, Storage
from taskengine.tasktypes._publish_schedule import PublishScheduler

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class TimelineMemory(MemoryStorage):
    """MemoryStorage without the ScheduleIndex capability (a third-party adapter's case)."""

    due_items = None  # type: ignore[assignment]
    next_due_date = None  # type: ignore[assignment]


class TimelineSQLite(SQLiteStorage):
    """SQLiteStorage without the ScheduleIndex capability."""

    due_items = None  # type: ignore[assignment]
    next_due_date = None  # type: ignore[assignment]


def at(minutes: int) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Both adapters with a publish-plugin collection 'pub' (sandboxed) and a plain one."""
    store: Storage
    store = TimelineMemory() if request.param == "memory" else TimelineSQLite(tmp_path / "s.db")
    store.create_collection("pub", sandbox=True, publish_plugin=True)
    store.create_collection("plain")
    yield store
    if isinstance(store, SQLiteStorage):
        store.close()


def get(storage: Storage, item_id: str, env: str = "LIVE") -> dict[str, Any]:
    """Read an item that must exist."""
    item = storage.get_item("pub", env, item_id)
    assert item is not None
    return item


def test_rebuild_finds_stored_dates(storage: Storage) -> None:
    """rebuild puts every stored date of plugin collections on the timeline, both envs."""
    storage.insert_items(
        "pub",
        "LIVE",
        [
            {"_id": "a", "_publishDate": at(10)},
            {"_id": "b", "_draftDate": at(5), "_publishDate": at(20)},
            {"_id": "c"},
        ],
    )
    storage.insert_items("pub", "SANDBOX", [{"_id": "s", "_publishDate": at(1)}])
    storage.insert_items("plain", "LIVE", [{"_id": "p", "_publishDate": at(1)}])
    scheduler = PublishScheduler(storage)
    assert scheduler.rebuild() == 4
    assert [(e.environment, e.item_id, e.field) for e in scheduler.pending()] == [
        ("SANDBOX", "s", "_publishDate"),
        ("LIVE", "b", "_draftDate"),
        ("LIVE", "a", "_publishDate"),
        ("LIVE", "b", "_publishDate"),
    ]
    assert scheduler.next_due() == at(1)


def test_tick_flips_due_and_removes_date(storage: Storage) -> None:
    """A passed date flips the status and is removed; a future one stays and is next."""
    storage.insert_items(
        "pub",
        "LIVE",
        [
            {"_id": "a", "_publishStatus": "DRAFT", "_publishDate": at(10), "k": 1},
            {"_id": "b", "_publishStatus": "PUBLISHED", "_draftDate": at(30)},
        ],
    )
    scheduler = PublishScheduler(storage)
    scheduler.rebuild()
    assert scheduler.tick(at(9)) == at(10)
    assert get(storage, "a")["_publishStatus"] == "DRAFT"
    assert scheduler.tick(at(10)) == at(30)
    assert get(storage, "a") == {"_id": "a", "_publishStatus": "PUBLISHED", "k": 1}
    assert scheduler.tick(at(31)) is None
    assert get(storage, "b") == {"_id": "b", "_publishStatus": "DRAFT"}
    assert len(scheduler) == 0


def test_overdue_applied_at_once_after_restart(tmp_path: Path) -> None:
    """Dates stored before a restart are found by a new scheduler; overdue ones apply."""
    path = tmp_path / "items.db"
    with SQLiteStorage(path) as first:
        first.create_collection("pub", publish_plugin=True)
        first.insert_items(
            "pub",
            "LIVE",
            [
                {"_id": "old", "_publishStatus": "DRAFT", "_publishDate": at(1)},
                {"_id": "new", "_publishStatus": "DRAFT", "_publishDate": at(100)},
            ],
        )
    with SQLiteStorage(path) as second:
        scheduler = PublishScheduler(second)
        scheduler.rebuild()
        assert scheduler.tick(at(50)) == at(100)
        old = second.get_item("pub", "LIVE", "old")
        assert old == {"_id": "old", "_publishStatus": "PUBLISHED"}
        assert second.get_item("pub", "LIVE", "new") == {
            "_id": "new",
            "_publishStatus": "DRAFT",
            "_publishDate": at(100),
        }


def test_storage_is_truth_cancelled_date(storage: Storage) -> None:
    """A date removed from storage since scheduling is not applied."""
    storage.insert_items("pub", "LIVE", [{"_id": "a", "_publishStatus": "DRAFT"}])
    scheduler = PublishScheduler(storage)
    scheduler.schedule("pub", "LIVE", "_publishDate", [("a", at(5))])
    assert scheduler.tick(at(6)) is None
    assert get(storage, "a") == {"_id": "a", "_publishStatus": "DRAFT"}


def test_storage_is_truth_moved_date(storage: Storage) -> None:
    """A date moved later in storage is rescheduled, not applied early."""
    storage.insert_items("pub", "LIVE", [{"_id": "a", "_publishDate": at(60)}])
    scheduler = PublishScheduler(storage)
    scheduler.schedule("pub", "LIVE", "_publishDate", [("a", at(5))])
    assert scheduler.tick(at(6)) == at(60)
    assert get(storage, "a") == {"_id": "a", "_publishDate": at(60)}


def test_deleted_item_and_dropped_collection(storage: Storage) -> None:
    """Entries of a deleted item or dropped collection are dropped without error."""
    scheduler = PublishScheduler(storage)
    scheduler.schedule("pub", "LIVE", "_draftDate", [("ghost", at(1))])
    storage.create_collection("gone", publish_plugin=True)
    scheduler.schedule("gone", "LIVE", "_draftDate", [("x", at(1))])
    storage.drop_collection("gone")
    assert scheduler.tick(at(2)) is None
    assert len(scheduler) == 0


def test_both_dates_passed_latest_wins(storage: Storage) -> None:
    """When both dates passed, they apply in date order so the later one decides."""
    storage.insert_items(
        "pub",
        "LIVE",
        [
            {"_id": "a", "_publishDate": at(1), "_draftDate": at(2)},
            {"_id": "b", "_publishDate": at(2), "_draftDate": at(1)},
        ],
    )
    scheduler = PublishScheduler(storage)
    scheduler.rebuild()
    scheduler.tick(at(3))
    assert get(storage, "a") == {"_id": "a", "_publishStatus": "DRAFT"}
    assert get(storage, "b") == {"_id": "b", "_publishStatus": "PUBLISHED"}


def test_schedule_replaces_previous_due(storage: Storage) -> None:
    """Scheduling an item's field again replaces its previous entry."""
    scheduler = PublishScheduler(storage)
    scheduler.schedule("pub", "LIVE", "_publishDate", [("a", at(5))])
    scheduler.schedule("pub", "LIVE", "_publishDate", [("a", at(7))])
    assert [e.due for e in scheduler.pending()] == [at(7)]
    scheduler.unschedule("pub", "LIVE", ["a"])
    assert scheduler.next_due() is None


def test_schedule_rejects_other_fields() -> None:
    """Only _publishDate and _draftDate can be scheduled."""
    with pytest.raises(ValueError, match="_publishDate"):
        PublishScheduler(TimelineMemory()).schedule("c", "LIVE", "_other", [])


def test_naive_dates_are_utc(storage: Storage) -> None:
    """A naive stored date is taken as UTC."""
    storage.insert_items("pub", "LIVE", [{"_id": "a", "_draftDate": datetime(2026, 1, 1, 0, 5)}])
    scheduler = PublishScheduler(storage)
    scheduler.rebuild()
    assert scheduler.next_due() == at(5)
    scheduler.tick(at(5))
    assert get(storage, "a") == {"_id": "a", "_publishStatus": "DRAFT"}


def test_no_storage_is_an_error() -> None:
    """A scheduler without storage says so instead of failing obscurely."""
    with pytest.raises(RuntimeError, match="no storage"):
        PublishScheduler().rebuild()


def test_concurrent_schedule_while_ticking() -> None:
    """Threads scheduling while another ticks lose nothing: every item flips once due."""
    storage = TimelineMemory()
    storage.create_collection("pub", publish_plugin=True)
    ids = [f"i{n:04d}" for n in range(400)]
    storage.insert_items("pub", "LIVE", [{"_id": i, "_publishDate": at(1)} for i in ids])
    scheduler = PublishScheduler(storage)
    go = threading.Event()

    def feed(part: list[str]) -> None:
        go.wait(5)
        for i in part:
            scheduler.schedule("pub", "LIVE", "_publishDate", [(i, at(1))])

    threads = [threading.Thread(target=feed, args=(ids[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    go.set()
    for _ in range(50):
        scheduler.tick(at(2))
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    scheduler.tick(at(2))
    assert all(get(storage, i) == {"_id": i, "_publishStatus": "PUBLISHED"} for i in ids)
    assert len(scheduler) == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "DRAFT", "PUBLISHED"]),
            st.one_of(st.none(), st.integers(0, 20)),
            st.one_of(st.none(), st.integers(0, 20)),
        ),
        max_size=8,
    ),
    st.lists(st.integers(0, 25), max_size=4),
)
def test_ticks_match_reference(items: list[tuple[Any, Any, Any]], ticks: list[int]) -> None:
    """After any ticks, each item's status is the one of its latest passed date."""
    storage = TimelineMemory()
    storage.create_collection("pub", publish_plugin=True)
    docs = []
    for n, (status, pub, draft) in enumerate(items):
        doc: dict[str, Any] = {"_id": f"i{n}"}
        if status is not None:
            doc["_publishStatus"] = status
        if pub is not None:
            doc["_publishDate"] = at(pub)
        if draft is not None:
            doc["_draftDate"] = at(draft)
        docs.append(doc)
    storage.insert_items("pub", "LIVE", docs)
    scheduler = PublishScheduler(storage)
    scheduler.rebuild()
    now = 0
    for t in ticks:
        now = max(now, t)
        scheduler.tick(at(now))
    for doc in docs:
        expected = dict(doc)
        passed = sorted(
            (expected[f], f)
            for f in ("_publishDate", "_draftDate")
            if f in expected and expected[f] <= at(now) and ticks
        )
        for _, field in passed:
            expected["_publishStatus"] = "PUBLISHED" if field == "_publishDate" else "DRAFT"
            del expected[field]
        assert get(storage, doc["_id"]) == expected
    remaining = sum(
        1
        for d in docs
        for f in ("_publishDate", "_draftDate")
        if f in d and (not ticks or d[f] > at(now))
    )
    assert len(scheduler) == remaining


def test_schedule_same_item_twice_in_one_call(storage: Storage) -> None:
    """Within one schedule call, the last due of an item's field wins; one entry is kept."""
    scheduler = PublishScheduler(storage)
    scheduler.schedule("pub", "LIVE", "_draftDate", [("a", at(5)), ("b", at(6)), ("a", at(9))])
    assert [(e.item_id, e.due) for e in scheduler.pending()] == [("b", at(6)), ("a", at(9))]
