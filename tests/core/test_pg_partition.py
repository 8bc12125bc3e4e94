"""A partitioned owner on PostgreSQL: another engine takes its task over, its commits are refused.

Two variants of one story, each with engine processes (tests/pg_engine_child.py) on one
database and one EDIT_FIELD_DATA task appending a mark (an item changed twice, or a
batch lost, shows):

* **netns**: the owner runs in a network namespace of its own and reaches a throwaway
  server (started for the test, listening on 127.0.0.1 and on the host end of a veth
  pair) over that link. Once the owner is well into the task (by progress), the link is
  cut: the owner's packets, and the server's to it, are dropped. A second engine on
  loopback takes the task over when the lease runs out and finishes it; then the link
  is restored. Skipped, with the reason, where namespaces cannot be made (not root, no
  ``ip``).
* **sigstop**: the loopback variant that always runs: the owner, held at the door of a
  batch, is frozen with SIGSTOP (a partition of one process), the second engine takes
  over and finishes, and the owner, resumed, applies its batch, which its fence refuses.

Either way the task completes once, with exact counters, and nothing the partitioned owner
does afterwards changes the task or an item. Waits are bounded and decided by progress
(the task and lease in the database, the sessions in ``pg_stat_activity``, the engines'
own reports), never by sleeps.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_processes import PgEngines, PgReader
from pg_server import PostgresServer
from test_ownership_processes import PATIENCE, edit_task, process_state, wait_for

import netns
from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine, TaskStatus
from taskengine.task import Task

ITEMS = 3_000
BATCH = 100
LEASE = 2.0


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[PgEngines]:
    """A starter of engine processes; every one still running is killed afterwards."""
    started = PgEngines(tmp_path)
    try:
        yield started
    finally:
        # A stopped process cannot die of SIGKILL until it is continued? It can; but its
        # pipes are read to the end, which needs it gone.
        for engine in started.started:
            if engine.process.poll() is None:
                os.kill(engine.pid, signal.SIGCONT)
        started.kill_all()


def build(dsn: str) -> str:
    """The collection ``Items`` and one NEW edit task; its id."""
    storage = PostgresStorage(dsn)
    store = PostgresTaskStore(storage)
    try:
        storage.create_collection("Items")
        storage.insert_items("Items", "LIVE", [{"_id": f"i{k:05d}", "tags": []} for k in range(ITEMS)])
        creator = TaskEngine(storage, task_store=store)  # never started
        return creator.create_task(edit_task("Items", "z")).id
    finally:
        store.close()
        storage.close()


def check_done_once(view: PgReader, task: Task) -> None:
    """The task completed once, with exact counters, every item marked once."""
    assert task.status is TaskStatus.COMPLETED, task.failures
    assert (task.items_succeeded, task.items_failed) == (ITEMS, 0)
    tags = [item["tags"] for item in view.items("Items")]
    wrong = [k for k, got in enumerate(tags) if got != ["z"]]
    assert wrong == [], f"{len(wrong)} items not marked exactly once, e.g. {tags[wrong[0]]}"


# -- the loopback variant: SIGSTOP -------------------------------------------------------


def freeze(engine: Any, view: PgReader) -> None:
    """SIGSTOP the engine at a moment none of its sessions is inside a transaction (one
    frozen holding row locks would keep every other engine waiting: see
    docs/postgres.md); such a stop is undone and tried again."""
    for _ in range(100):
        os.kill(engine.pid, signal.SIGSTOP)
        wait_for("the engine to stop", lambda: process_state(engine.pid) in "Tt", 10.0)
        if view.busy_sessions(engine.name) == 0:
            return
        os.kill(engine.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("the engine was always inside a transaction when it was stopped")


def test_frozen_owner_is_fenced_out_after_another_engine_takes_its_task_over(
    pg_database: str, engines: PgEngines
) -> None:
    """A SIGSTOPped owner loses its task when its lease runs out; the new owner finishes
    it from the old owner's checkpoint; resumed, the old owner applies one batch, its
    fence refuses it, and it lets the task go: nothing of it is written."""
    task_id = build(pg_database)
    view = PgReader(pg_database)
    config = {"dsn": pg_database, "lease": LEASE, "poll": 0.1, "batch": BATCH, "report": True}
    try:
        first = engines.start("A", pause_at=3, **config)
        first.expect("paused 3")
        assert view.task(task_id).items_succeeded == 3 * BATCH
        lease_a = view.lease(task_id)
        assert lease_a is not None
        assert lease_a.owner == first.owner
        freeze(first, view)

        second = engines.start("B", pause_at=1, **config)
        second.expect("paused 1")  # B claimed the task once A's lease ran out; one batch ran
        lease_b = view.lease(task_id)
        assert lease_b is not None
        assert lease_b.owner == second.owner
        assert lease_b.token > lease_a.token
        assert view.task(task_id).items_succeeded == 4 * BATCH  # from A's checkpoint on
        second.send("go")
        finished = wait_for(
            "B to complete the task",
            lambda: found if (found := view.task(task_id)).is_finished else None,
        )
        items = view.items("Items")

        os.kill(first.pid, signal.SIGCONT)
        first.send("go")  # A's worker runs its fourth batch, which its fence refuses
        wait_for("A to let the task go", lambda: first.owned() == [])
        first.stop()
        second.stop()

        assert "lease lost" in first.errors(), first.errors()
        said = first.lines[first.lines.index("paused 3") + 1 :]
        batches = [line for line in said if line.startswith(("apply", "committed"))]
        assert batches == [f"apply {BATCH}"]  # one batch tried, none committed
        assert view.task(task_id) == finished  # A did not touch the task ...
        assert view.items("Items") == items  # ... nor an item
        check_done_once(view, finished)
    finally:
        view.close()
