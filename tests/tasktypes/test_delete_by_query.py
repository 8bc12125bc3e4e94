"""DELETE_BY_QUERY: its options, its executor, and whole tasks on both adapters."""

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
    user_filters,
)

from taskengine.engine import TaskEngine
from taskengine.filters import matches
from taskengine.storage import Storage
from taskengine.task import TaskStatus
from taskengine.tasktypes.delete_by_query import (
    DeleteByQueryExecutor,
    DeleteByQueryOptions,
    parse_delete_by_query_options,
)


def test_delete_publish_plugin_options() -> None:
    """includeDraftItems defaults to false and must be a boolean."""
    options, _ = parse_delete_by_query_options(
        {"dataCollectionId": "c", "publishPluginOptions": {"includeDraftItems": True}}, "t"
    )
    assert options is not None
    assert options.include_draft_items is True
    _, problems = parse_delete_by_query_options(
        {"dataCollectionId": "c", "publishPluginOptions": {"includeDraftItems": "yes"}}, "t"
    )
    assert fields(problems) == {"t.publishPluginOptions.includeDraftItems": "must be a boolean"}


def test_delete_app_options_opaque() -> None:
    """appOptions is kept as given but must be an object."""
    options, _ = parse_delete_by_query_options(
        {"dataCollectionId": "c", "appOptions": {"anything": [1, {"x": None}]}}, "t"
    )
    assert options is not None
    assert options.app_options == {"anything": [1, {"x": None}]}
    _, problems = parse_delete_by_query_options({"dataCollectionId": "c", "appOptions": 3}, "t")
    assert "t.appOptions" in fields(problems)


def test_delete_spares_drafts_on_plugin_collection(targets: Storage) -> None:
    """With the plugin and no includeDraftItems, the plan's filter rejects DRAFT items."""
    plan = DeleteByQueryExecutor().plan(DeleteByQueryOptions("pub"), targets)
    assert plan.filter is not None
    accept = plan.filter
    assert accept({"_id": "1"})
    assert accept({"_id": "1", "_publishStatus": None})
    assert accept({"_id": "1", "_publishStatus": "PUBLISHED"})
    assert not accept({"_id": "1", "_publishStatus": "DRAFT"})


def test_delete_include_drafts_or_no_plugin_takes_all(targets: Storage) -> None:
    """includeDraftItems, or a collection without the plugin, puts no draft condition."""
    ex = DeleteByQueryExecutor()
    assert ex.plan(DeleteByQueryOptions("pub", include_draft_items=True), targets).filter is None
    assert ex.plan(DeleteByQueryOptions("plain"), targets).filter is None


def test_delete_combines_user_filter_with_drafts(targets: Storage) -> None:
    """The user's filter and the published-only condition must both hold."""
    plan = DeleteByQueryExecutor().plan(
        DeleteByQueryOptions("pub", filter={"k": {"$eq": 1}}), targets
    )
    assert plan.filter is not None
    assert plan.filter({"_id": "a", "k": 1})
    assert not plan.filter({"_id": "a", "k": 2})
    assert not plan.filter({"_id": "a", "k": 1, "_publishStatus": "DRAFT"})


def test_plan_keeps_app_options(targets: Storage) -> None:
    """appOptions travel in the plan's state untouched."""
    plan = DeleteByQueryExecutor().plan(
        DeleteByQueryOptions("plain", app_options={"x": 1}), targets
    )
    assert plan.state == {"x": 1}


def test_delete_apply_deletes_all_given(targets: Storage) -> None:
    """DELETE apply deletes exactly the items it is given."""
    ex = DeleteByQueryExecutor()
    plan = plan_for(targets, ex, DeleteByQueryOptions("plain"))
    changes = ex.apply(plan, [{"_id": "a"}, {"_id": "b"}])
    assert list(changes.deletes) == ["a", "b"]
    assert not changes.replaces


@pytest.mark.parametrize("plugin", [False, True])
def test_example_delete_by_query(storage: Storage, engine: TaskEngine, plugin: bool) -> None:
    """Example DELETE: Halloween items go; with the plugin, the DRAFT one stays."""
    storage.create_collection("Items", publish_plugin=plugin)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(EXAMPLE_BODIES[1]))
    assert task.status is TaskStatus.COMPLETED
    left = sorted(i["_id"] for i in items(storage))
    assert left == (["2", "4", "5"] if plugin else ["2", "4"])
    assert task.items_succeeded == (2 if plugin else 3)
    assert task.items_failed == 0
    assert task.estimated_item_count == task.items_succeeded


@given(docs, user_filters, st.booleans(), st.booleans())
def test_delete_deletes_exactly_matching(
    collection_items: list[dict[str, Any]], spec: Any, plugin: bool, drafts: bool
) -> None:
    """DELETE_BY_QUERY deletes exactly the matching items, sparing drafts unless asked."""
    storage, engine = memory_engine(collection_items, plugin)
    options: dict[str, Any] = {
        "dataCollectionId": "c",
        "publishPluginOptions": {"includeDraftItems": drafts},
    }
    if spec is not None:
        options["filter"] = spec
    task = run(engine, {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": options})

    def doomed(d: dict[str, Any]) -> bool:
        if not matches(spec, d, "wix"):
            return False
        return not plugin or drafts or d.get("_publishStatus") in (None, "PUBLISHED")

    expected = [d for d in collection_items if not doomed(d)]
    assert list(storage.find("c", "LIVE")) == expected
    counters_add_up(task, len(collection_items) - len(expected))
    assert task.status is TaskStatus.COMPLETED
