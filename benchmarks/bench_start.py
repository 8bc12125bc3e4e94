"""Fast start: an engine's ``start()`` plus its first ``list_tasks(30)`` on a big store.

Run: ``.venv/bin/python benchmarks/bench_start.py [--tasks N] [--items N] [--rounds N]``
(defaults 100,000 finished tasks, 1,000,000 items, 7 rounds; ``--quick``: 20,000 tasks,
100,000 items, 5 rounds). Prints a markdown table; never passes or fails on time.

One SQLite file holds ``--tasks`` finished tasks (``SQLiteTaskStore`` on the storage's
database) and a publish-plugin collection of ``--items`` items, 0.1% of them with a
``_publishDate`` (what the publish scheduler must find when an engine starts). Each
round runs in a fresh child process (cold caches of the process, warm OS cache):

* **engine**: open ``SQLiteStorage`` + ``SQLiteTaskStore``, ``TaskEngine(...)``,
  ``start()``, ``list_tasks(30)``: the time to the first page;
* **schedule ready**: from ``start()`` until the publish scheduler's first tick has
  returned the next date (on the housekeeping thread, beside the first page);

each with the storage as it is (**store index**: the scheduler asks the storage's
``ScheduleIndex`` at each tick and reads nothing at start) and with the capability taken
away by a subclass (**timeline**, as before: the scheduler rebuilds its in-memory
timeline from a scan of the collection at start), in interleaved rounds;
Children import taskengine from byte code (compiled by a first, unmeasured round), as
from an installed package.

* **plain SQL** (the baseline, same child): open a ``sqlite3`` connection to the file and
  run the one query that gives the newest 30 task rows and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs

from taskengine import SQLiteStorage, SQLiteTaskStore, TaskEngine
from taskengine.task import TaskStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODES = {"index": "store index", "timeline": "timeline (before)"}


def build(path: Path, tasks: int, items: int) -> None:
    """The template file: finished tasks and a publish-plugin collection."""
    with SQLiteStorage(path) as storage:
        storage.create_collection("Posts", publish_plugin=True)
        batch = []
        for n in range(items):
            item: dict[str, object] = {"_id": f"{n:07d}", "title": f"post {n}", "n": n}
            if n % 1000 == 0:
                item["_publishDate"] = {"$date": "2030-01-01T00:00:00.000Z"}
            batch.append(item)
            if len(batch) == 5000:
                storage.insert_items("Posts", "LIVE", batch)
                batch = []
        if batch:
            storage.insert_items("Posts", "LIVE", batch)
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, retention=timedelta(days=3650))
        model = engine.create_task(
            {
                "type": "DELETE_BY_QUERY",
                "deleteByQueryOptions": {"dataCollectionId": "Posts", "filter": {"n": -1}},
            }
        )
        store.delete([model.id])
        with storage.database.transaction():
            for n in range(tasks):
                at = T0 + timedelta(seconds=n)
                task = attrs.evolve(model, id=f"bench-{n:07d}", created_at=at)
                done = task.started(at, 0).finished(TaskStatus.COMPLETED, at, timedelta(days=3650))
                store.insert(done)
        store.close()


class TimelineSQLite(SQLiteStorage):
    """SQLiteStorage without the ScheduleIndex capability: the scheduler's timeline."""

    due_items = None  # type: ignore[assignment]
    next_due_date = None  # type: ignore[assignment]


def child(path: str, mode: str) -> None:
    """One round, cold: print the timings as JSON."""
    began = time.perf_counter()
    storage = SQLiteStorage(path) if mode == "index" else TimelineSQLite(path)
    store = SQLiteTaskStore(storage)
    engine = TaskEngine(storage, task_store=store, tick_interval=3600, poll_interval=3600)
    engine.start()
    page = engine.list_tasks(limit=30)
    first_page = time.perf_counter() - began
    assert len(page.tasks) == 30, page
    slot = next(s for s in engine._services._slots if "Publish" in s.role)
    deadline = time.monotonic() + 120
    while slot.due is None and time.monotonic() < deadline:
        time.sleep(0.001)
    ready = time.perf_counter() - began
    assert slot.due is not None
    engine.stop()
    store.close()
    storage.close()
    began = time.perf_counter()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT * FROM taskengine_tasks ORDER BY seq DESC LIMIT 30").fetchall()
    total = conn.execute("SELECT count(*) FROM taskengine_tasks").fetchone()
    plain = time.perf_counter() - began
    conn.close()
    assert len(rows) == 30
    assert total[0] == page.total
    print(
        json.dumps(
            {"engine": first_page, "ready": ready, "plain": plain, "next": slot.due.isoformat()}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="index", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode)
        return
    if args.quick:
        args.tasks, args.items, args.rounds = 20_000, 100_000, 5
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "start.db"
        began = time.perf_counter()
        build(path, args.tasks, args.items)
        took = time.perf_counter() - began
        print(f"built {args.tasks:,} tasks and {args.items:,} items in {took:.1f} s")
        # Children import from byte code, as an installed package does: compiled into a
        # folder of this run by a first, unmeasured round.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
        runs: dict[str, list[dict[str, object]]] = {"index": [], "timeline": []}
        for round_no in range(args.rounds + 1):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), "--mode", mode],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if round_no:  # the first round compiles the byte code
                    runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print()
    print(
        f"| {args.tasks:,} finished tasks, {args.items:,} items | scheduler | median ms"
        " | ÷ plain SQL | ÷ timeline |"
    )
    print("|---|---|---:|---:|---:|")
    med = {
        mode: {
            key: statistics.median(float(run[key]) for run in runs[mode])  # type: ignore[arg-type]
            for key in ("engine", "ready", "plain")
        }
        for mode in MODES
    }
    for key, name in (("engine", "start() + first list_tasks(30)"), ("ready", "schedule ready")):
        for mode in MODES:
            got, base = med[mode][key], med["timeline"][key]
            print(
                f"| {name} | {MODES[mode]} | {got * 1000:.1f} | {got / med[mode]['plain']:.0f}×"
                f" | {got / base:.2f} |"
            )
    plain = statistics.median(med[mode]["plain"] for mode in MODES)
    print(f"| plain SQL (page + total) | - | {plain * 1000:.2f} | 1× | - |")
    print(
        f"\nnext scheduled date found: {runs['index'][0]['next']} (timeline:"
        f" {runs['timeline'][0]['next']})"
    )


if __name__ == "__main__":
    main()
