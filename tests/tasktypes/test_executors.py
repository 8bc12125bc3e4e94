"""The four executors on their own: plan (target resolution, failures) and pure apply."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from taskengine.errors import TaskFailure
from taskengine.storage import Environment, MemoryStorage, SQLiteStorage, Storage, WriteResult
from taskengine.task import RawOptions
from taskengine.tasktype import ItemFailure, Plan
from taskengine.tasktypes._executors import (
    CopyFieldDataExecutor,
    DeleteByQueryExecutor,
    EditFieldDataExecutor,
    UpdatePublishStatusExecutor,
    default_task_types,
    resolve_target,
)
from taskengine.tasktypes._options import (
    CopyFieldDataOptions,
    DeleteByQueryOptions,
    EditFieldDataOptions,
    Operations,
    PublishOperation,
    ReplaceItem,
    TaskEnvironment,
    UpdatePublishStatusOptions,
)
from taskengine.tasktypes._publish_schedule import PublishScheduler

WHEN = datetime(2030, 1, 1, 10, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Both storage adapters, with collections: plain, sandboxed, published (plugin)."""
    store: Storage
    store = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "items.db")
    store.create_collection("plain")
    store.create_collection("boxed", sandbox=True)
    store.create_collection("pub", publish_plugin=True)
    yield store
    if isinstance(store, SQLiteStorage):
        store.close()


# --------------------------------------------------------------------------- plan


def test_unknown_collection_fails_wde0025(storage: Storage) -> None:
    """Every executor fails an unknown collection with WDE0025 naming it."""
    cases: list[tuple[Any, Any]] = [
        (DeleteByQueryExecutor(), DeleteByQueryOptions("nope")),
        (CopyFieldDataExecutor(), CopyFieldDataOptions("nope", "a", "b")),
        (EditFieldDataExecutor(), EditFieldDataOptions("nope", "t", Operations(["x"]))),
        (
            UpdatePublishStatusExecutor(),
            UpdatePublishStatusOptions("nope", PublishOperation.SET_DRAFT_STATUS),
        ),
    ]
    for executor, options in cases:
        with pytest.raises(TaskFailure) as info:
            executor.plan(options, storage)
        assert info.value.code == "WDE0025"
        assert info.value.data == {"dataCollectionId": "nope"}


def test_sandbox_without_sandbox_fails_wde0179(storage: Storage) -> None:
    """SANDBOX on a collection without a sandbox fails with WDE0179."""
    with pytest.raises(TaskFailure) as info:
        resolve_target("plain", TaskEnvironment.SANDBOX, storage)
    assert info.value.code == "WDE0179"


@pytest.mark.parametrize(
    ("collection", "requested", "expected"),
    [
        ("plain", "LIVE", Environment.LIVE),
        ("plain", "SANDBOX_PREFERRED", Environment.LIVE),
        ("boxed", "SANDBOX_PREFERRED", Environment.SANDBOX),
        ("boxed", "SANDBOX", Environment.SANDBOX),
        ("boxed", "LIVE", Environment.LIVE),
    ],
)
def test_environment_resolution(
    storage: Storage, collection: str, requested: str, expected: Environment
) -> None:
    """SANDBOX_PREFERRED picks the sandbox exactly when the collection has one."""
    _, env = resolve_target(collection, requested, storage)
    assert env is expected
    plan = CopyFieldDataExecutor().plan(
        CopyFieldDataOptions(collection, "a", "b", TaskEnvironment(requested)), storage
    )
    assert plan.environment is expected


def test_publish_without_plugin_fails_wde0119(storage: Storage) -> None:
    """UPDATE_PUBLISH_STATUS on a collection without the plugin fails with WDE0119."""
    with pytest.raises(TaskFailure) as info:
        UpdatePublishStatusExecutor().plan(
            UpdatePublishStatusOptions("plain", PublishOperation.SET_PUBLISHED_STATUS), storage
        )
    assert info.value.code == "WDE0119"
    assert info.value.data == {"dataCollectionId": "plain"}


def test_delete_spares_drafts_on_plugin_collection(storage: Storage) -> None:
    """With the plugin and no includeDraftItems, the plan's filter rejects DRAFT items."""
    plan = DeleteByQueryExecutor().plan(DeleteByQueryOptions("pub"), storage)
    assert plan.filter is not None
    accept = plan.filter
    assert accept({"_id": "1"})
    assert accept({"_id": "1", "_publishStatus": None})
    assert accept({"_id": "1", "_publishStatus": "PUBLISHED"})
    assert not accept({"_id": "1", "_publishStatus": "DRAFT"})


def test_delete_include_drafts_or_no_plugin_takes_all(storage: Storage) -> None:
    """includeDraftItems, or a collection without the plugin, puts no draft condition."""
    ex = DeleteByQueryExecutor()
    assert ex.plan(DeleteByQueryOptions("pub", include_draft_items=True), storage).filter is None
    assert ex.plan(DeleteByQueryOptions("plain"), storage).filter is None


def test_delete_combines_user_filter_with_drafts(storage: Storage) -> None:
    """The user's filter and the published-only condition must both hold."""
    plan = DeleteByQueryExecutor().plan(
        DeleteByQueryOptions("pub", filter={"k": {"$eq": 1}}), storage
    )
    assert plan.filter is not None
    assert plan.filter({"_id": "a", "k": 1})
    assert not plan.filter({"_id": "a", "k": 2})
    assert not plan.filter({"_id": "a", "k": 1, "_publishStatus": "DRAFT"})


def test_empty_filter_is_no_filter(storage: Storage) -> None:
    """filter {} means all items: the plan carries no filter."""
    plan = EditFieldDataExecutor().plan(
        EditFieldDataOptions("plain", "t", Operations(["x"]), filter={}), storage
    )
    assert plan.filter is None


