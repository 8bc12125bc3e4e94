"""EDIT_FIELD_DATA: its options, its executor, and whole tasks on both adapters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given
from tasktypes_support import (
    EXAMPLE_BODIES,
    counters_add_up,
    docs,
    edit,
    fields,
    holiday_items,
    items,
    memory_engine,
    plan_for,
    run,
    user_filters,
)
from test_fieldops import MISSING, operations, reference_edit

from taskengine._values import values_equal
from taskengine.engine import TaskEngine
from taskengine.filters import matches
from taskengine.storage import Storage
from taskengine.task import TaskStatus
from taskengine.tasktype import ItemFailure
from taskengine.tasktypes._fieldops import Operations, ReplaceItem
from taskengine.tasktypes.edit_field_data import (
    MAX_OPERATION_ENTRIES,
    EditFieldDataExecutor,
    EditFieldDataOptions,
    parse_edit_field_data_options,
)


def test_example_edit_options_typed() -> None:
    """The example's EDIT options become typed operations."""
    options, _ = parse_edit_field_data_options(
        EXAMPLE_BODIES[2]["task"]["editFieldDataOptions"], "p"
    )
    assert options == EditFieldDataOptions(
        data_collection_id="Items",
        field_key="tags",
        operations=Operations(
            add_items=["sale"],
            remove_items=["outdated"],
            replace_items=[ReplaceItem("Goob", "Good")],
            remove_duplicates=True,
        ),
        filter={"holidays": {"$in": ["Halloween"]}},
    )


def test_edit_field_key_required_and_not_system() -> None:
    """fieldKey is required and may not be a system field."""
    body = edit()
    del body["fieldKey"]
    _, problems = parse_edit_field_data_options(body, "task.editFieldDataOptions")
    assert fields(problems) == {"task.editFieldDataOptions.fieldKey": "required"}
    _, problems = parse_edit_field_data_options(edit(fieldKey="_id"), "t")
    assert "t.fieldKey" in fields(problems)


def test_edit_operations_required_and_nonempty() -> None:
    """operations is required and must request at least one operation."""
    body = edit()
    del body["operations"]
    _, problems = parse_edit_field_data_options(body, "t")
    assert fields(problems) == {"t.operations": "required"}
    _, problems = parse_edit_field_data_options(edit(operations={"removeDuplicates": False}), "t")
    assert "t.operations" in fields(problems)


@pytest.mark.parametrize("name", ["addItems", "removeItems"])
def test_edit_cap_64(name: str) -> None:
    """addItems/removeItems accept 64 entries and reject 65."""
    ok, problems = parse_edit_field_data_options(
        edit(operations={name: list(range(MAX_OPERATION_ENTRIES))}), "t"
    )
    assert problems == []
    assert ok is not None
    _, problems = parse_edit_field_data_options(
        edit(operations={name: list(range(MAX_OPERATION_ENTRIES + 1))}), "t"
    )
    assert fields(problems) == {f"t.operations.{name}": "must have at most 64 entries"}


def test_edit_replace_cap_and_entries() -> None:
    """replaceItems is capped at 64 and each entry needs from and to (null allowed)."""
    pairs = [{"from": i, "to": i + 1} for i in range(MAX_OPERATION_ENTRIES + 1)]
    _, problems = parse_edit_field_data_options(edit(operations={"replaceItems": pairs}), "t")
    assert "t.operations.replaceItems" in fields(problems)
    _, problems = parse_edit_field_data_options(
        edit(operations={"replaceItems": [{"from": "a"}, {"to": "b", "x": 1}, 3]}), "t"
    )
    assert fields(problems) == {
        "t.operations.replaceItems.0.to": "required",
        "t.operations.replaceItems.1.from": "required",
        "t.operations.replaceItems.1.x": "unknown field",
        "t.operations.replaceItems.2": "must be an object",
    }
    options, problems = parse_edit_field_data_options(
        edit(operations={"replaceItems": [{"from": None, "to": "x"}]}), "t"
    )
    assert problems == []
    assert options is not None
    assert options.operations.replace_items == (ReplaceItem(None, "x"),)


def test_edit_values_must_be_storable() -> None:
    """Operation values must be JSON-like: NaN, sets and huge ints are violations."""
    _, problems = parse_edit_field_data_options(
        edit(operations={"addItems": [1, float("nan"), {1, 2}, 2**70]}), "t"
    )
    assert set(fields(problems)) == {
        "t.operations.addItems.1",
        "t.operations.addItems.2",
        "t.operations.addItems.3",
    }


def test_edit_arrays_must_be_arrays() -> None:
    """addItems given as a string is a violation, not a list of characters."""
    _, problems = parse_edit_field_data_options(edit(operations={"addItems": "abc"}), "t")
    assert fields(problems) == {"t.operations.addItems": "must be an array"}


