"""Crash safety: SIGKILL a worker process at random moments; every item is processed once.

Items and tasks share one SQLite file, so each batch's item writes and the task's
checkpoint commit in one transaction. The test task type increments a counter per item
(not idempotent, like ``addItems``): after any number of kills and restarts, every
item's counter must be exactly 1 and the task's counters exact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from taskengine.engine import TaskEngine
from taskengine.errors import Violation
from taskengine.registry import BatchChanges, Plan, TaskOptions, TaskType
from taskengine.storage import Environment, WriteResult
from taskengine.storage.base import Storage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import TaskStatus
from taskengine.taskstore import SQLiteTaskStore

N_ITEMS = 3000
BATCH = 37


@attrs.frozen
class BumpOptions:
    """Options: the collection whose items get ``n += 1``."""

    collection: str

    def to_json(self) -> dict[str, Any]:
        """camelCase JSON."""
        return {"dataCollectionId": self.collection}


def parse_bump(value: Any, path: str) -> tuple[TaskOptions | None, list[Violation]]:
    """Parse ``{"dataCollectionId": str}``."""
    if not isinstance(value, Mapping) or not isinstance(value.get("dataCollectionId"), str):
        return None, [Violation(f"{path}.dataCollectionId", "required")]
    return BumpOptions(value["dataCollectionId"]), []


class BumpExecutor:
    """``n += 1`` on every item."""

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Every item of the collection, live."""
        storage.collection_info(options.collection)
        return Plan(options.collection, Environment.LIVE, None)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Bump each item."""
        for item in items:
            item["n"] = item.get("n", 0) + 1
        return BatchChanges(replaces=items)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do."""


BUMP = TaskType("BUMP", "bumpOptions", parse_bump, BumpExecutor())


def open_engine(path: str) -> tuple[TaskEngine, SQLiteStorage]:
    """An engine whose items and tasks share the SQLite file at ``path``."""
    storage = SQLiteStorage(path)
    engine = TaskEngine(
        storage,
        task_store=SQLiteTaskStore(storage),
        task_types=[BUMP],
        batch_size=BATCH,
        retry_delay=0.01,
    )
    return engine, storage


def child_main(path: str) -> None:
    """Run the engine until every task is finished (the parent may kill us first)."""
    engine, storage = open_engine(path)
    with engine:
        print("ready", flush=True)
        for task in engine.task_store.unfinished():
            engine.wait(task.id, 120)
    storage.close()
    print("done", flush=True)


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_engine_crash import child_main
    child_main({path!r})
    """
)


def setup_file(path: str, tasks: int) -> list[str]:
    """Create the collection and ``tasks`` NEW tasks; return their ids."""
    engine, storage = open_engine(path)
    storage.create_collection("things")
    storage.insert_items("things", "LIVE", [{"_id": f"i{k:06d}"} for k in range(N_ITEMS)])
    ids = [
        engine.create_task({"type": "BUMP", "bumpOptions": {"dataCollectionId": "things"}}).id
        for _ in range(tasks)
    ]
    storage.close()
    return ids


@pytest.mark.slow
def test_sigkill_at_random_points_processes_every_item_exactly_once(tmp_path: Path) -> None:
    """Killing the worker process at random moments never applies a batch twice or skips one."""
    path = str(tmp_path / "crash.db")
    ids = setup_file(path, tasks=2)
    rng = random.Random(20260101)
    code = CHILD.format(tests=str(Path(__file__).parent), path=path)
    kills = 0
    for _ in range(60):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=rng.uniform(0.0, 0.25))
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            kills += 1
        finally:
            child.stdout.close()
        if child.returncode == 0:
            break
    else:
        pytest.fail("the tasks never finished")
    assert kills >= 3, "the test should interrupt the work several times"
    engine, storage = open_engine(path)
    try:
        for task_id in ids:
            task = engine.get_task(task_id)
            assert task.status is TaskStatus.COMPLETED
            assert (task.items_succeeded, task.items_failed) == (N_ITEMS, 0)
            assert task.estimated_item_count == N_ITEMS
        counts = [item.get("n") for item in storage.find("things", "LIVE")]
        assert counts == [len(ids)] * N_ITEMS
    finally:
        storage.close()


def test_restart_resumes_running_and_starts_new_tasks(tmp_path: Path) -> None:
    """A stopped engine's RUNNING task resumes from its checkpoint on a new engine."""
    path = str(tmp_path / "resume.db")
    ids = setup_file(path, tasks=2)
    engine, storage = open_engine(path)
    try:
        # Run one batch by hand: start the first task and commit one batch, then "crash".
        first = engine.task_store.get(ids[0])
        assert first is not None
        with storage.atomic():
            started = first.started(engine.clock.now(), N_ITEMS)
            page = storage.scan("things", "LIVE", limit=BATCH)
            for item in page.items:
                item["n"] = 1
            storage.replace_items("things", "LIVE", page.items)
            engine.task_store.save(started.with_batch(BATCH, 0, [], page.cursor))
    finally:
        storage.close()
    engine, storage = open_engine(path)
    try:
        assert engine.run_until_idle() == 2
        tasks = [engine.get_task(task_id) for task_id in ids]
        assert [t.items_succeeded for t in tasks] == [N_ITEMS, N_ITEMS]
        assert all(t.status is TaskStatus.COMPLETED for t in tasks)
        assert [item.get("n") for item in storage.find("things", "LIVE")] == [2] * N_ITEMS
    finally:
        storage.close()


def test_rolled_back_batch_leaves_checkpoint_and_items_together(tmp_path: Path) -> None:
    """An error inside the shared transaction rolls back items and the checkpoint alike."""
    path = str(tmp_path / "atomic.db")
    ids = setup_file(path, tasks=1)
    engine, storage = open_engine(path)
    try:
        task = engine.task_store.get(ids[0])
        assert task is not None
        store = engine.task_store

        def crash_mid_batch() -> None:
            with storage.atomic():
                storage.replace_items("things", "LIVE", [{"_id": "i000000", "n": 5}])
                store.save(task.started(engine.clock.now(), 1))
                raise RuntimeError("crash mid-batch")

        with pytest.raises(RuntimeError, match="crash"):
            crash_mid_batch()
        assert storage.get_item("things", "LIVE", "i000000") == {"_id": "i000000"}
        again = engine.task_store.get(ids[0])
        assert again is not None
        assert again.status is TaskStatus.NEW
        assert engine.task_store.shares_transactions_with(storage)
    finally:
        storage.close()
