"""UPDATE_PUBLISH_STATUS: its options, its executor, scheduling through the engine."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tasktypes_support import (
    EXAMPLE_BODIES,
    HALLOWEEN,
    WHEN,
    failed_with,
    fields,
    holiday_items,
    items,
    plan_for,
    run,
)

from taskengine._values import values_equal
from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import TaskFailure
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage, WriteResult
from taskengine.task import TaskStatus
from taskengine.taskstore import SQLiteTaskStore
from taskengine.tasktypes._publish_schedule import PublishScheduler
from taskengine.tasktypes.update_publish_status import (
    PublishOperation,
    UpdatePublishStatusExecutor,
    UpdatePublishStatusOptions,
    parse_update_publish_status_options,
)


def test_example_schedule_date_is_parsed() -> None:
    """The example's schedule date becomes an aware UTC datetime."""
    options, _ = parse_update_publish_status_options(
        EXAMPLE_BODIES[0]["task"]["updatePublishStatusOptions"], "p"
    )
    assert options is not None
    assert options.date == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    assert options.operation is PublishOperation.SCHEDULE_PUBLISHED_STATUS


def test_publish_operation_required_and_known() -> None:
    """operation is required and must be one of the five operations."""
    _, problems = parse_update_publish_status_options({"dataCollectionId": "c"}, "t")
    assert fields(problems) == {"t.operation": "required"}
    _, problems = parse_update_publish_status_options(
        {"dataCollectionId": "c", "operation": "PUBLISH"}, "t"
    )
    assert "must be one of" in fields(problems)["t.operation"]