def test_all_violations_reported_together() -> None:
    """Every broken rule is reported in one call, each by its path."""
    _, problems = parse_edit_field_data_options(
        {
            "dataCollectionId": "",
            "environment": "MOON",
            "fieldKey": "_owner",
            "operations": {"addItems": list(range(65)), "removeDuplicates": "y"},
        },
        "task.editFieldDataOptions",
    )
    assert set(fields(problems)) == {
        "task.editFieldDataOptions.dataCollectionId",
        "task.editFieldDataOptions.environment",
        "task.editFieldDataOptions.fieldKey",
        "task.editFieldDataOptions.operations.addItems",
        "task.editFieldDataOptions.operations.removeDuplicates",
    }


def test_edit_apply_failures_and_unchanged(targets: Storage) -> None:
    """EDIT reports WDE0075 for non-arrays, writes changes, counts the rest unchanged."""
    ex = EditFieldDataExecutor()
    ops = Operations(
        add_items=["sale"],
        remove_items=["outdated"],
        replace_items=[ReplaceItem("Goob", "Good")],
        remove_duplicates=True,
    )
    plan = plan_for(targets, ex, EditFieldDataOptions("plain", "tags", ops))
    items = [
        {"_id": "1", "tags": ["Goob", "outdated", "sale"]},
        {"_id": "2", "tags": "Goob"},
        {"_id": "3", "tags": ["sale"]},
        {"_id": "4"},
    ]
    changes = ex.apply(plan, items)
    assert [i["_id"] for i in changes.replaces] == ["1", "4"]
    assert changes.replaces[0]["tags"] == ["Good", "sale"]
    assert changes.replaces[1]["tags"] == ["sale"]
    assert changes.unchanged == 1
    assert len(changes.failures) == 1
    failure = changes.failures[0]
    assert isinstance(failure, ItemFailure)
    assert (failure.item_id, failure.code) == ("2", "WDE0075")
    assert "tags" in failure.description


def test_example_edit_field_data(storage: Storage, engine: TaskEngine) -> None:
    """Example EDIT on Halloween items: replace, remove, add, dedupe."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(EXAMPLE_BODIES[2]))
    assert task.status is TaskStatus.COMPLETED
    by_id = {i["_id"]: i for i in items(storage)}
    assert by_id["1"]["tags"] == ["Good", "sale"]
    assert by_id["2"]["tags"] == ["Goob"]  # not Halloween
    assert by_id["3"]["tags"] == ["sale"]
    assert by_id["5"]["tags"] == ["sale"]  # missing field = empty array
    assert (task.items_succeeded, task.items_failed) == (3, 0)


def test_item_failures_complete_with_items_failed(storage: Storage, engine: TaskEngine) -> None:
    """addItems on a string field is an item failure; the task still COMPLETES."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(
        engine,
        {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {
                "dataCollectionId": "Items",
                "fieldKey": "tags",
                "operations": {"addItems": ["x"]},
            },
        },
    )
    assert task.status is TaskStatus.COMPLETED
    assert (task.items_succeeded, task.items_failed) == (4, 1)
    assert len(task.failures) == 1
    failure = task.failures[0]
    assert failure.code == "WDE0075"
    assert failure.data == {"itemId": "4"}
    stored = storage.get_item("Items", "LIVE", "4")
    assert stored is not None
    assert stored["tags"] == "Goob"
    assert task.to_json()["failures"][0]["data"] == {"itemId": "4"}


@given(docs, user_filters, operations)
def test_edit_equals_reference(
    collection_items: list[dict[str, Any]], spec: Any, ops: Operations
) -> None:
    """EDIT_FIELD_DATA result equals the slow reference applied item by item."""
    assume(ops.needs_array or ops.replace_items)  # an empty edit is refused at create
    storage, engine = memory_engine(collection_items, False)
    engine.create_task(EditFieldDataOptions("c", "tags", ops, filter=spec))
    engine.run_until_idle()
    task = engine.list_tasks().tasks[0]
    expected = []
    failed = touched = 0
    for d in collection_items:
        want = copy.deepcopy(d)
        if matches(spec, d, "wix"):
            touched += 1
            kind, value = reference_edit(d.get("tags", MISSING), ops)
            if kind == "refused":
                failed += 1
            elif not (("tags" not in d or d["tags"] is None) and value == []):
                want["tags"] = value
        expected.append(want)
    got = list(storage.find("c", "LIVE"))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert values_equal(g, e), (g, e)
    counters_add_up(task, touched)
    assert task.items_failed == failed
    assert all(f.code == "WDE0075" for f in task.failures)
