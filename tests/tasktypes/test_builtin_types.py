"""The four built-in types together: the reference bodies, round trips, engine runs."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tasktypes_support import EXAMPLE_BODIES, PARSERS, START, failed_with, items, run

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import InvalidTask
from taskengine.storage import MemoryStorage, Storage
from taskengine.task import TaskStatus
from taskengine.tasktypes import default_task_types
from taskengine.tasktypes._common import SYSTEM_FIELDS, TaskEnvironment
from taskengine.tasktypes._fieldops import Operations, ReplaceItem
from taskengine.tasktypes.copy_field_data import CopyFieldDataOptions
from taskengine.tasktypes.delete_by_query import DeleteByQueryOptions
from taskengine.tasktypes.edit_field_data import EditFieldDataOptions
from taskengine.tasktypes.update_publish_status import (
    PublishOperation,
    UpdatePublishStatusExecutor,
    UpdatePublishStatusOptions,
)


def test_example_bodies_cover_each_type_once() -> None:
    """There is one example body per built-in type."""
    assert sorted(b["task"]["type"] for b in EXAMPLE_BODIES) == sorted(
        t.name for t in default_task_types().task_types
    )


@pytest.mark.parametrize("body", EXAMPLE_BODIES, ids=lambda b: b["task"]["type"])
def test_example_bodies_parse(body: dict[str, Any]) -> None:
    """Each example body's options parse with no violation and round-trip through to_json."""
    task = body["task"]
    key = next(k for k in task if k != "type")
    options, problems = PARSERS[key](task[key], f"task.{key}")
    assert problems == []
    assert options is not None
    assert task["type"] == options.TASK_TYPE
    again, problems = PARSERS[key](options.to_json(), "x")
    assert problems == []
    assert again == options


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=5,
)


names = st.text(min_size=1, max_size=8).filter(lambda s: s not in SYSTEM_FIELDS)


envs = st.sampled_from(list(TaskEnvironment))


filters = st.one_of(st.none(), st.builds(lambda v: {"f": {"$eq": v}}, st.integers(0, 3)))


options_strategy = st.one_of(
    st.builds(
        DeleteByQueryOptions,
        data_collection_id=names,
        environment=envs,
        filter=filters,
        app_options=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), json_values)),
        include_draft_items=st.booleans(),
    ),
    st.builds(
        lambda c, e, s: CopyFieldDataOptions(c, s, s + "_copy", e),
        names,
        envs,
        names,
    ),
    st.builds(
        EditFieldDataOptions,
        data_collection_id=names,
        field_key=names,
        operations=st.builds(
            Operations,
            add_items=st.lists(json_values, min_size=1, max_size=3),
            remove_items=st.lists(json_values, max_size=3),
            replace_items=st.lists(st.builds(ReplaceItem, json_values, json_values), max_size=2),
            remove_duplicates=st.booleans(),
        ),
        environment=envs,
        filter=filters,
    ),
    st.builds(
        UpdatePublishStatusOptions,
        data_collection_id=names,
        operation=st.sampled_from(list(PublishOperation)),
        environment=envs,
        filter=filters,
        date=st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.just(timezone.utc),
        ),
    ).map(
        lambda o: (
            o
            if o.operation.schedule_key
            else UpdatePublishStatusOptions(
                o.data_collection_id, o.operation, o.environment, o.filter, None
            )
        )
    ),
)


@given(options_strategy)
def test_to_json_round_trips(options: Any) -> None:
    """parse(to_json(options)) gives back equal options, with no violation."""
    data = json.loads(json.dumps(options.to_json()))
    again, problems = PARSERS[options.OPTIONS_KEY](data, "t")
    assert problems == []
    assert again == options


def test_default_task_types_names() -> None:
    """The four task types are registered under the reference names and keys."""
    types = {t.name: t.options_key for t in default_task_types().task_types}
    assert types == {
        "DELETE_BY_QUERY": "deleteByQueryOptions",
        "COPY_FIELD_DATA": "copyFieldDataOptions",
        "EDIT_FIELD_DATA": "editFieldDataOptions",
        "UPDATE_PUBLISH_STATUS": "updatePublishStatusOptions",
    }