@pytest.mark.parametrize(
    ("operation", "key"),
    [
        ("SCHEDULE_PUBLISHED_STATUS", "schedulePublishedStatusOptions"),
        ("SCHEDULE_DRAFT_STATUS", "scheduleDraftStatusOptions"),
    ],
)
def test_schedule_needs_date(operation: str, key: str) -> None:
    """The schedule operations need their options' date, parseable."""
    base = {"dataCollectionId": "c", "operation": operation}
    _, problems = parse_update_publish_status_options(base, "t")
    assert fields(problems) == {f"t.{key}.date": "required"}
    _, problems = parse_update_publish_status_options({**base, key: {}}, "t")
    assert fields(problems) == {f"t.{key}.date": "required"}
    _, problems = parse_update_publish_status_options({**base, key: {"date": "soon"}}, "t")
    assert fields(problems) == {f"t.{key}.date": "must be an ISO-8601 date-time"}
    options, problems = parse_update_publish_status_options(
        {**base, key: {"date": "2030-05-01T12:00:00+02:00"}}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.date == datetime(2030, 5, 1, 10, tzinfo=timezone.utc)


def test_schedule_options_only_with_their_operation() -> None:
    """A schedule options object that does not match the operation is a violation."""
    _, problems = parse_update_publish_status_options(
        {
            "dataCollectionId": "c",
            "operation": "SET_DRAFT_STATUS",
            "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
        "t",
    )
    assert fields(problems) == {
        "t.schedulePublishedStatusOptions": "not allowed with operation SET_DRAFT_STATUS"
    }


@pytest.mark.parametrize("op", ["SET_PUBLISHED_STATUS", "SET_DRAFT_STATUS", "CANCEL_SCHEDULING"])
def test_non_schedule_operations_need_no_date(op: str) -> None:
    """SET_* and CANCEL_SCHEDULING parse without a date."""
    options, problems = parse_update_publish_status_options(
        {"dataCollectionId": "c", "operation": op}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.date is None


def test_publish_without_plugin_fails_wde0119(targets: Storage) -> None:
    """UPDATE_PUBLISH_STATUS on a collection without the plugin fails with WDE0119."""
    with pytest.raises(TaskFailure) as info:
        UpdatePublishStatusExecutor().plan(
            UpdatePublishStatusOptions("plain", PublishOperation.SET_PUBLISHED_STATUS), targets
        )
    assert info.value.code == "WDE0119"
    assert info.value.data == {"dataCollectionId": "plain"}


def test_publish_set_apply(targets: Storage) -> None:
    """SET_DRAFT_STATUS writes items not already DRAFT."""
    ex = UpdatePublishStatusExecutor()
    plan = plan_for(
        targets, ex, UpdatePublishStatusOptions("pub", PublishOperation.SET_DRAFT_STATUS)
    )
    changes = ex.apply(
        plan,
        [
            {"_id": "1"},
            {"_id": "2", "_publishStatus": "DRAFT"},
            {"_id": "3", "_publishStatus": "PUBLISHED"},
        ],
    )
    assert [(i["_id"], i["_publishStatus"]) for i in changes.replaces] == [
        ("1", "DRAFT"),
        ("3", "DRAFT"),
    ]
    assert changes.unchanged == 1


def test_publish_schedule_and_cancel_apply(targets: Storage) -> None:
    """SCHEDULE stores the date; CANCEL removes both dates; same state is unchanged."""
    ex = UpdatePublishStatusExecutor()
    plan = plan_for(
        targets,
        ex,
        UpdatePublishStatusOptions("pub", PublishOperation.SCHEDULE_DRAFT_STATUS, date=WHEN),
    )
    changes = ex.apply(plan, [{"_id": "1"}, {"_id": "2", "_draftDate": WHEN}])
    assert [i["_id"] for i in changes.replaces] == ["1"]
    assert changes.replaces[0]["_draftDate"] == WHEN
    assert changes.unchanged == 1
    cancel = plan_for(
        targets, ex, UpdatePublishStatusOptions("pub", PublishOperation.CANCEL_SCHEDULING)
    )
    changes = ex.apply(
        cancel, [{"_id": "1", "_draftDate": WHEN, "_publishDate": WHEN, "k": 1}, {"_id": "2"}]
    )
    assert changes.replaces == [{"_id": "1", "k": 1}]
    assert changes.unchanged == 1


def test_publish_committed_feeds_scheduler(targets: Storage) -> None:
    """committed puts written ids on the timeline (kept for a storage without a schedule
    index), and a cancel takes them off."""

    class TimelineMemory(MemoryStorage):
        due_items = None  # type: ignore[assignment]
        next_due_date = None  # type: ignore[assignment]

    scheduler = PublishScheduler(TimelineMemory())
    ex = UpdatePublishStatusExecutor(scheduler)
    plan = plan_for(
        targets,
        ex,
        UpdatePublishStatusOptions("pub", PublishOperation.SCHEDULE_PUBLISHED_STATUS, date=WHEN),
    )
    changes = ex.apply(plan, [{"_id": "a"}, {"_id": "b"}])
    ex.committed(plan, changes, WriteResult(("a",), ("b",)))
    assert [(e.item_id, e.field, e.due) for e in scheduler.pending()] == [
        ("a", "_publishDate", WHEN)
    ]
    cancel = plan_for(
        targets, ex, UpdatePublishStatusOptions("pub", PublishOperation.CANCEL_SCHEDULING)
    )
    ex.committed(cancel, changes, WriteResult(("a",), ()))
    assert scheduler.pending() == []
    # With a store that keeps the schedule, nothing is held in memory.
    indexed = PublishScheduler(targets)
    assert indexed.uses_store_index
    UpdatePublishStatusExecutor(indexed).committed(plan, changes, WriteResult(("a",), ()))
    assert indexed.pending() == []


def test_example_schedule_publish_overdue(storage: Storage, engine: TaskEngine) -> None:
    """Example SCHEDULE_PUBLISHED_STATUS for 2025-01-01 is overdue at 2026: applied at once."""
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(EXAMPLE_BODIES[0]))
    assert task.status is TaskStatus.COMPLETED
    by_id = {i["_id"]: i for i in items(storage)}
    for item_id in ("1", "3", "5"):
        assert by_id[item_id]["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in by_id[item_id]
    assert "_publishStatus" not in by_id["2"]


def test_schedule_future_flips_when_clock_passes(storage: Storage, clock: ManualClock) -> None:
    """A future schedule is stored, then applied when the injected clock passes it."""
    clock_before = ManualClock(datetime(2024, 12, 31, tzinfo=timezone.utc))
    engine = TaskEngine(storage, clock=clock_before, batch_size=2)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    run(engine, copy.deepcopy(EXAMPLE_BODIES[0]))
    stored = storage.get_item("Items", "LIVE", "1")
    assert stored is not None
    assert values_equal(stored["_publishDate"], datetime(2025, 1, 1, 10, tzinfo=timezone.utc))
    clock_before.set(datetime(2025, 1, 1, 9, 59, tzinfo=timezone.utc))
    engine.run_until_idle()
    stored = storage.get_item("Items", "LIVE", "5")
    assert stored is not None
    assert stored["_publishStatus"] == "DRAFT"
    clock_before.set(datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc))
    engine.run_until_idle()
    for item_id in ("1", "3", "5"):
        stored = storage.get_item("Items", "LIVE", item_id)
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in stored


def test_cancel_scheduling_prevents_flip(storage: Storage) -> None:
    """CANCEL_SCHEDULING removes pending dates, so nothing flips later."""
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=timezone.utc))
    engine = TaskEngine(storage, clock=clock)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    run(
        engine,
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Items",
                "operation": "SCHEDULE_DRAFT_STATUS",
                "scheduleDraftStatusOptions": {"date": "2024-06-01T00:00:00Z"},
            },
        },
    )
    assert all("_draftDate" in i for i in items(storage))
    task = run(
        engine,
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Items",
                "operation": "CANCEL_SCHEDULING",
            },
        },
    )
    assert task.items_succeeded == 5
    clock.set(datetime(2025, 1, 1, tzinfo=timezone.utc))
    engine.run_until_idle()
    assert items(storage) == holiday_items()


