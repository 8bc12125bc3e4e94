"""Audit of the Python task API against docs/lifecycle.md, progress.md, retention.md."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import InvalidRequest, InvalidTask, TaskNotFound
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import TaskStatus
from taskengine.taskstore import SQLiteTaskStore

OPTION_KEYS = {
    "DELETE_BY_QUERY": "deleteByQueryOptions",
    "COPY_FIELD_DATA": "copyFieldDataOptions",
    "EDIT_FIELD_DATA": "editFieldDataOptions",
    "UPDATE_PUBLISH_STATUS": "updatePublishStatusOptions",
}
REFERENCE_ALWAYS = {
    "id",
    "type",
    "status",
    "estimatedItemCount",
    "itemsSucceeded",
    "itemsFailed",
    "failures",
}

SEED_TASKS: dict[str, dict[str, Any]] = {
    "UPDATE_PUBLISH_STATUS": {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Items",
            "environment": "LIVE",
            "filter": {"holidays": {"$in": ["Halloween"]}},
            "operation": "SCHEDULE_PUBLISHED_STATUS",
            "schedulePublishedStatusOptions": {"date": "2025-01-01T10:00:00Z"},
        },
    },
    "DELETE_BY_QUERY": {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {
            "dataCollectionId": "Items",
            "environment": "LIVE",
            "filter": {"holidays": {"$in": ["Halloween"]}},
        },
    },
    "EDIT_FIELD_DATA": {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "environment": "LIVE",
            "filter": {"holidays": {"$in": ["Halloween"]}},
            "fieldKey": "tags",
            "operations": {
                "addItems": ["sale"],
                "removeItems": ["outdated"],
                "replaceItems": [{"from": "Goob", "to": "Good"}],
                "removeDuplicates": True,
            },
        },
    },
    "COPY_FIELD_DATA": {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "environment": "LIVE",
            "sourceFieldKey": "fullName",
            "targetFieldKey": "fullNameCopy",
        },
    },
}


def make_storage(count: int = 10) -> MemoryStorage:
    """A storage with a publish-plugin collection ``Items`` of ``count`` items."""
    storage = MemoryStorage()
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items(
        "Items",
        "LIVE",
        [
            {
                "_id": f"{i:04d}",
                "holidays": ["Halloween"],
                "tags": ["Goob", "outdated"],
                "fullName": f"n{i}",
                "_publishStatus": "PUBLISHED",
            }
            for i in range(count)
        ],
    )
    return storage


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at 2026-01-01."""
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> TaskEngine:
    """A synchronous engine over ten items, batch size 3."""
    return TaskEngine(make_storage(), clock=clock, batch_size=3)


def iso(text: str) -> datetime:
    """Parse an ISO-8601 UTC string with a Z suffix."""
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    assert moment.utcoffset() == timedelta(0)
    return moment


def paths(error: InvalidRequest) -> list[str]:
    """The violation paths of an error."""
    return [v.field for v in error.violations]


# -- the task object ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SEED_TASKS))
def test_new_task_json_has_reference_fields_and_no_timestamps(
    engine: TaskEngine, kind: str
) -> None:
    """A NEW task's JSON has the reference fields, one matching options object, no start/end."""
    body = engine.create_task(SEED_TASKS[kind]).to_json()
    assert set(body) >= REFERENCE_ALWAYS
    assert body["status"] == "NEW"
    assert body["type"] == kind
    assert "startedAt" not in body
    assert "finishedAt" not in body
    option_keys = [k for k in body if k.endswith("Options")]
    assert option_keys == [OPTION_KEYS[kind]]
    assert body[OPTION_KEYS[kind]]["dataCollectionId"] == "Items"
    assert body["failures"] == []
    assert body["itemsFailed"] == 0
    assert isinstance(body["id"], str)
    assert body["id"]


