"""Task JSON as the engine serves it: fields, timestamps, options, failures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from reference_tasks import (
    OPTION_KEYS,
    REFERENCE_ALWAYS,
    REFERENCE_TASKS,
    TASK_TYPES,
    copy_task,
    iso,
    task_json,
)

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.storage.memory import MemoryStorage


@pytest.mark.parametrize("kind", sorted(REFERENCE_TASKS))
def test_new_task_json_has_reference_fields_and_no_timestamps(
    engine: TaskEngine, kind: str
) -> None:
    """A NEW task's JSON has the reference fields, one matching options object, no start/end."""
    body = engine.create_task(REFERENCE_TASKS[kind]).to_json()
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


@pytest.mark.parametrize("kind", sorted(REFERENCE_TASKS))
def test_finished_task_json_has_ordered_iso_timestamps(
    engine: TaskEngine, clock: ManualClock, kind: str
) -> None:
    """A finished task carries startedAt <= finishedAt < expiresAt as ISO UTC strings."""
    task = engine.create_task(REFERENCE_TASKS[kind])
    engine.run_until_idle()
    body = engine.get_task(task.id).to_json()
    assert body["status"] == "COMPLETED", body
    started, finished = iso(body["startedAt"]), iso(body["finishedAt"])
    assert started <= finished
    assert iso(body["expiresAt"]) == finished + timedelta(days=30)
    assert body["estimatedItemCount"] == 10
    assert body["itemsSucceeded"] + body["itemsFailed"] == 10


def test_reference_options_round_trip_in_task_json(engine: TaskEngine) -> None:
    """The options a user sends come back in the task JSON with the same values."""
    for kind, spec in REFERENCE_TASKS.items():
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


def test_task_json_timestamps_use_utc_z(engine: TaskEngine) -> None:
    """Timestamps are ISO-8601 UTC strings ending in Z."""
    task = engine.create_task(copy_task())
    engine.run_until_idle()
    body = engine.get_task(task.id).to_json()
    for key in ("startedAt", "finishedAt", "expiresAt"):
        assert iso(body[key]).tzinfo is not None
    assert iso(body["startedAt"]) == datetime(2026, 1, 1, tzinfo=timezone.utc)


@given(task_json())
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
    back = Task.from_json(body, TASK_TYPES, checkpoint=task.checkpoint)
    assert back == task
