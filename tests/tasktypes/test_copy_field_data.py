"""COPY_FIELD_DATA: its options, its executor, and whole tasks on both adapters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tasktypes_support import (
    EXAMPLE_BODIES,
    counters_add_up,
    docs,
    fields,
    holiday_items,
    items,
    memory_engine,
    plan_for,
    run,
)

from taskengine.engine import TaskEngine
from taskengine.storage import Storage
from taskengine.task import TaskStatus
from taskengine.tasktypes._common import SYSTEM_FIELDS
from taskengine.tasktypes._fieldops import identical
from taskengine.tasktypes.copy_field_data import (
    CopyFieldDataExecutor,
    CopyFieldDataOptions,
    parse_copy_field_data_options,
)


def test_copy_requires_both_keys() -> None:
    """sourceFieldKey and targetFieldKey are both required, reported together."""
    _, problems = parse_copy_field_data_options({"dataCollectionId": "c"}, "t")
    assert fields(problems) == {"t.sourceFieldKey": "required", "t.targetFieldKey": "required"}


def test_copy_keys_must_differ() -> None:
    """sourceFieldKey equal to targetFieldKey is a violation."""
    _, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": "a", "targetFieldKey": "a"}, "t"
    )
    assert fields(problems) == {"t.targetFieldKey": "must differ from sourceFieldKey"}


@pytest.mark.parametrize("system", sorted(SYSTEM_FIELDS))
def test_copy_target_not_system(system: str) -> None:
    """No system field may be a copy target; it may be the source."""
    _, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": "a", "targetFieldKey": system}, "t"
    )
    assert "t.targetFieldKey" in fields(problems)
    options, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": system, "targetFieldKey": "copy"}, "t"
    )
    assert problems == []
    assert options is not None


def test_copy_apply(targets: Storage) -> None:
    """COPY writes items with a source; others are unchanged successes."""
    ex = CopyFieldDataExecutor()
    plan = plan_for(targets, ex, CopyFieldDataOptions("plain", "s", "t"))
    items = [
        {"_id": "1", "s": [1, {"a": 2}]},
        {"_id": "2"},
        {"_id": "3", "s": "x", "t": "x"},
        {"_id": "4", "s": None, "t": 5},
    ]
    changes = ex.apply(plan, items)
    assert [i["_id"] for i in changes.replaces] == ["1", "4"]
    assert changes.unchanged == 2
    first = changes.replaces[0]
    assert first["t"] == [1, {"a": 2}]
    assert first["t"] is not first["s"]
    assert first["t"][1] is not first["s"][1]


def test_example_copy_field_data(storage: Storage, engine: TaskEngine) -> None:
    """Example COPY: fullNameCopy := deep copy of fullName; items without it unchanged."""
    storage.create_collection("Items")
    original = holiday_items()
    storage.insert_items("Items", "LIVE", original)
    task = run(engine, copy.deepcopy(EXAMPLE_BODIES[3]))
    assert task.status is TaskStatus.COMPLETED
    for before, after in zip(original, items(storage), strict=True):
        expected = dict(before)
        if "fullName" in before:
            expected["fullNameCopy"] = before["fullName"]
        assert after == expected
    assert (task.items_succeeded, task.items_failed) == (5, 0)


@given(docs, st.sampled_from(["k", "tags", "_publishStatus", "_id", "nope"]))
def test_copy_touches_only_target(collection_items: list[dict[str, Any]], source: str) -> None:
    """COPY_FIELD_DATA sets target = source and leaves every other field untouched."""
    storage, engine = memory_engine(collection_items, False)
    task = run(
        engine,
        {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "c",
                "sourceFieldKey": source,
                "targetFieldKey": "dst",
            },
        },
    )
    for before, after in zip(collection_items, storage.find("c", "LIVE"), strict=True):
        assert {k: v for k, v in after.items() if k != "dst"} == before
        if source in before:
            assert identical(after["dst"], before[source])
        else:
            assert "dst" not in after
    counters_add_up(task, len(collection_items))