def test_default_task_types_carry_their_running_messages() -> None:
    """Each built-in type names what its running tasks are doing (docs/progress.md)."""
    messages = {t.name: t.running_message for t in default_task_types().task_types}
    assert messages == {
        "DELETE_BY_QUERY": "Deleting items",
        "COPY_FIELD_DATA": "Copying field data",
        "EDIT_FIELD_DATA": "Editing field data",
        "UPDATE_PUBLISH_STATUS": "Updating publish status",
    }


def test_default_task_types_wire_the_publish_type_to_its_scheduler() -> None:
    """The publish type's executor tells the scheduler that is listed as the service."""
    builtin = default_task_types()
    publish = builtin.task_types[-1]
    assert isinstance(publish.executor, UpdatePublishStatusExecutor)
    assert publish.executor.scheduler is builtin.scheduler
    assert builtin.services == (builtin.scheduler,)


def test_default_task_types_gives_each_engine_its_own_scheduler() -> None:
    """Two calls give two schedulers, so two engines never share a timeline."""
    assert default_task_types().scheduler is not default_task_types().scheduler


@pytest.mark.parametrize(
    ("sandbox", "env", "touched"),
    [
        (True, "SANDBOX", "SANDBOX"),
        (True, "SANDBOX_PREFERRED", "SANDBOX"),
        (False, "SANDBOX_PREFERRED", "LIVE"),
        (True, "LIVE", "LIVE"),
    ],
)
def test_environments(
    storage: Storage, engine: TaskEngine, sandbox: bool, env: str, touched: str
) -> None:
    """The task works on the resolved environment only."""
    storage.create_collection("Items", sandbox=sandbox)
    storage.insert_items("Items", "LIVE", [{"_id": "a", "s": 1}])
    if sandbox:
        storage.insert_items("Items", "SANDBOX", [{"_id": "a", "s": 2}])
    task = run(
        engine,
        {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "Items",
                "environment": env,
                "sourceFieldKey": "s",
                "targetFieldKey": "t",
            },
        },
    )
    assert task.status is TaskStatus.COMPLETED
    assert "t" in items(storage, env=touched)[0]
    if sandbox:
        other = "LIVE" if touched == "SANDBOX" else "SANDBOX"
        assert "t" not in items(storage, env=other)[0]


def test_unknown_collection_task_fails(engine: TaskEngine) -> None:
    """A task on an unknown collection is created, then FAILS with WDE0025."""
    for body in EXAMPLE_BODIES:
        created = engine.create_task(copy.deepcopy(body))
        assert created.status is TaskStatus.NEW
    engine.run_until_idle()
    for task in engine.list_tasks().tasks:
        failed_with(task, "WDE0025")
        assert task.failures[0].data == {"dataCollectionId": "Items"}


def test_sandbox_not_enabled_fails(storage: Storage, engine: TaskEngine) -> None:
    """SANDBOX on a collection without a sandbox FAILS with WDE0179."""
    storage.create_collection("Items")
    task = run(
        engine,
        {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {"dataCollectionId": "Items", "environment": "SANDBOX"},
        },
    )
    failed_with(task, "WDE0179")


def test_create_rejects_with_paths(engine: TaskEngine) -> None:
    """A bad spec raises InvalidTask listing every violation by JSON path; nothing stored."""
    with pytest.raises(InvalidTask) as info:
        engine.create_task(
            {
                "task": {
                    "type": "EDIT_FIELD_DATA",
                    "editFieldDataOptions": {
                        "dataCollectionId": "x" * 300,
                        "operations": {"addItems": list(range(65))},
                    },
                }
            }
        )
    paths = {v.field for v in info.value.violations}
    assert paths == {
        "task.editFieldDataOptions.dataCollectionId",
        "task.editFieldDataOptions.fieldKey",
        "task.editFieldDataOptions.operations.addItems",
    }
    assert engine.list_tasks().total == 0


def test_create_options_must_match_type(engine: TaskEngine) -> None:
    """The options object must be the one matching type."""
    with pytest.raises(InvalidTask) as info:
        engine.create_task(
            {
                "type": "DELETE_BY_QUERY",
                "copyFieldDataOptions": {
                    "dataCollectionId": "c",
                    "sourceFieldKey": "a",
                    "targetFieldKey": "b",
                },
            }
        )
    paths = {v.field for v in info.value.violations}
    assert "task.deleteByQueryOptions" in paths


