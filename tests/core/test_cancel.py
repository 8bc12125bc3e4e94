"""Cancelling a task: NEW at once, RUNNING after its batch, finished unchanged."""

from __future__ import annotations

from reference_tasks import (
    GatedStorage,
    copy_task,
)

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.task import TaskStatus


def test_cancel_new_is_immediate_and_reference_shaped(engine: TaskEngine) -> None:
    """Cancelling NEW: FAILED at once, one CANCELLED failure without data, finishedAt set."""
    task = engine.create_task(copy_task())
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
    task = engine.create_task(copy_task())
    engine.run_until_idle()
    before = engine.get_task(task.id)
    clock.advance(5)
    assert engine.cancel_task(task.id) == before
    assert engine.get_task(task.id) == before
    cancelled = engine.create_task(copy_task())
    first = engine.cancel_task(cancelled.id)
    assert engine.cancel_task(cancelled.id) == first


def test_cancel_running_shows_request_then_fails_keeping_counters(
    gated: tuple[TaskEngine, GatedStorage],
) -> None:
    """RUNNING: cancelRequested at once, then FAILED/CANCELLED after the batch, counters kept."""
    engine, storage = gated
    task = engine.create_task(copy_task(sourceFieldKey="a", targetFieldKey="b"))
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