@pytest.mark.parametrize("kind", sorted(SEED_TASKS))
def test_finished_task_json_has_ordered_iso_timestamps(
    engine: TaskEngine, clock: ManualClock, kind: str
) -> None:
    """A finished task carries startedAt <= finishedAt < expiresAt as ISO UTC strings."""
    task = engine.create_task(SEED_TASKS[kind])
    engine.run_until_idle()
    body = engine.get_task(task.id).to_json()
    assert body["status"] == "COMPLETED", body
    started, finished = iso(body["startedAt"]), iso(body["finishedAt"])
    assert started <= finished
    assert iso(body["expiresAt"]) == finished + timedelta(days=30)
    assert body["estimatedItemCount"] == 10
    assert body["itemsSucceeded"] + body["itemsFailed"] == 10


def test_seed_options_round_trip_in_task_json(engine: TaskEngine) -> None:
    """The options a user sends come back in the task JSON with the same values."""
    for kind, spec in SEED_TASKS.items():
        sent = spec[OPTION_KEYS[kind]]
        back = engine.create_task(spec).to_json()[OPTION_KEYS[kind]]
        for key, value in sent.items():
            assert back[key] == value, (kind, key)


def test_failures_capped_at_100_and_items_failed_exact(clock: ManualClock) -> None:
    """150 item failures: 100 listed (each naming its item), itemsFailed 150, COMPLETED."""
    storage = MemoryStorage()
    storage.create_collection("Items")
    storage.insert_items(
        "Items", "LIVE", [{"_id": f"{i:04d}", "tags": "scalar"} for i in range(150)]
    )
    storage.insert_items("Items", "LIVE", [{"_id": "z", "tags": []}])
    engine = TaskEngine(storage, clock=clock, batch_size=40)
    task = engine.create_task(
        {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {
                "dataCollectionId": "Items",
                "fieldKey": "tags",
                "operations": {"addItems": ["x"]},
            },
        }
    )
    engine.run_until_idle()
    body = engine.get_task(task.id).to_json()
    assert body["status"] == "COMPLETED"
    assert body["itemsFailed"] == 150
    assert body["itemsSucceeded"] == 1
    assert len(body["failures"]) == 100
    assert all(f["code"] == "WDE0075" and "itemId" in f["data"] for f in body["failures"])
    assert storage.get_item("Items", "LIVE", "0000")["tags"] == "scalar"


# -- create-time validation ----------------------------------------------------------------


