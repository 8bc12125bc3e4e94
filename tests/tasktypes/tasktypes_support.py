"""Helpers shared by the task-type tests: reference bodies, engine runs, strategies."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

from hypothesis import strategies as st
from reference_tasks import REFERENCE_TASKS
from test_fieldops import values

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.storage import MemoryStorage, Storage
from taskengine.task import Task, TaskStatus
from taskengine.tasktype import Plan
from taskengine.tasktypes.copy_field_data import parse_copy_field_data_options
from taskengine.tasktypes.delete_by_query import parse_delete_by_query_options
from taskengine.tasktypes.edit_field_data import parse_edit_field_data_options
from taskengine.tasktypes.update_publish_status import parse_update_publish_status_options

PARSERS = {
    "deleteByQueryOptions": parse_delete_by_query_options,
    "copyFieldDataOptions": parse_copy_field_data_options,
    "editFieldDataOptions": parse_edit_field_data_options,
    "updatePublishStatusOptions": parse_update_publish_status_options,
}


EXAMPLE_BODIES: list[dict[str, Any]] = [
    {"task": copy.deepcopy(task)} for task in REFERENCE_TASKS.values()
]
"""The reference API's example request bodies, one per built-in type."""


def fields(violations: list[Any]) -> dict[str, str]:
    """Violations as {path: description}."""
    return {v.field: v.description for v in violations}


def edit(**extra: Any) -> dict[str, Any]:
    """A valid edit options object with overrides."""
    base: dict[str, Any] = {
        "dataCollectionId": "c",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
    }
    base.update(extra)
    return base


WHEN = datetime(2030, 1, 1, 10, tzinfo=timezone.utc)


def plan_for(storage: Storage, executor: Any, options: Any) -> Plan:
    """Plan helper."""
    plan: Plan = executor.plan(options, storage)
    return plan


START = datetime(2026, 1, 1, tzinfo=timezone.utc)


HALLOWEEN = {"holidays": {"$in": ["Halloween"]}}


def run(engine: TaskEngine, spec: Any) -> Task:
    """Create a task, run the engine until idle, return the finished task."""
    task = engine.create_task(spec)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.is_finished
    return done


def items(storage: Storage, collection: str = "Items", env: str = "LIVE") -> list[dict[str, Any]]:
    """Every stored item."""
    return list(storage.find(collection, env))


def holiday_items() -> list[dict[str, Any]]:
    """Items for the example bodies: some Halloween, some not, tags and names."""
    return [
        {"_id": "1", "holidays": ["Halloween"], "tags": ["Goob", "outdated"], "fullName": "A"},
        {"_id": "2", "holidays": ["Easter"], "tags": ["Goob"], "fullName": "B"},
        {"_id": "3", "holidays": ["Halloween", "Easter"], "tags": ["sale", "sale"]},
        {"_id": "4", "tags": "Goob", "fullName": {"first": "D"}},
        {"_id": "5", "holidays": ["Halloween"], "_publishStatus": "DRAFT"},
    ]


def task_json(spec: dict[str, Any]) -> dict[str, Any]:
    """The inner task object of a {"task": ...} body."""
    inner: dict[str, Any] = spec["task"]
    return inner


def failed_with(task: Task, code: str) -> None:
    """Assert the task FAILED with a whole-task failure of this code, nothing counted."""
    assert task.status is TaskStatus.FAILED
    assert task.failures[0].code == code
    assert task.items_succeeded == task.items_failed == 0
    assert task.started_at is not None
    assert task.finished_at is not None


ids = st.integers(0, 30).map(lambda n: f"id{n:03d}")


small = st.one_of(st.sampled_from(["a", "b", "Halloween"]), st.integers(0, 3), st.none())


docs = st.dictionaries(
    ids,
    st.fixed_dictionaries(
        {},
        optional={
            "k": small,
            "tags": st.one_of(st.lists(values, max_size=4), values),
            "_publishStatus": st.sampled_from(["PUBLISHED", "DRAFT"]),
        },
    ),
    max_size=12,
).map(lambda d: [{"_id": k, **v} for k, v in sorted(d.items())])


user_filters = st.one_of(
    st.none(),
    st.just({}),
    st.builds(lambda v: {"k": v}, small),
    st.builds(lambda v: {"k": {"$ne": v}}, small),
    st.builds(lambda vs: {"k": {"$in": vs}}, st.lists(small, max_size=3)),
)


def memory_engine(
    collection_items: list[dict[str, Any]], plugin: bool
) -> tuple[MemoryStorage, TaskEngine]:
    """A fresh memory store with 'c' holding the items, and an engine with batches of 4."""
    storage = MemoryStorage()
    storage.create_collection("c", publish_plugin=plugin)
    storage.insert_items("c", "LIVE", collection_items)
    return storage, TaskEngine(storage, clock=ManualClock(START), batch_size=4)


def counters_add_up(task: Task, touched: int) -> None:
    """itemsSucceeded + itemsFailed == items touched; failures listed (under the cap)."""
    assert task.items_succeeded + task.items_failed == touched
    assert len(task.failures) == task.items_failed
