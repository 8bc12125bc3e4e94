"""Set-based batches on SQLite: the engine beside one hand-written SQL statement.

Run: ``.venv/bin/python benchmarks/bench_setbased.py [--quick] [--items N] [--rounds N]
[--set-batch-size N ...] [--ops OP ...]``. Never passes or fails on time.

The four operations of ``bench_peers.py`` (same seeded items, same task specs, same
hand-written SQL), each on a fresh copy of one SQLite file:

* ``set-based``: ``SQLiteStorage`` with a ``SQLiteTaskStore`` on the same file; batches
  go through ``SQLiteStorage.change_matching`` (one statement per batch);
* ``scan path``: the same, with the capability taken away (a subclass setting
  ``change_matching = None``): the engine reads each batch into Python and writes it
  back, as before set-based batches;
* ``plain SQL``: one ``DELETE``/``UPDATE`` statement, committed (the baseline).

The engine's services take their first tick before the clock starts (as a long-running
engine would have done). Rounds are interleaved; each figure is the median over the rounds
of the process's CPU seconds (the machine may be shared; SQLite runs in this process, so
CPU time counts the database's work too) and, beside it, of wall seconds. Every end state
must equal plain SQL's (``bench_peers.digest``), or the benchmark stops.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_peers import COLLECTION, OPS, PLAIN_SQL, SPECS, digest, fill, make_items, scan_all

from taskengine import SQLiteStorage, SQLiteTaskStore, TaskEngine


class ScanPath(SQLiteStorage):
    """``SQLiteStorage`` without set-based batches: the engine takes the scan path."""

    change_matching = None  # type: ignore[assignment]


def fresh(template: Path, folder: Path) -> Path:
    """A copy of the template database (its WAL checkpointed into it beforehand)."""
    path = folder / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, path)
    return path


def run_engine(
    path: Path, op: str, kind: type[SQLiteStorage], settings: dict[str, Any]
) -> tuple[float, float, Any]:
    """One task to its end: (CPU s, wall s, end state)."""
    with kind(path) as storage:
        engine = TaskEngine(storage, task_store=SQLiteTaskStore(storage.database), **settings)
        engine.run_until_idle()  # the services' first tick, untimed
        task = engine.create_task(SPECS[op])
        cpu, wall = time.process_time(), time.perf_counter()
        engine.run_until_idle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        done = engine.get_task(task.id)
        assert done.status.value == "COMPLETED", done.to_json()
        assert not done.items_failed, done.to_json()
        return cpu, wall, digest(op, scan_all(storage))


def run_plain(path: Path, op: str) -> tuple[float, float, Any]:
    """The hand-written statement, committed: (CPU s, wall s, end state)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        coll = conn.execute(
            "SELECT id FROM taskengine_collections WHERE name = ?", (COLLECTION,)
        ).fetchone()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(PLAIN_SQL[op], (coll,))
        conn.execute("COMMIT")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        conn.close()
    with SQLiteStorage(path) as storage:
        return cpu, wall, digest(op, scan_all(storage))


def main() -> None:
    """Measure every operation with every contender, interleaved; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="100,000 items, one round")
    parser.add_argument(
        "--set-batch-size",
        type=int,
        nargs="*",
        default=[],
        help="also run the set-based engine with these set_batch_size values",
    )
    parser.add_argument("--ops", nargs="*", choices=OPS, help="only these operations")
    args = parser.parse_args()
    ops = args.ops or OPS
    n = 100_000 if args.quick else args.items
    rounds = args.rounds or (1 if args.quick else 3)
    contenders: dict[str, Any] = {
        "set-based": (SQLiteStorage, {}),
        "scan path": (ScanPath, {}),
        **{
            f"set-based, set_batch_size={s}": (SQLiteStorage, {"set_batch_size": s})
            for s in args.set_batch_size
        },
    }
    names = [*contenders, "plain SQL"]
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = folder / "template.db"
        with SQLiteStorage(template) as storage:
            fill(storage, make_items(n))
        sqlite3.connect(template).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        for round_ in range(rounds):
            for op in ops:
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                states = {}
                for name in order:
                    path = fresh(template, folder)
                    if name == "plain SQL":
                        c, w, state = run_plain(path, op)
                    else:
                        kind, settings = contenders[name]
                        c, w, state = run_engine(path, op, kind, settings)
                    states[name] = state
                    cpu.setdefault((name, op), []).append(c)
                    wall.setdefault((name, op), []).append(w)
                if len(set(states.values())) != 1:
                    sys.exit(f"end states differ for {op}: {states}")
                print(f"round {round_ + 1}/{rounds} {op} done", file=sys.stderr)
    took = time.perf_counter() - began
    lines = [
        f"| {n:,} items: CPU s (wall s), ÷ plain SQL | " + " | ".join(ops) + " |",
        "|---|" + "---:|" * len(ops),
    ]
    for name in names:
        cells = []
        for op in ops:
            c = statistics.median(cpu[(name, op)])
            w = statistics.median(wall[(name, op)])
            base = statistics.median(cpu[("plain SQL", op)])
            cells.append(f"{c:.2f} ({w:.2f}), {c / base:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print(
        f"\n{n:,} items, median of {rounds} interleaved rounds; SQLite {sqlite3.sqlite_version};"
        f" whole run {took:.0f} s. Every end state equals plain SQL's."
    )


if __name__ == "__main__":
    main()
