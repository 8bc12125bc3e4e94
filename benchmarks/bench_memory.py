"""Benchmark: MemoryStorage at scale — µs per item, reader latency, and TinyDB.

Three parts, each against a baseline measured in the same run (task times are this
process's CPU seconds, as the machine may be shared; ``--wall`` for wall-clock):

* **Scaling.** Each task type (the four of ``bench_tasktypes.py``, same items and specs)
  runs through the engine over 10k and 100k items (and 1M with ``--full``); it prints
  µs/item, the full garbage collections the run made and the time spent in them
  (``gc.callbacks``), and the ratio of each size's µs/item to 100k's.
* **Readers.** While one EDIT_FIELD_DATA task runs over the largest size, two reader
  threads call ``engine.get_task``, ``engine.list_tasks``, ``storage.get_item`` and a
  20-item ``storage.scan``, one call due every 2 ms each; it prints their latency
  p50/p99/max counted from when each call was due, and the same with no task running
  (the baseline).
* **TinyDB.** The same operation with the same filter done the TinyDB way on TinyDB's
  in-memory storage (``table.remove``/``table.update`` with a ``Query``), at 100k items;
  the ratio is engine time ÷ TinyDB time. Skipped, saying so, when ``tinydb`` is not
  installed (``pip install -e '.[bench]'``).

``--before REV`` also runs the scaling part on the ``MemoryStorage`` of a git revision
(loaded from ``git show REV:taskengine/storage/memory.py``) to compare. Only that module
is taken from REV (it imports today's ``_chunks``, ``_frozen`` and the rest), and the
engine uses whatever that class offers: a REV without ``change_matching`` runs the scan
path, one without ``due_items`` (the schedule index) gets the publish scheduler's
in-memory timeline. ``--kind TYPE`` limits the scaling part to some task types. Best of
``--repeat`` interleaved rounds. Never passes or fails on time.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--quick] [--full] [--before REV]
[--kind TYPE]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_tasktypes import SPECS, WHEN, engine_run, fill, make_items

from taskengine.engine import TaskEngine
from taskengine.storage import MemoryStorage, Storage

_GC: dict[str, Any] = {"full": 0, "full_s": 0.0, "max_s": 0.0, "start": 0.0}

INTERVAL = 0.002
"""Seconds between two reads of one reader thread."""

_clock = time.process_time
"""What the scaling and TinyDB parts time: this process's CPU seconds, not wall-clock,
because the machine is shared (``--wall`` switches to ``time.perf_counter``). Reader
latency is always wall-clock: it is what a reader waits."""


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _GC["start"] = _clock()
    elif info["generation"] == 2:
        took = _clock() - _GC["start"]
        _GC["full"] += 1
        _GC["full_s"] += took
        _GC["max_s"] = max(_GC["max_s"], took)


def _reset_gc() -> None:
    _GC.update(full=0, full_s=0.0, max_s=0.0)


def engine_task(make_storage: Callable[[], Storage], kind: str, n: int) -> tuple[float, int, float]:
    """Seconds of one task over ``n`` fresh items, full GCs during it and their seconds."""
    storage = make_storage()
    fill(storage, make_items(n))
    work = engine_run(storage, kind)
    gc.collect()
    _reset_gc()
    start = _clock()
    work()
    took = _clock() - start
    return took, _GC["full"], _GC["full_s"]


def load_before(rev: str) -> Callable[[], Storage]:
    """The ``MemoryStorage`` class of git revision ``rev``, loaded as a module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{rev}:taskengine/storage/memory.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "memory_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("memory_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_before"] = module
    spec.loader.exec_module(module)
    cls: Callable[[], Storage] = module.MemoryStorage
    return cls


