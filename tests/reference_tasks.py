"""Reference task JSON of every built-in type, and helpers the task API tests share."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from taskengine.engine import TaskEngine
from taskengine.errors import InvalidRequest
from taskengine.storage.memory import MemoryStorage
from taskengine.task import TaskStatus

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


REFERENCE_TASKS: dict[str, dict[str, Any]] = {
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


def items_storage(count: int = 10) -> MemoryStorage:
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


def iso(text: str) -> datetime:
    """Parse an ISO-8601 UTC string with a Z suffix."""
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    assert moment.utcoffset() == timedelta(0)
    return moment


def paths(error: InvalidRequest) -> list[str]:
    """The violation paths of an error."""
    return [v.field for v in error.violations]


def copy_task(**options: Any) -> dict[str, Any]:
    base = {"dataCollectionId": "Items", "sourceFieldKey": "a", "targetFieldKey": "b"}
    base.update(options)
    return {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": base}


def edit_task(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataCollectionId": "Items",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
    }
    base.update(options)
    return {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": base}


def publish_task(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"dataCollectionId": "Items", "operation": "SET_DRAFT_STATUS"}
    base.update(options)
    return {"type": "UPDATE_PUBLISH_STATUS", "updatePublishStatusOptions": base}


TASK_TYPES = TaskEngine(MemoryStorage()).task_types


@st.composite
def task_json(draw: st.DrawFn) -> Any:
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
