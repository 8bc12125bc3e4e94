"""Finished tasks expire, by sweep or on read, on every task store (docs/retention.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from reference_tasks import (
    copy_task,
    iso,
    items_storage,
)

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import TaskNotFound
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import TaskStatus
from taskengine.taskstore import SQLiteTaskStore


def test_retention_expires_tasks(clock: ManualClock) -> None:
    """After expiresAt, get/cancel/progress say not found and the store drops the task."""
    engine = TaskEngine(items_storage(), clock=clock, retention=timedelta(hours=1))
    task = engine.create_task(copy_task())
    kept = engine.create_task(copy_task())  # stays NEW: never expires
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
    engine = TaskEngine(items_storage(), clock=clock, retention=timedelta(days=30))
    for _ in range(20):
        engine.create_task(copy_task())
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
        task = engine.create_task(copy_task())
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
        engine.cancel_task(engine.create_task(copy_task()).id)
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


def test_an_engine_sweeps_tasks_another_engine_finished_after_it_started(
    tmp_path: Path,
) -> None:
    """The store answers the sweep: a started engine also removes the expired tasks that
    another engine (another process, on the same file) finished after it started."""
    db = tmp_path / "t.db"
    clock = ManualClock()
    with SQLiteStorage(db) as mine, SQLiteStorage(db) as theirs:
        mine.create_collection("Items")
        my_store, their_store = SQLiteTaskStore(mine), SQLiteTaskStore(theirs)
        try:
            me = TaskEngine(mine, task_store=my_store, clock=clock, tick_interval=3600)
            other = TaskEngine(theirs, task_store=their_store, clock=clock)
            with me:
                finished = [other.create_task(copy_task()) for _ in range(3)]
                for task in finished:
                    other.cancel_task(task.id)
                assert me.list_tasks().total == 3
                clock.advance(timedelta(days=31))
                assert me.sweep() == 3
                assert me.list_tasks().total == 0
                assert len(their_store) == 0
        finally:
            my_store.close()
            their_store.close()


def test_a_sweep_removes_more_expired_tasks_than_one_store_call_returns(
    clock: ManualClock,
) -> None:
    """The sweep asks the store in chunks until none are left (here 1,203 tasks)."""
    engine = TaskEngine(items_storage(), clock=clock, retention=timedelta(hours=1))
    created = [engine.create_task(copy_task()) for _ in range(1203)]
    for task in created:
        engine.cancel_task(task.id)
    kept = engine.create_task(copy_task())
    clock.advance(timedelta(hours=2))
    assert engine.sweep() == 1203
    assert [task.id for task in engine.list_tasks().tasks] == [kept.id]