def scaling(
    sizes: list[int],
    repeat: int,
    stores: dict[str, Callable[[], Storage]],
    kinds: list[str] | None = None,
) -> None:
    """Print µs/item per task type, size and store, and the ratio to 100k."""
    print("\n## Scaling: µs/item through the engine (best of rounds)\n")
    print("| store | task type | items | µs/item | ratio to 100k | full GCs | s in full GCs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, make in stores.items():
        for kind in kinds or list(SPECS):
            best: dict[int, tuple[float, int, float]] = {}
            for round_no in range(repeat):
                for n in sizes:
                    if n >= 1_000_000 and round_no >= 2:
                        continue  # 1M: two rounds at most
                    got = engine_task(make, kind, n)
                    if n not in best or got[0] < best[n][0]:
                        best[n] = got
            base = best[100_000][0] / 100_000 if 100_000 in best else None
            for n in sizes:
                took, full, full_s = best[n]
                per = took / n * 1e6
                ratio = f"{per / (base * 1e6):.2f}" if base else "-"
                print(f"| {label} | {kind} | {n:,} | {per:.2f} | {ratio} | {full} | {full_s:.2f} |")


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    if not ordered:
        return 0.0, 0.0, 0.0

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return at(0.5), at(0.99), ordered[-1] * 1000


def readers(n: int, label: str, make: Callable[[], Storage]) -> None:
    """Reader latency with and without an EDIT_FIELD_DATA task over ``n`` items."""
    storage = make()
    fill(storage, make_items(n))
    engine = TaskEngine(storage, batch_size=500)
    engine.run_until_idle()
    done = engine.create_task(SPECS["COPY_FIELD_DATA"])
    engine.run_until_idle()
    stop = threading.Event()
    samples: list[list[float]] = [[], []]

    def read(out: list[float], seed: int) -> None:
        # Reads are due every INTERVAL (an open-loop schedule): latency is counted from
        # when a read was due, so a reader held up for a second records every read it
        # could not make meanwhile (no coordinated omission).
        step = 0
        begin = time.perf_counter()
        while not stop.is_set():
            step += 1
            due = begin + step * INTERVAL
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            item_id = f"{(seed * 7919 + step * 104729) % n:08d}"
            if step % 4 == 0:
                engine.get_task(done.id)
            elif step % 4 == 1:
                engine.list_tasks(30)
            elif step % 4 == 2:
                storage.get_item("Items", "LIVE", item_id)
            else:
                storage.scan("Items", "LIVE", after=item_id, limit=20)
            out.append(time.perf_counter() - due)

    def run(with_task: bool) -> tuple[list[float], float]:
        for out in samples:
            out.clear()
        stop.clear()
        threads = [threading.Thread(target=read, args=(samples[i], i)) for i in range(2)]
        gc.collect()
        _reset_gc()
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        if with_task:
            engine.create_task(SPECS["EDIT_FIELD_DATA"])
            engine.run_until_idle()
        else:
            time.sleep(2.0)  # the baseline: readers alone for a fixed while
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        return samples[0] + samples[1], time.perf_counter() - start

    print(f"\n## Readers ({label}): 2 threads, latency in ms, {n:,} items\n")
    print("| while | reads | p50 ms | p99 ms | max ms | full GCs | longest full GC ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case, with_task in (("no task (baseline)", False), ("EDIT_FIELD_DATA task", True)):
        got, took = run(with_task)
        p50, p99, top = _percentiles(got)
        print(
            f"| {case} ({took:.1f} s) | {len(got):,} | {p50:.2f} | {p99:.2f} | {top:.1f} | "
            f"{_GC['full']} | {_GC['max_s'] * 1000:.1f} |"
        )


def tinydb_compare(n: int, repeat: int) -> None:
    """Engine time ÷ TinyDB time per operation, at ``n`` items."""
    print(f"\n## TinyDB in-memory storage, {n:,} items (best of {repeat})\n")
    try:
        from tinydb import Query, TinyDB
        from tinydb.storages import MemoryStorage as TinyMemory
    except ImportError:
        print("skipped: tinydb is not installed (pip install -e '.[bench]')")
        return
    query = Query()
    halloween = query.holidays.any(["Halloween"])
    published = (
        ~query._publishStatus.exists()
        | (query._publishStatus == None)  # noqa: E711  (TinyDB's query syntax)
        | (query._publishStatus == "PUBLISHED")
    )

    def edit(doc: dict[str, Any]) -> None:
        tags = doc.get("tags")
        if not isinstance(tags, list):
            return
        out = ["Good" if t == "Goob" else t for t in tags if t != "outdated"]
        out.append("sale")
        doc["tags"] = list(dict.fromkeys(out))

    def copy_name(doc: dict[str, Any]) -> None:
        if "fullName" in doc:
            doc["fullNameCopy"] = doc["fullName"]

    ops: dict[str, Callable[[Any], Any]] = {
        "DELETE_BY_QUERY": lambda table: table.remove(halloween & published),
        "COPY_FIELD_DATA": lambda table: table.update(copy_name),
        "EDIT_FIELD_DATA": lambda table: table.update(edit, halloween),
        "UPDATE_PUBLISH_STATUS": lambda table: table.update({"_publishDate": WHEN}, halloween),
    }

    def tiny(kind: str) -> float:
        database = TinyDB(storage=TinyMemory)
        table = database.table("Items")
        items = make_items(n)
        for start in range(0, n, 10_000):
            table.insert_multiple(items[start : start + 10_000])
        del items
        gc.collect()
        start = _clock()
        ops[kind](table)
        return _clock() - start

    print("| operation | engine µs/item | TinyDB µs/item | engine ÷ TinyDB |")
    print("|---|---:|---:|---:|")
    for kind in SPECS:
        eng = tin = float("inf")
        for _ in range(repeat):
            tin = min(tin, tiny(kind))
            eng = min(eng, engine_task(MemoryStorage, kind, n)[0])
        print(f"| {kind} | {eng / n * 1e6:.2f} | {tin / n * 1e6:.2f} | {eng / tin:.2f} |")


def main() -> None:
    """Parse arguments and run the three parts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k and 100k only, 2 rounds")
    parser.add_argument("--full", action="store_true", help="also 1M items (about 10 min)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (best of)")
    parser.add_argument("--before", metavar="REV", help="also the MemoryStorage of REV")
    parser.add_argument(
        "--part", choices=["scaling", "readers", "tinydb"], action="append", help="only these"
    )
    parser.add_argument("--wall", action="store_true", help="time wall-clock, not CPU")
    parser.add_argument(
        "--kind", choices=list(SPECS), action="append", help="scaling: only these task types"
    )
    args = parser.parse_args()
    global _clock
    if args.wall:
        _clock = time.perf_counter
    repeat = 2 if args.quick else args.repeat
    sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])
    parts = set(args.part or ["scaling", "readers", "tinydb"])
    stores: dict[str, Callable[[], Storage]] = {"memory": MemoryStorage}
    if args.before:
        stores[f"memory@{args.before}"] = load_before(args.before)
    gc.callbacks.append(_gc_callback)
    try:
        print(f"Python {sys.version.split()[0]}, GC thresholds {gc.get_threshold()}")
        if "scaling" in parts:
            scaling(sizes, repeat, stores, args.kind)
        if "readers" in parts:
            for label, make in stores.items():
                readers(sizes[-1], label, make)
        if "tinydb" in parts:
            tinydb_compare(100_000 if not args.quick else 10_000, repeat)
    finally:
        gc.callbacks.remove(_gc_callback)


if __name__ == "__main__":
    main()