def _copy(**options: Any) -> dict[str, Any]:
    base = {"dataCollectionId": "Items", "sourceFieldKey": "a", "targetFieldKey": "b"}
    base.update(options)
    return {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": base}


def _edit(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataCollectionId": "Items",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
    }
    base.update(options)
    return {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": base}


def _publish(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"dataCollectionId": "Items", "operation": "SET_DRAFT_STATUS"}
    base.update(options)
    return {"type": "UPDATE_PUBLISH_STATUS", "updatePublishStatusOptions": base}


BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("missing type", {"copyFieldDataOptions": _copy()["copyFieldDataOptions"]}, "task.type"),
    ("unknown type", {"type": "REINDEX", "copyFieldDataOptions": {}}, "task.type"),
    (
        "other type's options",
        {"type": "DELETE_BY_QUERY", "copyFieldDataOptions": _copy()["copyFieldDataOptions"]},
        "task.copyFieldDataOptions",
    ),
    ("options missing", {"type": "DELETE_BY_QUERY"}, "task.deleteByQueryOptions"),
    (
        "two options objects",
        {**_copy(), "deleteByQueryOptions": {"dataCollectionId": "Items"}},
        "task.deleteByQueryOptions",
    ),
    (
        "collection id too long",
        _copy(dataCollectionId="c" * 256),
        "task.copyFieldDataOptions.dataCollectionId",
    ),
    (
        "collection id missing",
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {}},
        "task.deleteByQueryOptions.dataCollectionId",
    ),
    (
        "65 addItems",
        _edit(operations={"addItems": list(range(65))}),
        "task.editFieldDataOptions.operations.addItems",
    ),
    (
        "65 removeItems",
        _edit(operations={"removeItems": list(range(65))}),
        "task.editFieldDataOptions.operations.removeItems",
    ),
    (
        "65 replaceItems",
        _edit(operations={"replaceItems": [{"from": i, "to": 0} for i in range(65)]}),
        "task.editFieldDataOptions.operations.replaceItems",
    ),
    ("source == target", _copy(targetFieldKey="a"), "task.copyFieldDataOptions.targetFieldKey"),
    ("system target", _copy(targetFieldKey="_id"), "task.copyFieldDataOptions.targetFieldKey"),
    ("system edit field", _edit(fieldKey="_id"), "task.editFieldDataOptions.fieldKey"),
    (
        "fieldKey missing",
        {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {"dataCollectionId": "Items", "operations": {"addItems": [1]}},
        },
        "task.editFieldDataOptions.fieldKey",
    ),
    (
        "bad filter",
        {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": {"a": {"$regex": "x"}}},
        },
        "task.deleteByQueryOptions.filter",
    ),
    (
        "unknown filter operator",
        _edit(filter={"a": {"$nope": 1}}),
        "task.editFieldDataOptions.filter",
    ),
    (
        "unparseable schedule date",
        _publish(
            operation="SCHEDULE_PUBLISHED_STATUS",
            schedulePublishedStatusOptions={"date": "next tuesday"},
        ),
        "task.updatePublishStatusOptions.schedulePublishedStatusOptions.date",
    ),
    (
        "missing schedule date",
        _publish(operation="SCHEDULE_DRAFT_STATUS"),
        "task.updatePublishStatusOptions.scheduleDraftStatusOptions.date",
    ),
    (
        "missing operation",
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {"dataCollectionId": "Items"},
        },
        "task.updatePublishStatusOptions.operation",
    ),
    (
        "bad operation",
        _publish(operation="PUBLISH_NOW"),
        "task.updatePublishStatusOptions.operation",
    ),
    ("bad environment", _copy(environment="STAGING"), "task.copyFieldDataOptions.environment"),
    ("lower-case environment", _copy(environment="live"), "task.copyFieldDataOptions.environment"),
    (
        "options not an object",
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": "Items"},
        "task.deleteByQueryOptions",
    ),
]


@pytest.mark.parametrize(
    ("spec", "path"), [(s, p) for _, s, p in BAD_SPECS], ids=[name for name, _, _ in BAD_SPECS]
)
def test_invalid_create_names_the_path_and_stores_nothing(
    engine: TaskEngine, spec: dict[str, Any], path: str
) -> None:
    """Each broken rule raises InvalidTask naming its JSON path; no task is stored."""
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(spec)
    assert any(p == path or p.startswith(path + ".") for p in paths(caught.value)), paths(
        caught.value
    )
    assert engine.list_tasks().total == 0
    assert len(engine.task_store) == 0
    with pytest.raises(InvalidTask):
        engine.create_task({"task": spec})  # the request-body form is checked the same way


def test_invalid_create_reports_every_violation_at_once(engine: TaskEngine) -> None:
    """Several problems in one spec are all reported, each under its own path."""
    spec = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "x" * 300,
            "environment": "NOPE",
            "fieldKey": "_id",
            "filter": {"a": {"$regex": "b"}},
            "operations": {"addItems": list(range(65)), "replaceItems": [{"from": 1}]},
        },
    }
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(spec)
    got = set(paths(caught.value))
    prefix = "task.editFieldDataOptions."
    for suffix in (
        "dataCollectionId",
        "environment",
        "fieldKey",
        "operations.addItems",
        "operations.replaceItems.0.to",
    ):
        assert prefix + suffix in got, got
    assert any(p.startswith(prefix + "filter") for p in got), got


