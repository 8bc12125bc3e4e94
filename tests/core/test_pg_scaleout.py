"""The scale-out test: four engine processes on one PostgreSQL database, owners SIGKILLed.

Four engine processes (tests/pg_engine_child.py, as four machines would run them) share
one database for items and tasks; seven tasks of all four types run on four collections,
two of them on the same items at once. The parent never runs a task: it reads committed
progress and leases, SIGKILLs the owner of a RUNNING task once the task has passed a
random fraction of its items, and starts a replacement process after each kill. At the
end every task is COMPLETED with exact counters, no task is stranded or leased, and every
item was changed exactly once by every task that should change it: the edits append a
mark (a second application shows as a repeated mark, a lost update as a missing one),
the copy, the publish and the delete are checked item by item.

The randomness is seeded; the seed is printed (and shown by pytest when the test fails);
``SCALEOUT_SEED=<n>`` runs a given one. Every wait is bounded by ``PATIENCE``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_processes import PgEngines, PgReader
from test_ownership_processes import PATIENCE, copy_task, edit_task, pid_of, utcnow, wait_for

from taskengine import PostgresStorage, PostgresTaskStore, Task, TaskEngine, TaskStatus

ITEMS = 1_500  # per collection
BATCH = 25
ENGINES = 4
KILLS = 5
LEASE = 2.0
BAD_EVERY = 20  # every 20th item of Tags holds a string in ``tags``: an item failure


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[PgEngines]:
    """A starter of engine processes; every one still running is killed afterwards."""
    started = PgEngines(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def build(dsn: str) -> dict[str, Task]:
    """Four collections of ``ITEMS`` items and seven NEW tasks, by name."""
    storage = PostgresStorage(dsn)
    store = PostgresTaskStore(storage)
    try:
        storage.create_collection("Tags")
        storage.insert_items(
            "Tags",
            "LIVE",
            [{"_id": f"t{k:05d}", "tags": "x" if k % BAD_EVERY == 0 else []} for k in range(ITEMS)],
        )
        storage.create_collection("Copy")
        storage.insert_items(
            "Copy", "LIVE", [{"_id": f"c{k:05d}", "src": {"k": k}} for k in range(ITEMS)]
        )
        storage.create_collection("Pub", publish_plugin=True)
        storage.insert_items(
            "Pub", "LIVE", [{"_id": f"p{k:05d}", "_publishStatus": "DRAFT"} for k in range(ITEMS)]
        )
        storage.create_collection("Del")
        storage.insert_items(
            "Del", "LIVE", [{"_id": f"d{k:05d}", "doomed": k % 2 == 0} for k in range(ITEMS)]
        )
        publish = {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Pub",
                "operation": "SET_PUBLISHED_STATUS",
            },
        }
        delete = {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {"dataCollectionId": "Del", "filter": {"doomed": True}},
        }
        keep = edit_task("Del", "d")
        keep["editFieldDataOptions"]["filter"] = {"doomed": False}
        specs: dict[str, dict[str, Any]] = {
            "edit-a": edit_task("Tags", "a"),
            "edit-b": edit_task("Tags", "b"),  # the same items as edit-a, at the same time
            "edit-c": edit_task("Copy", "c"),
            "copy": copy_task("Copy"),  # the same items as edit-c
            "edit-p": edit_task("Pub", "p"),
            "publish": publish,  # the same items as edit-p
            "delete": delete,
            "edit-d": keep,  # the items the delete keeps
        }
        creator = TaskEngine(storage, task_store=store)  # never started
        return {name: creator.create_task(spec) for name, spec in specs.items()}
    finally:
        store.close()
        storage.close()


EXPECTED = {  # (succeeded, failed) of each task
    "edit-a": (ITEMS - ITEMS // BAD_EVERY, ITEMS // BAD_EVERY),
    "edit-b": (ITEMS - ITEMS // BAD_EVERY, ITEMS // BAD_EVERY),
    "edit-c": (ITEMS, 0),
    "copy": (ITEMS, 0),
    "edit-p": (ITEMS, 0),
    "publish": (ITEMS, 0),
    "delete": (ITEMS // 2, 0),
    "edit-d": (ITEMS // 2, 0),
}


def check_items(view: PgReader) -> None:
    """Every item changed exactly once by every task that should change it."""
    tags = view.items("Tags")
    assert len(tags) == ITEMS
    for k, item in enumerate(tags):
        expected = "x" if k % BAD_EVERY == 0 else ["a", "b"]
        got = item["tags"] if isinstance(item["tags"], str) else sorted(item["tags"])
        assert got == expected, item
    wrong = [
        item
        for item in view.items("Copy")
        if item["tags"] != ["c"] or item.get("dst") != item["src"]
    ]
    assert wrong == [], f"{len(wrong)} items of Copy wrong, e.g. {wrong[:3]}"
    wrong = [
        item
        for item in view.items("Pub")
        if item["tags"] != ["p"] or item["_publishStatus"] != "PUBLISHED"
    ]
    assert wrong == [], f"{len(wrong)} items of Pub wrong, e.g. {wrong[:3]}"
    kept = view.items("Del")
    assert [item["_id"] for item in kept] == [f"d{k:05d}" for k in range(1, ITEMS, 2)]
    assert all(item["tags"] == ["d"] for item in kept), [i for i in kept if i["tags"] != ["d"]]


@pytest.mark.slow
@pytest.mark.parametrize("listen", [False, True], ids=["polling", "listening"])
def test_four_engines_with_owners_killed_change_every_item_exactly_once(
    pg_database: str, engines: PgEngines, tmp_path: Path, listen: bool
) -> None:
    """Owners SIGKILLed mid-task on four engines: every task completes, exactly once.

    Each kill picks an unfinished task and a point in the first third of its items left;
    once the task has counted that many, the process holding its lease is killed (if it
    still does) and a replacement starts at once. The killed owner's task goes on from its
    last committed checkpoint in another process.
    """
    seed = int(os.environ.get("SCALEOUT_SEED", random.randrange(2**32)))
    print(f"\nscale-out seed {seed} (SCALEOUT_SEED={seed} runs it again), listen={listen}")
    rng = random.Random(seed)
    tasks = build(pg_database)
    ids = {task.id: name for name, task in tasks.items()}
    view = PgReader(pg_database)
    config = {"dsn": pg_database, "lease": LEASE, "poll": 0.2, "batch": BATCH, "listen": listen}
    live = {}
    started = time.monotonic()
    try:
        for n in range(ENGINES):
            engine = engines.start(f"engine-{n}", wait=False, **config)
            live[engine.pid] = engine
        kills: list[tuple[str, int]] = []
        killed_pids: set[int] = set()
        while len(kills) < KILLS:
            assert time.monotonic() - started < PATIENCE, f"seed {seed}: {len(kills)} kills"
            now = {task_id: view.task(task_id) for task_id in ids}
            open_ = sorted(task_id for task_id, task in now.items() if not task.is_finished)
            if not open_:
                break
            victim = rng.choice(open_)
            total = EXPECTED[ids[victim]][0] + EXPECTED[ids[victim]][1]
            done = now[victim].items_succeeded + now[victim].items_failed
            # A point in the first third of what is left: the kills must land before the
            # tasks end (the other tasks move on meanwhile, and a victim waits for its
            # lease to run out before another engine takes it over).
            mark = rng.randint(done + BATCH, max(done + BATCH, done + (total - done) // 3))

            def reached(task_id: str = victim, mark: int = mark) -> Task | None:
                task = view.task(task_id)
                progress = task.items_succeeded + task.items_failed
                return task if progress >= mark or task.is_finished else None

            at = wait_for(f"task {ids[victim]} to pass {mark} items", reached)
            lease = view.lease(victim)
            if at.is_finished or lease is None or not lease.is_live(utcnow()):
                continue
            owner = live.pop(pid_of(lease), None)
            if owner is None:
                continue  # a replacement that has not said ready yet is not ours to pick
            owner.kill()
            killed_pids.add(owner.pid)
            replacement = engines.start(f"engine-{len(engines.started)}", wait=False, **config)
            live[replacement.pid] = replacement
            killed = view.task(victim)  # final now: its owner is gone
            if not killed.is_finished:  # else its last batch came before the kill
                kills.append((ids[victim], killed.items_succeeded))

        def all_done() -> list[Task] | None:
            found = [view.task(task_id) for task_id in ids]
            return found if all(task.is_finished for task in found) else None

        finished = wait_for(f"seed {seed}: every task to finish", all_done)
        took = time.monotonic() - started
        for engine in list(live.values()):
            if engine.process.poll() is None:
                engine.stop()

        assert len(kills) >= 3, f"seed {seed}: only {kills} kills before the tasks ended"
        for task in finished:
            name = ids[task.id]
            assert task.status is TaskStatus.COMPLETED, (seed, name, task.failures)
            assert (task.items_succeeded, task.items_failed) == EXPECTED[name], (seed, name)
            assert all(failure.code == "WDE0075" for failure in task.failures), (seed, name)
            # No live engine holds a finished task (a lease may stay, until it runs out,
            # when its owner was killed between finishing the task and releasing it).
            lease = view.lease(task.id)
            assert lease is None or not lease.is_live(utcnow()) or pid_of(lease) in killed_pids
        assert view.store.unfinished() == [], seed
        check_items(view)
        print(
            f"{len(kills)} owners killed (task, items done): {kills}; "
            f"{len(engines.started)} processes; {took:.1f}s"
        )
    finally:
        view.close()
