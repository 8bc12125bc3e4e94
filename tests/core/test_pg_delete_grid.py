"""A ``DELETE_BY_QUERY`` through an engine on PostgreSQL ends its key windows on the keys
the task's estimate walked (``storage/_pgonepass.py``, ``grid_edge``): the estimate hands
its walk to the storage, the storage to the delete, and the task ends exact, rows without
``jsonb`` (U+0000 in a value) checked in Python on the way."""

from __future__ import annotations

import pytest
from pg_conftest_plugin import grid_edges

from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine, TaskStatus
from taskengine.storage import postgres as postgres_module

pytestmark = pytest.mark.postgres

ITEMS = 6000


def test_an_engine_delete_ends_its_windows_on_the_estimates_walk(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A table filled a moment ago has no statistics: the set-based path is forced.
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)
    edges = grid_edges(monkeypatch)
    items = [
        {"_id": f"{k:05d}", "n": k % 5, **({"z": "\x00"} if k % 97 == 0 else {})}
        for k in range(ITEMS)
    ]
    storage = PostgresStorage(pg_database)
    store = PostgresTaskStore(storage)
    try:
        storage.create_collection("Items")
        storage.insert_items("Items", "LIVE", items)
        engine = TaskEngine(storage, task_store=store, batch_size=200, set_batch_size=2000)
        task = engine.create_task(
            {
                "type": "DELETE_BY_QUERY",
                "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": {"n": {"$lt": 2}}},
            }
        )
        engine.run_until_idle()
        done = engine.get_task(task.id)
        left = [item["_id"] for item in storage.find("Items", "LIVE")]
    finally:
        store.close()
        storage.close()
    deleted = [item["_id"] for item in items if item["n"] < 2]
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed) == (len(deleted), 0)
    assert done.estimated_item_count == len(deleted)
    assert left == [item["_id"] for item in items if item["n"] >= 2]
    assert any(edge is not None for edge in edges), "no window ended on the estimate's walk"