def test_plan_accepts_raw_options(storage: Storage) -> None:
    """Raw JSON options (as a task store hands back) are parsed again."""
    raw = RawOptions("plain", {"dataCollectionId": "plain", "sourceFieldKey": "a",
                               "targetFieldKey": "b"})
    plan = CopyFieldDataExecutor().plan(raw, storage)
    assert plan.collection == "plain"
    bad = RawOptions("plain", {"dataCollectionId": "plain", "sourceFieldKey": "a"})
    with pytest.raises(TaskFailure):
        CopyFieldDataExecutor().plan(bad, storage)


def test_plan_keeps_app_options(storage: Storage) -> None:
    """appOptions travel in the plan's state untouched."""
    plan = DeleteByQueryExecutor().plan(
        DeleteByQueryOptions("plain", app_options={"x": 1}), storage
    )
    assert plan.state == {"x": 1}


# --------------------------------------------------------------------------- apply


def plan_for(storage: Storage, executor: Any, options: Any) -> Plan:
    """Plan helper."""
    plan: Plan = executor.plan(options, storage)
    return plan


def test_delete_apply_deletes_all_given(storage: Storage) -> None:
    """DELETE apply deletes exactly the items it is given."""
    ex = DeleteByQueryExecutor()
    plan = plan_for(storage, ex, DeleteByQueryOptions("plain"))
    changes = ex.apply(plan, [{"_id": "a"}, {"_id": "b"}])
    assert list(changes.deletes) == ["a", "b"]
    assert not changes.replaces


def test_copy_apply(storage: Storage) -> None:
    """COPY writes items with a source; others are unchanged successes."""
    ex = CopyFieldDataExecutor()
    plan = plan_for(storage, ex, CopyFieldDataOptions("plain", "s", "t"))
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


def test_edit_apply_failures_and_unchanged(storage: Storage) -> None:
    """EDIT reports WDE0075 for non-arrays, writes changes, counts the rest unchanged."""
    ex = EditFieldDataExecutor()
    ops = Operations(add_items=["sale"], remove_items=["outdated"],
                     replace_items=[ReplaceItem("Goob", "Good")], remove_duplicates=True)
    plan = plan_for(storage, ex, EditFieldDataOptions("plain", "tags", ops))
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


def test_publish_set_apply(storage: Storage) -> None:
    """SET_DRAFT_STATUS writes items not already DRAFT."""
    ex = UpdatePublishStatusExecutor()
    plan = plan_for(
        storage, ex, UpdatePublishStatusOptions("pub", PublishOperation.SET_DRAFT_STATUS)
    )
    changes = ex.apply(
        plan, [{"_id": "1"}, {"_id": "2", "_publishStatus": "DRAFT"},
               {"_id": "3", "_publishStatus": "PUBLISHED"}]
    )
    assert [(i["_id"], i["_publishStatus"]) for i in changes.replaces] == [
        ("1", "DRAFT"), ("3", "DRAFT")
    ]
    assert changes.unchanged == 1


def test_publish_schedule_and_cancel_apply(storage: Storage) -> None:
    """SCHEDULE stores the date; CANCEL removes both dates; same state is unchanged."""
    ex = UpdatePublishStatusExecutor()
    plan = plan_for(
        storage,
        ex,
        UpdatePublishStatusOptions(
            "pub", PublishOperation.SCHEDULE_DRAFT_STATUS, date=WHEN
        ),
    )
    changes = ex.apply(plan, [{"_id": "1"}, {"_id": "2", "_draftDate": WHEN}])
    assert [i["_id"] for i in changes.replaces] == ["1"]
    assert changes.replaces[0]["_draftDate"] == WHEN
    assert changes.unchanged == 1
    cancel = plan_for(
        storage, ex, UpdatePublishStatusOptions("pub", PublishOperation.CANCEL_SCHEDULING)
    )
    changes = ex.apply(
        cancel, [{"_id": "1", "_draftDate": WHEN, "_publishDate": WHEN, "k": 1}, {"_id": "2"}]
    )
    assert changes.replaces == [{"_id": "1", "k": 1}]
    assert changes.unchanged == 1


def test_publish_committed_feeds_scheduler(storage: Storage) -> None:
    """committed puts written ids on the timeline, and a cancel takes them off."""
    scheduler = PublishScheduler(storage)
    ex = UpdatePublishStatusExecutor(scheduler)
    plan = plan_for(
        storage,
        ex,
        UpdatePublishStatusOptions("pub", PublishOperation.SCHEDULE_PUBLISHED_STATUS, date=WHEN),
    )
    changes = ex.apply(plan, [{"_id": "a"}, {"_id": "b"}])
    ex.committed(plan, changes, WriteResult(("a",), ("b",)))
    assert [(e.item_id, e.field, e.due) for e in scheduler.pending()] == [
        ("a", "_publishDate", WHEN)
    ]
    cancel = plan_for(
        storage, ex, UpdatePublishStatusOptions("pub", PublishOperation.CANCEL_SCHEDULING)
    )
    ex.committed(cancel, changes, WriteResult(("a",), ()))
    assert scheduler.pending() == []


def test_default_task_types_names() -> None:
    """The four task types are registered under the reference names and keys."""
    types = {t.name: t.options_key for t in default_task_types()}
    assert types == {
        "DELETE_BY_QUERY": "deleteByQueryOptions",
        "COPY_FIELD_DATA": "copyFieldDataOptions",
        "EDIT_FIELD_DATA": "editFieldDataOptions",
        "UPDATE_PUBLISH_STATUS": "updatePublishStatusOptions",
    }
