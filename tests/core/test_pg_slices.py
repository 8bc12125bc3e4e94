"""Sliced tasks on PostgreSQL: two engine processes each run a slice of one task, and the
in-place upgrade of a version-1 task store.

Two engine processes (tests/pg_engine_child.py) pause after their first committed batch,
holding the slice they run: the parent reads both slices' leases (two owners, the two
processes), lets them go, and checks the combined end: every item changed exactly once
(addItems is not idempotent), counters exact, the slices hidden from the list.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from pg_processes import PgEngines, PgReader
from test_ownership_processes import edit_task, wait_for

from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine, TaskStatus
from taskengine.storage import postgres
from taskengine.task import RawOptions, Task

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ITEMS = 400
BAD_EVERY = 20


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[PgEngines]:
    """A starter of engine processes; every one still running is killed afterwards."""
    started = PgEngines(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def test_two_processes_each_run_a_slice_of_one_task(pg_database: str, engines: PgEngines) -> None:
    """Each process holds one slice (read from the leases), and the task ends exact."""
    storage = PostgresStorage(pg_database)
    store = PostgresTaskStore(storage)
    try:
        storage.create_collection("Tags")
        storage.insert_items(
            "Tags",
            "LIVE",
            [{"_id": f"t{k:05d}", "tags": "x" if k % BAD_EVERY == 0 else []} for k in range(ITEMS)],
        )
        a = engines.start("a", dsn=pg_database, batch=25, pause_at=1)
        b = engines.start("b", dsn=pg_database, batch=25, pause_at=1)
        creator = TaskEngine(storage, task_store=store)  # never started
        task = creator.create_task(edit_task("Tags", "s"), slices=2)
        a.expect("paused")
        b.expect("paused")
        view = PgReader(pg_database)
        try:
            leases = [view.lease(f"{task.id}~{index}") for index in range(2)]
            assert all(lease is not None for lease in leases)
            assert {lease.owner for lease in leases if lease is not None} == {a.owner, b.owner}
            running = creator.get_task(task.id)
            assert running.status is TaskStatus.RUNNING
            assert running.is_sliced
            assert 0 < running.items_succeeded + running.items_failed < ITEMS
            a.send("go")
            b.send("go")
            done = wait_for(
                "the sliced task to end",
                lambda: view.task(task.id).is_finished and view.task(task.id),
            )
            assert done.status is TaskStatus.COMPLETED
            assert (done.items_succeeded, done.items_failed) == (
                ITEMS - ITEMS // BAD_EVERY,
                ITEMS // BAD_EVERY,
            )
            items = view.items("Tags")
            assert len(items) == ITEMS
            for k, item in enumerate(items):
                assert item["tags"] == ("x" if k % BAD_EVERY == 0 else ["s"]), item
            page = creator.list_tasks()
            assert [t.id for t in page.tasks] == [task.id]
            assert page.total == 1
        finally:
            view.close()
        a.stop()
        b.stop()
    finally:
        store.close()
        storage.close()


def test_a_version_one_task_store_gets_the_slice_columns_in_place(pg_database: str) -> None:
    """A database whose task store is at version 1 (no slice columns) is upgraded when a
    store opens it: its tasks and leases are kept, none sliced, and slices work after."""
    first = PostgresTaskStore(pg_database)
    task = Task(
        id="old",
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0,
    )
    first.insert(task)
    lease = first.claim("old", "me", T0, timedelta(seconds=30))
    with first.database.transaction() as conn:  # back to version 1, as that release left it
        conn.execute("DROP INDEX taskengine_tasks_top")
        for column in ("parent", "slice_until", "slices", "split"):
            conn.execute(f"ALTER TABLE taskengine_tasks DROP COLUMN {column}")
        conn.execute("UPDATE taskengine_schema SET version = 1 WHERE component = 'taskstore'")
    first.close()
    again = PostgresTaskStore(pg_database)
    try:
        assert again.database.schema_version("taskstore") == 2
        assert again.get("old") == task
        assert again.lease_of("old") == lease
        child = attrs.evolve(task, id="old~1", parent="old", checkpoint="a\x00", until="z\x00")
        again.insert(child)
        assert again.get("old~1") == child
        assert again.page(10, 0) == ([task], 1)
    finally:
        again.close()


def test_a_sliced_set_based_delete_deletes_what_the_unsliced_one_does(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set-based ``DELETE`` with a slice's ``until`` bound (statistics present), over
    ids with NUL, U+0001 and non-ASCII characters: the same items go, the same counts."""
    bounds: list[str | None] = []
    real = postgres.delete_rows

    def recorded(*args: Any, **kwargs: Any) -> Any:
        bounds.append(kwargs.get("until"))
        return real(*args, **kwargs)

    monkeypatch.setattr(postgres, "delete_rows", recorded)
    storage = PostgresStorage(pg_database)
    store = PostgresTaskStore(storage)
    try:
        ids = sorted(
            {
                f"{a}{b}{k}"
                for k in range(8)
                for a in ("a", "\x00", "\x01", "é")
                for b in "x\U0001f600"
            }
        )
        for name in ("Plain", "Sliced"):
            storage.create_collection(name)
            storage.insert_items(
                name, "LIVE", [{"_id": item_id, "n": k % 3} for k, item_id in enumerate(ids)]
            )
        with storage.database.transaction() as conn:
            conn.execute("ANALYZE taskengine_items")
        engine = TaskEngine(storage, task_store=store, batch_size=3, set_batch_size=3)
        outcomes = []
        for name, slices in (("Plain", 1), ("Sliced", 4)):
            spec = {
                "type": "DELETE_BY_QUERY",
                "deleteByQueryOptions": {"dataCollectionId": name, "filter": {"n": {"$ne": 1}}},
            }
            task = engine.create_task(spec, slices=slices)
            engine.run_until_idle()
            done = engine.get_task(task.id)
            assert done.status is TaskStatus.COMPLETED
            assert done.slices == slices
            kept = [item["_id"] for item in storage.find(name, "LIVE")]
            outcomes.append((done.items_succeeded, done.items_failed, kept))
            if slices > 1:  # each slice deleted within its own range: all of them did some
                shares = [engine.get_task(f"{task.id}~{i}").items_succeeded for i in range(4)]
                assert all(shares), shares
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0] == len(ids) - len(outcomes[0][2]) > 0
        assert None in bounds  # the unsliced task and the last slice: no bound
        assert any(bound is not None for bound in bounds)  # the set-based path, bounded
    finally:
        store.close()
        storage.close()