def test_create_from_typed_options(storage: Storage, engine: TaskEngine) -> None:
    """Typed options objects are accepted as a task spec."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": "a", "t": ["x"]}])
    task = run(
        engine,
        EditFieldDataOptions("Items", "t", Operations(replace_items=[ReplaceItem("x", "y")])),
    )
    assert task.type == "EDIT_FIELD_DATA"
    assert task.status is TaskStatus.COMPLETED
    assert items(storage) == [{"_id": "a", "t": ["y"]}]


def test_concurrent_tasks_with_cancels(tmp_path: Path) -> None:
    """Several tasks at once on different and the same collection, one cancelled: exact."""
    storage = MemoryStorage()
    n = 600
    for name in ("A", "B"):
        storage.create_collection(name)
        storage.insert_items(
            name, "LIVE", [{"_id": f"{i:05d}", "g": i % 3, "tags": []} for i in range(n)]
        )
    engine = TaskEngine(storage, workers=3, batch_size=25)
    edit_a = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "A",
            "fieldKey": "tags",
            "filter": {"g": 0},
            "operations": {"addItems": ["x"]},
        },
    }
    delete_a = {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {"dataCollectionId": "A", "filter": {"g": 1}},
    }
    copy_b = {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "B",
            "sourceFieldKey": "g",
            "targetFieldKey": "h",
        },
    }
    cancelled_b = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "B",
            "fieldKey": "tags",
            "operations": {"addItems": ["y"]},
        },
    }
    engine.start()
    try:
        tasks = [engine.create_task(s) for s in (edit_a, delete_a, copy_b, cancelled_b)]
        engine.cancel_task(tasks[3].id)
        finished = [engine.wait(t.id, timeout=30) for t in tasks]
    finally:
        engine.stop(timeout=10)
    assert all(t.is_finished for t in finished)
    e_a, d_a, c_b, x_b = finished
    assert e_a.status is d_a.status is c_b.status is TaskStatus.COMPLETED
    assert (e_a.items_succeeded, d_a.items_succeeded, c_b.items_succeeded) == (200, 200, n)
    left = list(storage.find("A", "LIVE"))
    assert len(left) == 400
    assert all(i["tags"] == (["x"] if i["g"] == 0 else []) for i in left)
    assert all(i["h"] == i["g"] for i in storage.find("B", "LIVE"))
    assert x_b.status is TaskStatus.FAILED
    assert x_b.failures[0].code == "CANCELLED"
    with_y = sum(1 for i in storage.find("B", "LIVE") if i["tags"] == ["y"])
    assert with_y == x_b.items_succeeded
    assert x_b.items_failed == 0


def test_cancel_midway_counts_exact(storage: Storage) -> None:
    """Cancelling a RUNNING task stops it between batches; counters match the writes."""
    storage.create_collection("C")
    storage.insert_items("C", "LIVE", [{"_id": f"{i:04d}", "t": []} for i in range(300)])
    engine = TaskEngine(storage, batch_size=10, set_batch_size=10, clock=ManualClock(START))
    task = engine.create_task(
        {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {
                "dataCollectionId": "C",
                "fieldKey": "t",
                "operations": {"addItems": [1]},
            },
        }
    )
    # Cancelled once the 5th batch committed (the hook runs on the scan path and on a
    # storage that changes batches itself alike).
    executor = engine.task_types["EDIT_FIELD_DATA"].executor
    original = executor.committed
    calls = {"n": 0}

    def committed_then_cancel(plan: Any, changes: Any, written: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            engine.cancel_task(task.id)
        original(plan, changes, written)

    executor.committed = committed_then_cancel  # type: ignore[method-assign]
    try:
        engine.run_until_idle()
    finally:
        executor.committed = original  # type: ignore[method-assign]
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "CANCELLED"
    written = sum(1 for i in storage.find("C", "LIVE") if i["t"] == [1])
    assert done.items_succeeded == written == 50
    assert all(i["t"] in ([], [1]) for i in storage.find("C", "LIVE"))
