"""Benchmark: one sliced task, or two tasks, on 1 vs 2 engine processes.

Run: ``.venv/bin/python benchmarks/bench_slices.py [--items N] [--rounds R] [--quick]
[--dsn DSN] [--no-sqlite]``. Without a DSN it starts a throwaway PostgreSQL server as
``bench_postgres.py`` does. ``--quick``: 20k items, one round. It never passes or fails
on time; it fails when a task did not complete or an item was not changed as expected.

Scenarios (each on a fresh copy of one template database, interleaved per round; the
ratio is items/s against the baseline of the same round):

* ``one task``: DELETE_BY_QUERY (half the items) and COPY_FIELD_DATA over N items: one
  engine process running the task unsliced (baseline) against two processes running it
  with ``slices=2``;
* ``two tasks``: two COPY_FIELD_DATA tasks on two collections of N/2 items: one process
  (baseline) against two;
* SQLite (one file, one writer at a time): COPY_FIELD_DATA, one process unsliced against
  two with ``slices=2``; about 1x is what one writer allows.

Each engine process is a started ``TaskEngine`` (one worker thread, batches of 500,
polling every 0.05 s and, as by default, listening to a store that notifies: on
PostgreSQL a slice inserted by one engine is claimed by the other at once;
``--no-listen`` polls only) that waits for every task of the run to finish; timed from
"go" until the last process exits.
Beside items/s it reports items per CPU second (the engines' CPU, plus the server's on
PostgreSQL, read from ``/proc``) and the cores busy: on a machine shared with other work
the wall-clock speed-up is bounded by the CPU the run was given, which these show.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from taskengine import (
    MemoryStorage,
    PostgresStorage,
    PostgresTaskStore,
    SQLiteStorage,
    SQLiteTaskStore,
    TaskEngine,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_pg_scaleout import copy_spec, server_cpu_total, server_pid, start_engines
from bench_postgres import admin, copy_items, fresh_copy, make_doc, make_template, server

BATCH = 500
WAIT = 3600.0
_LISTEN = "BENCH_SLICES_LISTEN"  # "0": the engine processes poll only (--no-listen)


def delete_spec(collection: str) -> dict[str, Any]:
    """DELETE_BY_QUERY of the Easter half."""
    return {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {
            "dataCollectionId": collection,
            "filter": {"holidays": {"$hasSome": ["Easter"]}},
        },
    }


def open_pair(target: str) -> tuple[Any, Any]:
    """Storage and task store on ``target`` (a DSN, or ``sqlite:<path>``)."""
    if target.startswith("sqlite:"):
        storage: Any = SQLiteStorage(target.removeprefix("sqlite:"))
        return storage, SQLiteTaskStore(storage)
    storage = PostgresStorage(target)
    return storage, PostgresTaskStore(storage)


def worker(target: str) -> None:
    """An engine process: connect, say ``ready``; on a line of task ids, start and wait
    for them all to finish, then stop."""
    storage, store = open_pair(target)
    engine = TaskEngine(
        storage,
        task_store=store,
        batch_size=BATCH,
        poll_interval=0.05,
        listen=os.environ.get(_LISTEN, "1") != "0",
    )
    print("ready", flush=True)
    ids = sys.stdin.readline().split()
    cpu = time.process_time()
    engine.start()
    for task_id in ids:
        engine.wait(task_id, timeout=WAIT)
    engine.stop()
    print(f"done {time.process_time() - cpu}", flush=True)
    store.close()
    storage.close()


def measure(
    target: str, specs: list[dict[str, Any]], slices: int, processes: int
) -> tuple[float, float]:
    """Create the tasks, run ``processes`` engines until they end; the wall seconds and
    the CPU seconds used meanwhile (the engines', plus the server's on PostgreSQL)."""
    storage, store = open_pair(target)
    creator = TaskEngine(storage, task_store=store)  # never started
    ids = [creator.create_task(spec, slices=slices).id for spec in specs]
    children = start_engines(__file__, target, processes)
    postmaster = None if target.startswith("sqlite:") else server_pid(target)
    server_before = 0.0 if postmaster is None else server_cpu_total(postmaster)
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(" ".join(ids) + "\n")
        child.stdin.flush()
    cpu = 0.0
    for child in children:
        out, _ = child.communicate(timeout=WAIT)
        assert child.returncode == 0, out
        cpu += float(out.split()[-1])
    wall = time.perf_counter() - start
    if postmaster is not None:
        time.sleep(0.2)  # the postmaster reaps the backends of the exited engines
        cpu += server_cpu_total(postmaster) - server_before
    for task_id in ids:
        task = creator.get_task(task_id)
        assert task.status.value == "COMPLETED", task
        assert task.is_sliced == (slices > 1), task
    store.close()
    storage.close()
    return wall, cpu


Row = tuple[str, float, float, float, float, float]
"""(scenario, 1-process items/s, 2-process items/s, ratio, 1-process and 2-process items
per CPU second)."""


def pg_scenarios(dsn: str, items: int, rounds: int) -> list[Row]:
    """A :data:`Row` for each PostgreSQL scenario."""
    half = items // 2

    def fill(storage: PostgresStorage, created: str) -> None:
        storage.create_collection("One")
        copy_items(created, "One", (make_doc(i) for i in range(items)))
        for name in ("A", "B"):
            storage.create_collection(name)
            copy_items(created, name, (make_doc(i) for i in range(half)))

    template = make_template(dsn, "bench_slices_tmpl", fill)
    name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
    scenarios: list[tuple[str, list[dict[str, Any]], int, int]] = [
        ("DELETE_BY_QUERY, one task", [delete_spec("One")], items, items // 2),
        ("COPY_FIELD_DATA, one task", [copy_spec("One")], items, items),
        ("COPY_FIELD_DATA, two tasks", [copy_spec("A"), copy_spec("B")], 0, 2 * half),
    ]
    rows = []
    try:
        for label, specs, sliced, work in scenarios:
            base: list[float] = []
            fast: list[float] = []
            per_cpu: dict[int, list[float]] = {1: [], 2: []}
            for round_ in range(rounds):
                order = [(1, 1), (2, 2)] if round_ % 2 == 0 else [(2, 2), (1, 1)]
                for processes, slices in order:
                    with fresh_copy(dsn, name) as db:
                        wall, cpu = measure(db, specs, slices if sliced else 1, processes)
                    (base if processes == 1 else fast).append(work / wall)
                    per_cpu[processes].append(work / cpu)
                    print(
                        f"  {label}: {processes} process(es): {work / wall:,.0f} items/s,"
                        f" {wall:.1f} s, cores busy (engines + server) {cpu / wall:.2f},"
                        f" load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            b, f = statistics.median(base), statistics.median(fast)
            c1, c2 = statistics.median(per_cpu[1]), statistics.median(per_cpu[2])
            rows.append((f"PostgreSQL {label}", b, f, f / b, c1, c2))
    finally:
        with closing(admin(dsn)) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rows


def sqlite_scenario(items: int, rounds: int) -> Row:
    """SQLite, COPY_FIELD_DATA on one task: 1 process unsliced vs 2 with slices=2."""
    base: list[float] = []
    fast: list[float] = []
    per_cpu: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            order = [1, 2] if round_ % 2 == 0 else [2, 1]
            for processes in order:
                path = Path(folder) / f"r{round_}p{processes}.db"
                with SQLiteStorage(path) as storage:
                    storage.create_collection("One")
                    for start in range(0, items, 10_000):
                        stop = min(items, start + 10_000)
                        storage.insert_items(
                            "One", "LIVE", [make_doc(i) for i in range(start, stop)]
                        )
                wall, cpu = measure(f"sqlite:{path}", [copy_spec("One")], processes, processes)
                (base if processes == 1 else fast).append(items / wall)
                per_cpu[processes].append(items / cpu)
                print(
                    f"  SQLite COPY_FIELD_DATA: {processes} process(es): {items / wall:,.0f}"
                    f" items/s, {wall:.1f} s, cores busy {cpu / wall:.2f}",
                    flush=True,
                )
    b, f = statistics.median(base), statistics.median(fast)
    c1, c2 = statistics.median(per_cpu[1]), statistics.median(per_cpu[2])
    return ("SQLite COPY_FIELD_DATA, one task", b, f, f / b, c1, c2)


def split_costs(dsn: str | None, items: int) -> None:
    """The cost of ``split_points`` (2 and 64 parts) on ``items`` items, per adapter,
    against a ``count`` of the same item set (the cheapest full look at it)."""
    print(f"\nsplit_points on {items:,} items (best of 3), beside a count of the set")
    print("| adapter | count ms | 2 parts ms | 64 parts ms |")
    print("|---|---:|---:|---:|")

    def row(name: str, storage: Any) -> None:
        def best(action: Any) -> float:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                action()
                times.append(time.perf_counter() - start)
            return min(times) * 1000

        count = best(lambda: storage.count("One", "LIVE"))
        two = best(lambda: storage.split_points("One", "LIVE", 2))
        many = best(lambda: storage.split_points("One", "LIVE", 64))
        print(f"| {name} | {count:.1f} | {two:.1f} | {many:.1f} |")

    memory = MemoryStorage()
    memory.create_collection("One")
    for start in range(0, items, 50_000):
        memory.insert_items(
            "One", "LIVE", [make_doc(i) for i in range(start, min(items, start + 50_000))]
        )
    row("MemoryStorage", memory)
    del memory
    with (
        tempfile.TemporaryDirectory() as folder,
        SQLiteStorage(Path(folder) / "split.db") as sqlite,
    ):
        sqlite.create_collection("One")
        for start in range(0, items, 50_000):
            stop = min(items, start + 50_000)
            sqlite.insert_items("One", "LIVE", [make_doc(i) for i in range(start, stop)])
        row("SQLiteStorage", sqlite)
    with server(dsn) as started:

        def fill(storage: PostgresStorage, created: str) -> None:
            storage.create_collection("One")
            copy_items(created, "One", (make_doc(i) for i in range(items)))

        template = make_template(started, "bench_split_tmpl", fill)
        try:
            with PostgresStorage(template) as pg:
                row("PostgresStorage", pg)
        finally:
            name = str(psycopg.conninfo.conninfo_to_dict(template)["dbname"])
            with closing(admin(started)) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str]) -> None:
    """Parse arguments and run the scenarios (or, with ``--worker``, be an engine)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20k items, one round")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-listen", action="store_true", help="engines poll only")
    parser.add_argument(
        "--split", action="store_true", help="only time split_points (1M items by default)"
    )
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument("--worker", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.split:
        split_costs(args.dsn, 1_000_000 if args.items == 200_000 else args.items)
        return
    items = 20_000 if args.quick else args.items
    rounds = 1 if args.quick else args.rounds
    os.environ[_LISTEN] = "0" if args.no_listen else "1"  # the engine processes inherit it
    listening = "polling only" if args.no_listen else "listening"
    print(f"{items:,} items, {rounds} round(s), {os.cpu_count()} cores, engines {listening}")
    with server(args.dsn) as dsn:
        rows = pg_scenarios(dsn, items, rounds)
    if not args.no_sqlite:
        rows.append(sqlite_scenario(items, rounds))
    print(
        "\n| scenario | 1 process items/s | 2 processes items/s | ratio"
        " | items per CPU s, 1 process | items per CPU s, 2 processes |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, base, fast, ratio, cpu1, cpu2 in rows:
        print(f"| {label} | {base:,.0f} | {fast:,.0f} | {ratio:.2f}x | {cpu1:,.0f} | {cpu2:,.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
