"""What create_task accepts, and how it reports what it refuses (docs/task-types.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_tasks import (
    copy_task,
    edit_task,
    paths,
    publish_task,
)

from taskengine.engine import TaskEngine
from taskengine.errors import InvalidTask
from taskengine.storage.memory import MemoryStorage

BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("missing type", {"copyFieldDataOptions": copy_task()["copyFieldDataOptions"]}, "task.type"),
    ("unknown type", {"type": "REINDEX", "copyFieldDataOptions": {}}, "task.type"),
    (
        "other type's options",
        {"type": "DELETE_BY_QUERY", "copyFieldDataOptions": copy_task()["copyFieldDataOptions"]},
        "task.copyFieldDataOptions",
    ),
    ("options missing", {"type": "DELETE_BY_QUERY"}, "task.deleteByQueryOptions"),
    (
        "two options objects",
        {**copy_task(), "deleteByQueryOptions": {"dataCollectionId": "Items"}},
        "task.deleteByQueryOptions",
    ),
    (
        "collection id too long",
        copy_task(dataCollectionId="c" * 256),
        "task.copyFieldDataOptions.dataCollectionId",
    ),
    (
        "collection id missing",
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {}},
        "task.deleteByQueryOptions.dataCollectionId",
    ),
    (
        "65 addItems",
        edit_task(operations={"addItems": list(range(65))}),
        "task.editFieldDataOptions.operations.addItems",
    ),
    (
        "65 removeItems",
        edit_task(operations={"removeItems": list(range(65))}),
        "task.editFieldDataOptions.operations.removeItems",
    ),
    (
        "65 replaceItems",
        edit_task(operations={"replaceItems": [{"from": i, "to": 0} for i in range(65)]}),
        "task.editFieldDataOptions.operations.replaceItems",
    ),
    ("source == target", copy_task(targetFieldKey="a"), "task.copyFieldDataOptions.targetFieldKey"),
    ("system target", copy_task(targetFieldKey="_id"), "task.copyFieldDataOptions.targetFieldKey"),
    ("system edit field", edit_task(fieldKey="_id"), "task.editFieldDataOptions.fieldKey"),
    (
        "fieldKey missing",
        {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {"dataCollectionId": "Items", "operations": {"addItems": [1]}},
        },
        "task.editFieldDataOptions.fieldKey",
    ),
    (
        "bad filter",
        {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": {"a": {"$regex": "x"}}},
        },
        "task.deleteByQueryOptions.filter",
    ),
    (
        "unknown filter operator",
        edit_task(filter={"a": {"$nope": 1}}),
        "task.editFieldDataOptions.filter",
    ),
    (
        "unparseable schedule date",
        publish_task(
            operation="SCHEDULE_PUBLISHED_STATUS",
            schedulePublishedStatusOptions={"date": "next tuesday"},
        ),
        "task.updatePublishStatusOptions.schedulePublishedStatusOptions.date",
    ),
    (
        "missing schedule date",
        publish_task(operation="SCHEDULE_DRAFT_STATUS"),
        "task.updatePublishStatusOptions.scheduleDraftStatusOptions.date",
    ),
    (
        "missing operation",
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {"dataCollectionId": "Items"},
        },
        "task.updatePublishStatusOptions.operation",
    ),
    (
        "bad operation",
        publish_task(operation="PUBLISH_NOW"),
        "task.updatePublishStatusOptions.operation",
    ),
    ("bad environment", copy_task(environment="STAGING"), "task.copyFieldDataOptions.environment"),
    (
        "lower-case environment",
        copy_task(environment="live"),
        "task.copyFieldDataOptions.environment",
    ),
    (
        "options not an object",
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": "Items"},
        "task.deleteByQueryOptions",
    ),
]


@pytest.mark.parametrize(
    ("spec", "path"), [(s, p) for _, s, p in BAD_SPECS], ids=[name for name, _, _ in BAD_SPECS]
)
def test_invalid_create_names_the_path_and_stores_nothing(
    engine: TaskEngine, spec: dict[str, Any], path: str
) -> None:
    """Each broken rule raises InvalidTask naming its JSON path; no task is stored."""
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(spec)
    assert any(p == path or p.startswith(path + ".") for p in paths(caught.value)), paths(
        caught.value
    )
    assert engine.list_tasks().total == 0
    assert len(engine.task_store) == 0
    with pytest.raises(InvalidTask):
        engine.create_task({"task": spec})  # the request-body form is checked the same way


def test_invalid_create_reports_every_violation_at_once(engine: TaskEngine) -> None:
    """Several problems in one spec are all reported, each under its own path."""
    spec = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "x" * 300,
            "environment": "NOPE",
            "fieldKey": "_id",
            "filter": {"a": {"$regex": "b"}},
            "operations": {"addItems": list(range(65)), "replaceItems": [{"from": 1}]},
        },
    }
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(spec)
    got = set(paths(caught.value))
    prefix = "task.editFieldDataOptions."
    for suffix in (
        "dataCollectionId",
        "environment",
        "fieldKey",
        "operations.addItems",
        "operations.replaceItems.0.to",
    ):
        assert prefix + suffix in got, got
    assert any(p.startswith(prefix + "filter") for p in got), got


@given(st.text(min_size=256, max_size=400))
def test_any_collection_id_over_255_is_refused(name: str) -> None:
    """Law: every dataCollectionId longer than 255 characters is a violation at its path."""
    engine = TaskEngine(MemoryStorage())
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(
            {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": name}}
        )
    assert "task.deleteByQueryOptions.dataCollectionId" in paths(caught.value)


@given(st.integers(min_value=0, max_value=64), st.integers(min_value=65, max_value=100))
def test_operation_entry_limit_is_exactly_64(ok: int, too_many: int) -> None:
    """Law: up to 64 addItems entries are accepted, 65 or more refused."""
    engine = TaskEngine(MemoryStorage())
    ops = {"addItems": list(range(ok)), "removeDuplicates": True}
    engine.create_task(edit_task(operations=ops))
    with pytest.raises(InvalidTask):
        engine.create_task(edit_task(operations={"addItems": list(range(too_many))}))


def test_create_accepts_a_collection_id_of_exactly_255(engine: TaskEngine) -> None:
    """The 255-character boundary is inclusive."""
    engine.create_task(copy_task(dataCollectionId="c" * 255))


@pytest.mark.parametrize("env", ["LIVE", "SANDBOX", "SANDBOX_PREFERRED"])
def test_create_accepts_every_reference_environment(engine: TaskEngine, env: str) -> None:
    """LIVE, SANDBOX and SANDBOX_PREFERRED are all valid environments."""
    assert (
        engine.create_task(copy_task(environment=env)).to_json()["copyFieldDataOptions"][
            "environment"
        ]
        == env
    )


def test_create_refuses_non_object_specs(engine: TaskEngine) -> None:
    """A spec that is not an object is InvalidTask, never a raw TypeError."""
    for spec in (None, 3, "task", ["type"]):
        with pytest.raises(InvalidTask):
            engine.create_task(spec)


def test_create_accepts_typed_options_and_validates_them(engine: TaskEngine) -> None:
    """Typed options create the same task as JSON; invalid typed options are refused."""
    from taskengine.tasktypes.copy_field_data import CopyFieldDataOptions

    task = engine.create_task(CopyFieldDataOptions("Items", "fullName", "copy"))
    assert task.to_json()["copyFieldDataOptions"]["targetFieldKey"] == "copy"
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(CopyFieldDataOptions("Items", "fullName", "_id"))
    assert "task.copyFieldDataOptions.targetFieldKey" in paths(caught.value)
    assert engine.list_tasks().total == 1