def test_schedule_survives_restart(tmp_path: Path) -> None:
    """With SQLite storage, a schedule made before a restart is applied after it."""
    path = tmp_path / "all.db"
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=timezone.utc))
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items", publish_plugin=True)
        storage.insert_items("Items", "LIVE", holiday_items())
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, clock=clock)
        run(engine, copy.deepcopy(EXAMPLE_BODIES[0]))
        store.close()
    clock.set(datetime(2025, 2, 1, tzinfo=timezone.utc))
    with SQLiteStorage(path) as storage:
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, clock=clock)
        engine.run_until_idle()
        stored = storage.get_item("Items", "LIVE", "1")
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in stored
        store.close()


@pytest.mark.parametrize("op", ["SET_PUBLISHED_STATUS", "SET_DRAFT_STATUS"])
def test_set_status(storage: Storage, engine: TaskEngine, op: str) -> None:
    """SET_* writes _publishStatus on matching items; already-set items succeed unchanged."""
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(
        engine,
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Items",
                "operation": op,
                "filter": HALLOWEEN,
            },
        },
    )
    status = "PUBLISHED" if op == "SET_PUBLISHED_STATUS" else "DRAFT"
    by_id = {i["_id"]: i for i in items(storage)}
    assert [by_id[i].get("_publishStatus") for i in ("1", "3", "5")] == [status] * 3
    assert "_publishStatus" not in by_id["2"]
    assert task.items_succeeded == 3


def test_publish_without_plugin_fails(storage: Storage, engine: TaskEngine) -> None:
    """UPDATE_PUBLISH_STATUS without the publish plugin FAILS with WDE0119."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(EXAMPLE_BODIES[0]))
    failed_with(task, "WDE0119")
    assert items(storage) == holiday_items()


def test_now_overdue_schedule_in_started_engine() -> None:
    """In a started engine, an overdue schedule is applied by the service thread."""
    storage = MemoryStorage()
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    engine = TaskEngine(storage, tick_interval=0.01)
    engine.start()
    try:
        task = engine.create_task(copy.deepcopy(EXAMPLE_BODIES[0]))
        assert engine.wait(task.id, timeout=30).status is TaskStatus.COMPLETED
        deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
        stored = storage.get_item("Items", "LIVE", "1")
        while stored is not None and "_publishDate" in stored:
            assert datetime.now(timezone.utc) < deadline
            threading.Event().wait(0.01)  # bounded poll: the service runs in its thread
            stored = storage.get_item("Items", "LIVE", "1")
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
    finally:
        engine.stop(timeout=10)
