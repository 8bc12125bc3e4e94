"""Crash safety: SIGKILL a worker process at points chosen by progress; every item once.

Items and tasks share one SQLite file, so each batch's item writes and the task's
checkpoint commit in one transaction. The test task type increments a counter per item
(not idempotent, like ``addItems``): after any number of kills and restarts, every
item's counter must be exactly 1 per task and the task's counters exact.

Kill points are chosen by progress, never by wall-clock time, so the test does the same
thing on a fast machine and on a loaded one:

- *held*: the child's executor stops inside its k-th batch (after k - 1 batches of this
  process committed, while the k-th holds the write transaction) and says so; the parent
  kills it there.
- *free-running*: the parent reads the committed checkpoints from the store and kills the
  child as soon as they have grown by k batches, wherever the child then is (often in the
  middle of writing or committing the next batch).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from taskengine.engine import TaskEngine
from taskengine.errors import Violation
from taskengine.storage import Environment, WriteResult
from taskengine.storage.base import Storage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import TaskStatus
from taskengine.taskstore import SQLiteTaskStore
from taskengine.tasktype import BatchChanges, Plan, TaskOptions, TaskType

N_ITEMS = 3000
BATCH = 100
#: Bounds every wait of the test and of its children, so nothing can hang CI.
PATIENCE = 120.0


_SAY = threading.Lock()


def say(word: str) -> None:
    """Tell the parent one word on its own line (threads of the child never interleave)."""
    with _SAY:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()


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
    """``n += 1`` on every item; optionally stops for good inside its ``hold_at``-th batch."""

    def __init__(self, hold_at: int = 0) -> None:
        self.hold_at = hold_at
        self.batches = 0
        self._lock = threading.Lock()

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Every item of the collection, live."""
        storage.collection_info(options.collection)
        return Plan(options.collection, Environment.LIVE, None)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Bump each item; at the held batch, announce it and wait to be killed."""
        with self._lock:
            self.batches += 1
            hold = self.batches == self.hold_at
        if hold:
            say("holding")
            threading.Event().wait(PATIENCE)  # the parent kills us long before
            raise SystemExit(3)
        for item in items:
            item["n"] = item.get("n", 0) + 1
        return BatchChanges(replaces=items)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do."""


def open_engine(path: str, hold_at: int = 0) -> tuple[TaskEngine, SQLiteStorage]:
    """An engine whose items and tasks share the SQLite file at ``path``."""
    storage = SQLiteStorage(path)
    bump = TaskType("BUMP", "bumpOptions", parse_bump, BumpExecutor(hold_at))
    engine = TaskEngine(
        storage,
        task_store=SQLiteTaskStore(storage),
        task_types=[bump],
        batch_size=BATCH,
        retry_delay=0.01,
    )
    return engine, storage


def child_main(path: str, hold_at: int) -> None:
    """Run the engine until every task is finished (the parent may kill us first)."""
    engine, storage = open_engine(path, hold_at)
    with engine:
        say("ready")
        for task in engine.task_store.unfinished():
            engine.wait(task.id, PATIENCE)
    storage.close()
    say("done")


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_engine_crash import child_main
    child_main({path!r}, {hold_at!r})
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


def committed_items(store: SQLiteTaskStore, ids: list[str]) -> int:
    """Items of all the tasks that committed batches have processed so far."""
    total = 0
    for task_id in ids:
        task = store.get(task_id)
        assert task is not None
        total += task.items_succeeded + task.items_failed
    return total


def _spawn(path: str, hold_at: int) -> subprocess.Popen[str]:
    code = CHILD.format(tests=str(Path(__file__).parent), path=path, hold_at=hold_at)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(PATIENCE)


@pytest.mark.slow
def test_sigkill_at_progress_points_processes_every_item_exactly_once(tmp_path: Path) -> None:
    """Killing the worker at points chosen by progress never applies a batch twice or skips one.

    Whatever the machine's speed, every round either kills a child that is inside a batch
    or ends with the child finishing on its own, and every round moves the work forward.
    """
    path = str(tmp_path / "crash.db")
    ids = setup_file(path, tasks=2)
    total = len(ids) * N_ITEMS
    rng = random.Random(20260101)
    reader = SQLiteStorage(path)
    store = SQLiteTaskStore(reader)
    held = free = 0
    try:
        for round_ in range(100):
            before = committed_items(store, ids)
            # The first three rounds are held (at most 12 of the 60 batches commit in them,
            # so each surely kills a child inside a batch); then the modes alternate.
            if round_ < 3 or round_ % 2 == 0:
                # Held: stop inside the k-th batch, so k - 1 batches of this round commit.
                child = _spawn(path, hold_at=rng.randint(2, 5))
                assert child.stdout is not None
                said = ""
                for line in child.stdout:
                    said = line.strip()
                    if said in ("holding", "done"):
                        break
                if said == "holding":
                    at_kill = committed_items(store, ids)
                    _kill(child)
                    held += 1
                    assert before < at_kill < total, "the held batch is in the middle of work"
                else:
                    child.wait(PATIENCE)
            else:
                # Free-running: kill once k more batches have committed, wherever it is.
                child = _spawn(path, hold_at=0)
                target = min(total, before + rng.randint(1, 4) * BATCH)
                deadline = time.monotonic() + PATIENCE
                while child.poll() is None and committed_items(store, ids) < target:
                    assert time.monotonic() < deadline, "no progress within the patience bound"
                    time.sleep(0.002)  # a poll interval, not a guess: progress decides
                if child.poll() is None:
                    _kill(child)
                    free += 1
            assert child.stdout is not None
            child.stdout.close()
            after = committed_items(store, ids)
            assert after > before or after == total, "every round moves the work forward"
            if child.returncode == 0:
                break
        else:
            pytest.fail("the tasks never finished")
    finally:
        reader.close()
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
    # Not a timing assertion: the first three rounds kill inside a batch by construction.
    assert held >= 3, (held, free)


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
