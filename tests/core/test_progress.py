"""The progress view of a task in every state, and its estimate (docs/progress.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from reference_tasks import (
    REFERENCE_TASKS,
    GatedStorage,
    copy_task,
    iso,
    task_json,
)

from taskengine.engine import TaskEngine
from taskengine.task import TaskStatus


def test_progress_of_a_running_task_counts_the_processed_items(
    gated: tuple[TaskEngine, GatedStorage],
) -> None:
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


def test_progress_of_a_completed_task_has_every_reference_key(engine: TaskEngine) -> None:
    """Completed: exactly the reference keys, Complete true, 1.0, Task Completed, Self URL."""
    task = engine.create_task(REFERENCE_TASKS["DELETE_BY_QUERY"])
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
    task = engine.create_task(copy_task())
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
    task = engine.create_task(copy_task(dataCollectionId="Missing"))
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0025"
    body = engine.get_progress(task.id).to_json()
    assert body["Complete"] is True
    assert body["Message"] == done.failures[0].description
    assert 0.0 <= body["ProgressInPercent"] <= 1.0


@given(task_json())
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
