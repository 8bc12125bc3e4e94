"""MemoryStorage against TinyDB's in-memory storage, in CPU time.

Run: ``.venv/bin/python benchmarks/bench_memory_tinydb.py [--items N ...] [--rounds N]
[--ops OP ...]``
after ``pip install -e '.[bench]'``. Never passes or fails on time.

The four operations of ``bench_peers.py`` (same seeded items, task specs and TinyDB
calls). Each run starts from a fresh load (not timed) and is timed in CPU seconds of
this process (``time.process_time``: both run in it, so a busy machine does not move
the figures much); rounds are interleaved and each figure is the median. Every
taskengine end state must equal TinyDB's (``bench_peers.digest``), or the benchmark
stops. Prints a markdown table: µs per item of the collection, and taskengine ÷ TinyDB
(below 1: taskengine is faster).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench_peers import OPS, SPECS, Tiny, digest, fill, make_items, scan_all

from taskengine import MemoryStorage, TaskEngine


def run_engine(items: list[dict[str, object]], op: str) -> tuple[float, tuple[int, str]]:
    """One task on a fresh MemoryStorage: (CPU s, end state)."""
    storage = MemoryStorage()
    fill(storage, items)
    engine = TaskEngine(storage)
    engine.run_until_idle()  # the services' first tick, before the clock starts
    gc.collect()
    start = time.process_time()
    task = engine.create_task(SPECS[op])
    engine.run_until_idle()
    spent = time.process_time() - start
    done = engine.get_task(task.id)
    assert done.status.value == "COMPLETED", done.to_json()
    assert not done.items_failed, done.to_json()
    return spent, digest(op, scan_all(storage))


def run_tiny(items: list[dict[str, object]], op: str) -> tuple[float, tuple[int, str]]:
    """The same operation on TinyDB's MemoryStorage: (CPU s, end state)."""
    tiny = Tiny()
    tiny.load(items, op)  # type: ignore[arg-type]
    gc.collect()
    start = time.process_time()
    tiny.run(op)
    spent = time.process_time() - start
    state = tiny.state(op)
    tiny.close()
    return spent, state


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    args = parser.parse_args()
    print("| items | operation | taskengine µs/item | TinyDB µs/item | taskengine ÷ TinyDB |")
    print("|---:|---|---:|---:|---:|")
    for count in args.items:
        items = make_items(count)
        for op in args.ops:
            ours: list[float] = []
            theirs: list[float] = []
            for round_ in range(args.rounds):
                runs = (run_engine, run_tiny) if round_ % 2 == 0 else (run_tiny, run_engine)
                states = {}
                for run in runs:
                    spent, states[run] = run(items, op)
                    (ours if run is run_engine else theirs).append(spent)
                if states[run_engine] != states[run_tiny]:
                    raise SystemExit(f"{op}: taskengine's end state differs from TinyDB's")
            mine, tiny = statistics.median(ours), statistics.median(theirs)
            print(
                f"| {count:,} | {op} | {mine / count * 1e6:.2f} | {tiny / count * 1e6:.2f}"
                f" | {mine / tiny:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
