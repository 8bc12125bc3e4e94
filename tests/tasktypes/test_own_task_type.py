"""A fifth task type (``set_field.py``) registered with one call runs like a built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from set_field import SET_FIELD, SetFieldExecutor, SetFieldOptions

from taskengine import (
    BatchChanges,
    InvalidTask,
    Plan,
    SQLiteStorage,
    SQLiteTaskStore,
    Storage,
    TaskEngine,
    TaskType,
)

ITEMS = [
    {"_id": "1", "kind": "toy", "stock": 3},
    {"_id": "2", "kind": "toy", "stock": 0},
    {"_id": "3", "kind": "book", "stock": 5},
    {"_id": "4", "kind": "toy"},
]
SET_STOCK_TO_ZERO = {
    "type": "SET_FIELD",
    "setFieldOptions": {
        "dataCollectionId": "Items",
        "fieldKey": "stock",
        "value": 0,
        "filter": {"kind": "toy"},
    },
}


def stocks(storage: Storage) -> dict[str, Any]:
    """Each item's stock (``None`` when absent), by id."""
    return {item["_id"]: item.get("stock") for item in storage.find("Items", "LIVE")}


def test_own_type_runs_end_to_end(storage: Storage) -> None:
    """Registered with one call, SET_FIELD changes the matching items and counts them all."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", ITEMS)
    engine = TaskEngine(storage, batch_size=2)
    engine.register_task_type(SET_FIELD)
    task = engine.create_task(SET_STOCK_TO_ZERO)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status.value == "COMPLETED"
    assert (done.items_succeeded, done.items_failed) == (3, 0)
    assert stocks(storage) == {"1": 0, "2": 0, "3": 5, "4": 0}
    assert done.to_json()["setFieldOptions"] == SET_STOCK_TO_ZERO["setFieldOptions"]


def test_own_type_refuses_bad_options_by_path(storage: Storage) -> None:
    """The type's parser decides what create_task refuses, each problem under its path."""
    engine = TaskEngine(storage)
    engine.register_task_type(SET_FIELD)
    with pytest.raises(InvalidTask) as caught:
        engine.create_task({"type": "SET_FIELD", "setFieldOptions": {"fieldKey": 5, "x": 1}})
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "task.setFieldOptions.dataCollectionId",
        "task.setFieldOptions.fieldKey",
        "task.setFieldOptions.value",
        "task.setFieldOptions.x",
    }
    assert engine.list_tasks().tasks == ()


def test_own_type_unknown_collection_fails_the_task(storage: Storage) -> None:
    """An executor that lets CollectionNotFound out fails the task with WDE0025."""
    engine = TaskEngine(storage)
    engine.register_task_type(SET_FIELD)
    task = engine.create_task(SET_STOCK_TO_ZERO)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status.value == "FAILED"
    assert done.failures[0].code == "WDE0025"


def test_own_type_names_its_running_progress(storage: Storage) -> None:
    """While a SET_FIELD task runs, its progress Message is the type's running_message."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", ITEMS)
    engine = TaskEngine(storage, batch_size=2)
    seen: list[str] = []

    class Watching(SetFieldExecutor):
        def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
            [running] = engine.list_tasks().tasks
            seen.append(engine.get_progress(running.id).message)
            return super().apply(plan, items)

    engine.register_task_type(attrs.evolve(SET_FIELD, executor=Watching()))
    engine.create_task(SET_STOCK_TO_ZERO)
    engine.run_until_idle()
    assert len(seen) == 2  # four items in batches of two
    assert set(seen) == {"Setting a field"}


def test_task_type_without_message_says_processing_items() -> None:
    """A TaskType built positionally (as before running_message existed) still works."""
    plain = TaskType("SET_FIELD", "setFieldOptions", SET_FIELD.parse_options, SetFieldExecutor())
    assert plain.running_message == "Processing items"


def test_own_type_resumes_from_a_sqlite_file(tmp_path: Path) -> None:
    """A SET_FIELD task stored but not run is parsed again and run by a new engine."""
    path = tmp_path / "shop.db"
    with SQLiteStorage(path) as items:
        items.create_collection("Items")
        items.insert_items("Items", "LIVE", ITEMS)
        tasks = SQLiteTaskStore(items)
        first = TaskEngine(items, task_store=tasks)
        first.register_task_type(SET_FIELD)
        task_id = first.create_task(SET_STOCK_TO_ZERO).id
        tasks.close()
    with SQLiteStorage(path) as items:
        tasks = SQLiteTaskStore(items)
        second = TaskEngine(items, task_store=tasks)
        second.register_task_type(SET_FIELD)
        second.run_until_idle()
        done = second.get_task(task_id)
        assert done.status.value == "COMPLETED"
        assert stocks(items) == {"1": 0, "2": 0, "3": 5, "4": 0}
        tasks.close()


def test_own_type_options_round_trip() -> None:
    """parse(to_json(options)) gives back equal options."""
    options = SetFieldOptions("Items", "stock", [1, {"a": None}], {"kind": "toy"})
    again, problems = SET_FIELD.parse_options(options.to_json(), "t")
    assert (again, problems) == (options, [])