@given(st.text(min_size=256, max_size=400))
def test_any_collection_id_over_255_is_refused(name: str) -> None:
    """Law: every dataCollectionId longer than 255 characters is a violation at its path."""
    engine = TaskEngine(MemoryStorage())
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(
            {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": name}}
        )
    assert "task.deleteByQueryOptions.dataCollectionId" in paths(caught.value)


@given(st.integers(min_value=0, max_value=64), st.integers(min_value=65, max_value=100))
def test_operation_entry_limit_is_exactly_64(ok: int, too_many: int) -> None:
    """Law: up to 64 addItems entries are accepted, 65 or more refused."""
    engine = TaskEngine(MemoryStorage())
    ops = {"addItems": list(range(ok)), "removeDuplicates": True}
    engine.create_task(_edit(operations=ops))
    with pytest.raises(InvalidTask):
        engine.create_task(_edit(operations={"addItems": list(range(too_many))}))


def test_create_accepts_a_collection_id_of_exactly_255(engine: TaskEngine) -> None:
    """The 255-character boundary is inclusive."""
    engine.create_task(_copy(dataCollectionId="c" * 255))


@pytest.mark.parametrize("env", ["LIVE", "SANDBOX", "SANDBOX_PREFERRED"])
def test_create_accepts_every_reference_environment(engine: TaskEngine, env: str) -> None:
    """LIVE, SANDBOX and SANDBOX_PREFERRED are all valid environments."""
    assert (
        engine.create_task(_copy(environment=env)).to_json()["copyFieldDataOptions"]["environment"]
        == env
    )


def test_create_refuses_non_object_specs(engine: TaskEngine) -> None:
    """A spec that is not an object is InvalidTask, never a raw TypeError."""
    for spec in (None, 3, "task", ["type"]):
        with pytest.raises(InvalidTask):
            engine.create_task(spec)


# -- not found -----------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["nope", "", "00000000-0000-0000-0000-000000000000"])
def test_unknown_ids_raise_task_not_found(engine: TaskEngine, task_id: str) -> None:
    """get, cancel, progress and wait refuse unknown ids; nothing is created by asking."""
    for call in (engine.get_task, engine.cancel_task, engine.get_progress):
        with pytest.raises(TaskNotFound):
            call(task_id)
    with pytest.raises(TaskNotFound):
        engine.wait(task_id, timeout=0.01)
    assert engine.list_tasks().total == 0


# -- list ----------------------------------------------------------------------------------


def test_list_newest_first_with_paging(engine: TaskEngine, clock: ManualClock) -> None:
    """list_tasks is newest first; limit/offset page it; count/offset/total are right."""
    ids = []
    for _ in range(7):
        ids.append(engine.create_task(_copy()).id)
        clock.advance(1)
    newest_first = list(reversed(ids))
    page = engine.list_tasks(limit=3, offset=0)
    assert [t.id for t in page.tasks] == newest_first[:3]
    assert page.to_json()["metadata"] == {"count": 3, "offset": 0, "total": 7}
    page = engine.list_tasks(limit=3, offset=6)
    assert [t.id for t in page.tasks] == newest_first[6:]
    assert page.to_json()["metadata"] == {"count": 1, "offset": 6, "total": 7}
    assert engine.list_tasks(offset=50).to_json()["metadata"] == {
        "count": 0,
        "offset": 50,
        "total": 7,
    }
    assert [t.id for t in engine.list_tasks().tasks] == newest_first


def test_list_newest_first_within_the_same_millisecond(engine: TaskEngine) -> None:
    """Tasks created at the same instant still list newest first (creation order)."""
    ids = [engine.create_task(_copy()).id for _ in range(5)]
    assert [t.id for t in engine.list_tasks().tasks] == list(reversed(ids))


def test_list_default_limit_is_30(engine: TaskEngine) -> None:
    """Without paging, at most 30 tasks come back; total counts them all."""
    for _ in range(35):
        engine.create_task(_copy())
    page = engine.list_tasks().to_json()
    assert len(page["tasks"]) == 30
    assert page["metadata"]["total"] == 35


@pytest.mark.parametrize(
    ("limit", "offset", "field"),
    [
        (0, 0, "paging.limit"),
        (-1, 0, "paging.limit"),
        (101, 0, "paging.limit"),
        ("5", 0, "paging.limit"),
        (True, 0, "paging.limit"),
        (5, -1, "paging.offset"),
    ],
)
def test_list_refuses_bad_paging(engine: TaskEngine, limit: Any, offset: Any, field: str) -> None:
    """Bad paging is an InvalidRequest naming paging.limit / paging.offset."""
    with pytest.raises(InvalidRequest) as caught:
        engine.list_tasks(limit=limit, offset=offset)
    assert field in paths(caught.value)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_new_is_immediate_and_reference_shaped(engine: TaskEngine) -> None:
    """Cancelling NEW: FAILED at once, one CANCELLED failure without data, finishedAt set."""
    task = engine.create_task(_copy())
    body = engine.cancel_task(task.id).to_json()
    assert body["status"] == "FAILED"
    assert body["failures"] == [
        {"code": "CANCELLED", "description": body["failures"][0]["description"]}
    ]
    assert "data" not in body["failures"][0]
    assert isinstance(body["failures"][0]["description"], str)
    assert "finishedAt" in body
    assert "expiresAt" in body
    assert "startedAt" not in body
    assert engine.get_task(task.id).to_json() == body
    assert engine.run_until_idle() == 0 or engine.get_task(task.id).to_json() == body
    assert engine.get_task(task.id).items_succeeded == 0


def test_cancel_finished_returns_it_unchanged(engine: TaskEngine, clock: ManualClock) -> None:
    """Cancelling a COMPLETED task returns it as it was; it stays COMPLETED."""
    task = engine.create_task(_copy())
    engine.run_until_idle()
    before = engine.get_task(task.id)
    clock.advance(5)
    assert engine.cancel_task(task.id) == before
    assert engine.get_task(task.id) == before
    cancelled = engine.create_task(_copy())
    first = engine.cancel_task(cancelled.id)
    assert engine.cancel_task(cancelled.id) == first


class GatedStorage(MemoryStorage):
    """A MemoryStorage whose second scan waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        """Scan; the second call signals ``reached`` and waits for ``release``."""
        self.scans += 1
        if self.scans == 2:
            self.reached.set()
            assert self.release.wait(10)
        return super().scan(*args, **kwargs)


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


def test_cancel_running_shows_request_then_fails_keeping_counters(
    gated: tuple[TaskEngine, GatedStorage],
) -> None:
    """RUNNING: cancelRequested at once, then FAILED/CANCELLED after the batch, counters kept."""
    engine, storage = gated
    task = engine.create_task(_copy(sourceFieldKey="a", targetFieldKey="b"))
    assert storage.reached.wait(10)
    running = engine.cancel_task(task.id)
    assert running.status is TaskStatus.RUNNING
    assert running.to_json()["cancelRequested"] is True
    assert engine.get_task(task.id).cancel_requested
    assert engine.get_progress(task.id).complete is False
    storage.release.set()
    done = engine.wait(task.id, timeout=10)
    body = done.to_json()
    assert body["status"] == "FAILED"
    assert body["failures"][0]["code"] == "CANCELLED"
    assert "data" not in body["failures"][0]
    assert 4 <= body["itemsSucceeded"] < 10
    assert body["estimatedItemCount"] == 10
    assert "startedAt" in body
    assert "finishedAt" in body


def test_progress_of_running_task_per_seed_002(gated: tuple[TaskEngine, GatedStorage]) -> None:
    """While RUNNING: Complete false, processed/total, fraction in 0..1, a task message."""
    engine, storage = gated
    task = engine.create_task(
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items"}}
    )
    assert storage.reached.wait(10)
    body = engine.get_progress(task.id).to_json()
    assert body["Complete"] is False
    assert body["TotalElements"] == 10
    assert body["ProcessedElements"] == 4
    assert body["ProgressInPercent"] == pytest.approx(0.4)
    assert body["Message"] == "Deleting items"
    assert "StartedAt" in body
    assert "FinishedAt" not in body
    storage.release.set()
    assert engine.wait(task.id, timeout=10).status is TaskStatus.COMPLETED


# -- progress ------------------------------------------------------------------------------


def test_progress_of_completed_task_per_seed_002(engine: TaskEngine) -> None:
    """Completed: exactly the seed's keys, Complete true, 1.0, Task Completed, Self URL."""
    task = engine.create_task(SEED_TASKS["DELETE_BY_QUERY"])
    engine.run_until_idle()
    body = engine.get_progress(task.id).to_json()
    assert set(body) == {
        "Id",
        "Complete",
        "TotalElements",
        "ProcessedElements",
        "ProgressInPercent",
        "StartedAt",
        "FinishedAt",
        "Message",
        "Self",
    }
    assert body["Id"] == task.id
    assert body["Complete"] is True
    assert body["TotalElements"] == 10
    assert body["ProcessedElements"] == 10
    assert body["ProgressInPercent"] == 1.0
    assert isinstance(body["ProgressInPercent"], float)
    assert body["Message"] == "Task Completed"
    assert body["Self"] == f"http://localhost/api/backgroundtask/{task.id}"
    iso(body["StartedAt"])
    iso(body["FinishedAt"])


def test_progress_of_new_and_cancelled_tasks(engine: TaskEngine) -> None:
    """NEW: not complete, 0.0, no StartedAt; cancelled: complete, the cancel reason."""
    task = engine.create_task(_copy())
    body = engine.get_progress(task.id).to_json()
    assert body["Complete"] is False
    assert body["ProgressInPercent"] == 0.0
    assert isinstance(body["ProgressInPercent"], float)
    assert "StartedAt" not in body
    assert "FinishedAt" not in body
    cancelled = engine.cancel_task(task.id)
    body = engine.get_progress(task.id).to_json()
    assert body["Complete"] is True
    assert "FinishedAt" in body
    assert body["Message"] == cancelled.failures[0].description
    assert 0.0 <= body["ProgressInPercent"] <= 1.0


def test_progress_of_empty_completed_task_is_one(engine: TaskEngine) -> None:
    """A task that matched nothing completes at 1.0 with zero elements."""
    task = engine.create_task(
        {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {
                "dataCollectionId": "Items",
                "filter": {"holidays": "Christmas"},
            },
        }
    )
    engine.run_until_idle()
    body = engine.get_progress(task.id).to_json()
    assert body["TotalElements"] == 0
    assert body["ProgressInPercent"] == 1.0


def test_progress_of_failed_task_gives_the_reason(engine: TaskEngine) -> None:
    """A whole-task failure (unknown collection) shows its reason as Message, complete."""
    task = engine.create_task(_copy(dataCollectionId="Missing"))
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0025"
    body = engine.get_progress(task.id).to_json()
    assert body["Complete"] is True
    assert body["Message"] == done.failures[0].description
    assert 0.0 <= body["ProgressInPercent"] <= 1.0


# -- retention -----------------------------------------------------------------------------


def test_retention_expires_tasks(clock: ManualClock) -> None:
    """After expiresAt, get/cancel/progress say not found and the store drops the task."""
    engine = TaskEngine(make_storage(), clock=clock, retention=timedelta(hours=1))
    task = engine.create_task(_copy())
    kept = engine.create_task(_copy())  # stays NEW: never expires
    engine.cancel_task(task.id)
    assert iso(engine.get_task(task.id).to_json()["expiresAt"]) == iso(
        engine.get_task(task.id).to_json()["finishedAt"]
    ) + timedelta(hours=1)
    clock.advance(timedelta(minutes=59))
    assert engine.get_task(task.id).status is TaskStatus.FAILED
    clock.advance(timedelta(minutes=1))
    for call in (engine.get_task, engine.cancel_task, engine.get_progress):
        with pytest.raises(TaskNotFound):
            call(task.id)
    page = engine.list_tasks()
    assert [t.id for t in page.tasks] == [kept.id]
    assert page.total == 1
    assert len(engine.task_store) == 1


def test_sweep_removes_expired_tasks_without_reads(clock: ManualClock) -> None:
    """The sweep alone empties the store of expired tasks (bounded storage)."""
    engine = TaskEngine(make_storage(), clock=clock, retention=timedelta(days=30))
    for _ in range(20):
        engine.create_task(_copy())
    engine.run_until_idle()
    assert len(engine.task_store) == 20
    clock.advance(timedelta(days=31))
    assert engine.sweep() == 20
    assert len(engine.task_store) == 0


def test_expired_tasks_are_gone_for_a_fresh_engine_on_the_same_file(tmp_path: Path) -> None:
    """A second engine on the same SQLite file never lists or returns expired tasks."""
    db = tmp_path / "t.db"
    clock = ManualClock()
    with SQLiteStorage(db) as storage:
        store = SQLiteTaskStore(storage)
        storage.create_collection("Items")
        engine = TaskEngine(storage, task_store=store, clock=clock, retention=timedelta(hours=1))
        task = engine.create_task(_copy())
        engine.cancel_task(task.id)
        store.close()
    clock.advance(timedelta(hours=2))
    with SQLiteStorage(db) as storage:
        store = SQLiteTaskStore(storage)
        try:
            later = TaskEngine(storage, task_store=store, clock=clock)
            with pytest.raises(TaskNotFound):
                later.get_task(task.id)
            assert later.list_tasks().total == 0
        finally:
            store.close()


def test_expired_tasks_are_not_listed_by_an_engine_that_never_started(tmp_path: Path) -> None:
    """list_tasks on a fresh (never started) engine omits tasks that expired meanwhile."""
    db = tmp_path / "t.db"
    clock = ManualClock()
    with SQLiteStorage(db) as storage:
        store = SQLiteTaskStore(storage)
        storage.create_collection("Items")
        engine = TaskEngine(storage, task_store=store, clock=clock, retention=timedelta(hours=1))
        engine.cancel_task(engine.create_task(_copy()).id)
        store.close()
    clock.advance(timedelta(hours=2))
    with SQLiteStorage(db) as storage:
        store = SQLiteTaskStore(storage)
        try:
            later = TaskEngine(storage, task_store=store, clock=clock)
            page = later.list_tasks()
            assert page.total == 0
            assert page.tasks == ()
        finally:
            store.close()


def test_task_json_timestamps_use_utc_z(engine: TaskEngine) -> None:
    """Timestamps are ISO-8601 UTC strings ending in Z."""
    task = engine.create_task(_copy())
    engine.run_until_idle()
    body = engine.get_task(task.id).to_json()
    for key in ("startedAt", "finishedAt", "expiresAt"):
        assert iso(body[key]).tzinfo is not None
    assert iso(body["startedAt"]) == datetime(2026, 1, 1, tzinfo=timezone.utc)


# -- laws over arbitrary task states -------------------------------------------------------

_TYPES = TaskEngine(MemoryStorage()).task_types


@st.composite
def tasks(draw: st.DrawFn) -> Any:
    """A task driven through a random legal history."""
    from taskengine.task import Failure, Task
    from taskengine.tasktypes.copy_field_data import CopyFieldDataOptions

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    task = Task(
        id="t-1",
        type="COPY_FIELD_DATA",
        options_key="copyFieldDataOptions",
        options=CopyFieldDataOptions("Items", "a", "b"),
        created_at=now,
    )
    end = draw(st.sampled_from(["NEW", "RUNNING", "COMPLETED", "FAILED", "CANCEL_NEW"]))
    if end == "CANCEL_NEW":
        return task.finished(TaskStatus.FAILED, now, timedelta(days=1), Failure.cancelled())
    if end == "NEW":
        return task
    task = task.started(now + timedelta(seconds=1), draw(st.integers(0, 10_000)))
    for _ in range(draw(st.integers(0, 4))):
        failed = draw(st.integers(0, 60))
        task = task.with_batch(
            draw(st.integers(0, 500)),
            failed,
            [Failure("WDE0075", "bad", {"itemId": str(i)}) for i in range(failed)],
            "c",
        )
    if draw(st.booleans()):
        task = task.cancel_was_requested()
    if end == "COMPLETED":
        return task.finished(TaskStatus.COMPLETED, now + timedelta(seconds=2), timedelta(days=1))
    if end == "FAILED":
        return task.finished(
            TaskStatus.FAILED, now + timedelta(seconds=2), timedelta(days=1), Failure.cancelled()
        )
    return task


@given(tasks())
def test_task_json_round_trips_and_follows_the_reference_rules(task: Any) -> None:
    """Law: to_json obeys lifecycle.md (timestamps, cap, one options object) and parses back."""
    from taskengine.task import Task

    body = task.to_json()
    if body["status"] == "NEW":
        assert "startedAt" not in body
    if body["status"] in ("RUNNING", "COMPLETED"):
        assert "startedAt" in body
    assert ("finishedAt" in body) == (body["status"] in ("COMPLETED", "FAILED"))
    assert len(body["failures"]) <= 100
    assert body["itemsFailed"] >= len(body["failures"]) - (body["status"] == "FAILED")
    assert [k for k in body if k.endswith("Options")] == ["copyFieldDataOptions"]
    if body["status"] == "FAILED":
        assert body["failures"][0] == {
            "code": "CANCELLED",
            "description": body["failures"][0]["description"],
        }
    back = Task.from_json(body, _TYPES, checkpoint=task.checkpoint)
    assert back == task


@given(tasks())
def test_progress_view_is_bounded_and_consistent(task: Any) -> None:
    """Law: 0 <= ProgressInPercent <= 1, Complete iff finished, Processed = ok + failed."""
    from taskengine.progress import Progress

    body = Progress.of(task).to_json("http://h:1")
    assert isinstance(body["ProgressInPercent"], float)
    assert 0.0 <= body["ProgressInPercent"] <= 1.0
    assert body["Complete"] is task.is_finished
    assert body["ProcessedElements"] == task.items_succeeded + task.items_failed
    assert body["TotalElements"] == task.estimated_item_count
    assert body["Self"] == "http://h:1/api/backgroundtask/t-1"
    assert ("StartedAt" in body) == (task.started_at is not None)
    assert ("FinishedAt" in body) == task.is_finished
    if task.status is TaskStatus.COMPLETED:
        assert body["ProgressInPercent"] == 1.0
        assert body["Message"] == "Task Completed"


def test_create_accepts_typed_options_and_validates_them(engine: TaskEngine) -> None:
    """Typed options create the same task as JSON; invalid typed options are refused."""
    from taskengine.tasktypes.copy_field_data import CopyFieldDataOptions

    task = engine.create_task(CopyFieldDataOptions("Items", "fullName", "copy"))
    assert task.to_json()["copyFieldDataOptions"]["targetFieldKey"] == "copy"
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(CopyFieldDataOptions("Items", "fullName", "_id"))
    assert "task.copyFieldDataOptions.targetFieldKey" in paths(caught.value)
    assert engine.list_tasks().total == 1


def test_estimated_item_count_counts_the_filtered_items_while_running(
    gated: tuple[TaskEngine, GatedStorage],
) -> None:
    """A RUNNING filtered task estimates the items its filter matches (4 of 10), not all."""
    engine, storage = gated
    task = engine.create_task(
        {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": {"a": {"$lt": 4}}},
        }
    )
    assert storage.reached.wait(10)
    running = engine.get_task(task.id)
    storage.release.set()
    assert running.estimated_item_count == 4
    assert engine.get_progress(task.id).to_json()["TotalElements"] == 4
