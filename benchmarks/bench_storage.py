"""Storage adapters against hand-written baselines measured in the same run.

For each adapter: a full scan in pages of 1000, then replacing every item and deleting
every item in batches of 500, over N items (100k; ``--quick``: 10k). Each figure is the
best of three runs (before each delete run the store is refilled, untimed). Baselines do
the same work by hand: for SQLite a plain ``sqlite3`` loop on a ``(id PRIMARY KEY, doc)``
table with ``json``; for memory a plain ``dict`` with a sorted key list, paged by cursor,
kept in order on delete, copies in and out (but no validation of the values, which the
adapter must do on replace). The row ``replace+check`` compares the same adapter replace
with a dict loop that also checks the adapter's value rules, written out for the item
shape, before a batch is stored. Targets:
SQLite within 1.5x of its baseline, memory within 2x of its baseline. Then the peak
Python memory (``tracemalloc``) of a full scan of a SQLite collection of growing size
(10k, 100k, 1M; ``--quick``: 10k, 100k), which should stay flat.

Run: ``.venv/bin/python benchmarks/bench_storage.py [--quick]``. Prints figures only;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import os
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from taskengine.storage import MemoryStorage, SQLiteStorage
from taskengine.storage.base import Storage

PAGE = 1000
BATCH = 500


def make_items(n: int, version: int = 0) -> list[dict[str, Any]]:
    """N small, typical items."""
    return [
        {
            "_id": f"item{i:08d}",
            "title": f"Title number {i}",
            "n": i + version,
            "price": i * 0.25,
            "active": i % 2 == 0,
            "tags": ["red", "green", f"t{i % 17}"],
            "meta": {"owner": "someone", "rank": i % 100},
        }
        for i in range(n)
    ]


def timed(
    fn: Callable[[], object], repeat: int = 1, setup: Callable[[], object] | None = None
) -> float:
    """Best wall time of ``repeat`` runs (``setup``, untimed, before each)."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# -- the adapters ------------------------------------------------------------------------


def storage_scan(storage: Storage) -> int:
    """Full scan through the protocol."""
    total = 0
    after: str | None = None
    while True:
        page = storage.scan("c", "LIVE", after=after, limit=PAGE)
        total += len(page.items)
        if page.cursor is None:
            return total
        after = page.cursor


def storage_replace(storage: Storage, items: list[dict[str, Any]]) -> None:
    """Replace every item in batches."""
    for start in range(0, len(items), BATCH):
        storage.replace_items("c", "LIVE", items[start : start + BATCH])


def storage_delete(storage: Storage, ids: list[str]) -> None:
    """Delete every item in batches."""
    for start in range(0, len(ids), BATCH):
        storage.delete_items("c", "LIVE", ids[start : start + BATCH])


def atomic_replace(storage: Storage, items: list[dict[str, Any]]) -> None:
    """Replace every item in batches, each batch in its own atomic() block (as the engine)."""
    for start in range(0, len(items), BATCH):
        with storage.atomic():
            storage.replace_items("c", "LIVE", items[start : start + BATCH])


def atomic_delete(storage: Storage, ids: list[str]) -> None:
    """Delete every item in batches, each batch in its own atomic() block (as the engine)."""
    for start in range(0, len(ids), BATCH):
        with storage.atomic():
            storage.delete_items("c", "LIVE", ids[start : start + BATCH])


# -- hand-written sqlite3 baseline -------------------------------------------------------


def sqlite_baseline(
    path: str, items: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> dict[str, float]:
    """Scan, replace, delete with a plain sqlite3 connection (same pragmas, same JSON)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID")

        def fill() -> None:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO t VALUES (?, ?)",
                [(item["_id"], json.dumps(item, separators=(",", ":"))) for item in items],
            )
            conn.execute("COMMIT")

        fill()

        def scan() -> int:
            total = 0
            after = ""
            loads = json.loads
            while True:
                rows = conn.execute(
                    "SELECT id, doc FROM t WHERE id > ? ORDER BY id LIMIT ?", (after, PAGE)
                ).fetchall()
                docs = [loads(doc) for _, doc in rows]
                total += len(docs)
                if len(rows) < PAGE:
                    return total
                after = rows[-1][0]

        def replace() -> None:
            dumps = json.dumps
            for start in range(0, len(changed), BATCH):
                batch = changed[start : start + BATCH]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE t SET doc = ? WHERE id = ?",
                    [(dumps(item, separators=(",", ":")), item["_id"]) for item in batch],
                )
                conn.execute("COMMIT")

        def delete() -> None:
            ids = [item["_id"] for item in items]
            for start in range(0, len(ids), BATCH):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "DELETE FROM t WHERE id = ?", [(i,) for i in ids[start : start + BATCH]]
                )
                conn.execute("COMMIT")

        return {
            "scan": timed(scan, 3),
            "replace": timed(replace, 3),
            "delete": timed(delete, 3, setup=fill),
        }
    finally:
        conn.close()


# -- hand-written dict baseline ----------------------------------------------------------


def dict_baseline(items: list[dict[str, Any]], changed: list[dict[str, Any]]) -> dict[str, float]:
    """Scan, replace, delete on a plain dict with a sorted key list (copies in and out).

    Does what the contract requires and nothing more: a private copy in (a copier
    written for this item shape, no validation), a fresh copy out, pages by cursor in
    ``_id`` order (bisect), and deletes that keep the order (dead keys stay in the list
    until they outnumber the live ones, then one rebuild).
    """

    def copy(doc: dict[str, Any]) -> dict[str, Any]:
        out = doc.copy()
        out["tags"] = doc["tags"].copy()
        out["meta"] = doc["meta"].copy()
        return out

    store: dict[str, dict[str, Any]] = {}
    keys: list[str] = []
    dead = 0

    def fill() -> None:
        nonlocal keys, dead
        store.update((item["_id"], copy(item)) for item in items)
        keys = sorted(store)
        dead = 0

    fill()

    def scan() -> int:
        total = 0
        after: str | None = None
        while True:
            start = 0 if after is None else bisect.bisect_right(keys, after)
            chunk = keys[start : start + PAGE + 1]
            if dead:
                chunk = [key for key in chunk if key in store]
            page = [copy(store[key]) for key in chunk[:PAGE]]
            total += len(page)
            if len(chunk) <= PAGE:
                return total
            after = chunk[PAGE - 1]

    def replace() -> None:
        for start in range(0, len(changed), BATCH):
            for item in changed[start : start + BATCH]:
                if item["_id"] in store:
                    store[item["_id"]] = copy(item)

    def valid(doc: dict[str, Any]) -> bool:
        """The adapter's value rules, written out for this item shape."""
        tags, meta = doc["tags"], doc["meta"]
        return (
            all(type(key) is str and key.isascii() for key in doc)
            and type(doc["_id"]) is str
            and doc["_id"].isascii()
            and type(doc["title"]) is str
            and doc["title"].isascii()
            and type(doc["n"]) is int
            and -(2**63) <= doc["n"] < 2**63
            and type(doc["price"]) is float
            and math.isfinite(doc["price"])
            and type(doc["active"]) is bool
            and type(tags) is list
            and all(type(tag) is str and tag.isascii() for tag in tags)
            and type(meta) is dict
            and all(type(key) is str and key.isascii() for key in meta)
            and type(meta["owner"]) is str
            and meta["owner"].isascii()
            and type(meta["rank"]) is int
            and -(2**63) <= meta["rank"] < 2**63
        )

    def replace_checked() -> None:
        for start in range(0, len(changed), BATCH):
            batch = changed[start : start + BATCH]
            if not all(map(valid, batch)):  # nothing written if one is refused
                raise ValueError("invalid item")
            for item in batch:
                if item["_id"] in store:
                    store[item["_id"]] = copy(item)

    def delete() -> None:
        nonlocal keys, dead
        ids = [item["_id"] for item in items]
        for start in range(0, len(ids), BATCH):
            for key in ids[start : start + BATCH]:
                if store.pop(key, None) is not None:
                    dead += 1
            if dead > len(store):
                keys = [key for key in keys if key in store]
                dead = 0

    return {
        "scan": timed(scan, 3),
        "replace": timed(replace, 3),
        "replace+check": timed(replace_checked, 3),
        "delete": timed(delete, 3, setup=fill),
    }


def adapter_run(
    storage: Storage, items: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> dict[str, float]:
    """Scan, replace, delete through the Storage protocol."""
    storage.create_collection("c")

    def fill() -> None:
        if storage.count("c", "LIVE").value:
            return  # still full: the first delete run follows the replaces
        for start in range(0, len(items), 10_000):
            storage.insert_items("c", "LIVE", items[start : start + 10_000])

    fill()
    ids = [item["_id"] for item in items]
    scan = timed(lambda: storage_scan(storage), 3)
    replace = timed(lambda: storage_replace(storage, changed), 3)
    delete = timed(lambda: storage_delete(storage, ids), 3, setup=fill)
    assert storage.count("c", "LIVE").value == 0
    fill()
    atomic_rep = timed(lambda: atomic_replace(storage, changed), 3)
    atomic_del = timed(lambda: atomic_delete(storage, ids), 3, setup=fill)
    assert storage.count("c", "LIVE").value == 0
    return {
        "scan": scan,
        "replace": replace,
        "delete": delete,
        "atomic replace": atomic_rep,
        "atomic delete": atomic_del,
    }


# -- peak memory of a scan ---------------------------------------------------------------


def scan_peak(path: str, n: int) -> tuple[float, int]:
    """(seconds, peak traced bytes) of a full scan of an n-item SQLite collection."""
    with SQLiteStorage(path) as storage:
        storage.create_collection("c")
        step = 20_000
        for start in range(0, n, step):
            storage.insert_items("c", "LIVE", make_items_range(start, min(n, start + step)))
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        seen = storage_scan(storage)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seen == n
        return seconds, peak - base


def make_items_range(start: int, stop: int) -> list[dict[str, Any]]:
    """Items start..stop-1 of make_items."""
    return [
        {
            "_id": f"item{i:08d}",
            "title": f"Title number {i}",
            "n": i,
            "price": i * 0.25,
            "active": i % 2 == 0,
            "tags": ["red", "green", f"t{i % 17}"],
            "meta": {"owner": "someone", "rank": i % 100},
        }
        for i in range(start, stop)
    ]


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k items; scan memory up to 100k")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    items = make_items(n)
    changed = make_items(n, version=1)

    with tempfile.TemporaryDirectory() as tmp:
        results: list[tuple[str, str, float, float]] = []
        base = sqlite_baseline(os.path.join(tmp, "baseline.db"), items, changed)
        with SQLiteStorage(os.path.join(tmp, "storage.db")) as storage:
            ours = adapter_run(storage, items, changed)
        for op in ("scan", "replace", "delete"):
            results.append(("SQLiteStorage", op, ours[op], base[op]))
        base = dict_baseline(items, changed)
        ours = adapter_run(MemoryStorage(), items, changed)
        for op in ("scan", "replace", "delete"):
            results.append(("MemoryStorage", op, ours[op], base[op]))
        results.append(("MemoryStorage", "replace+check", ours["replace"], base["replace+check"]))
        # Each batch in its own atomic() block, as the engine writes (the undo log's cost).
        results.append(("MemoryStorage", "atomic replace", ours["atomic replace"], base["replace"]))
        results.append(("MemoryStorage", "atomic delete", ours["atomic delete"], base["delete"]))

        print(f"{n:,} items; scan pages of {PAGE}, write batches of {BATCH}")
        print(f"{'adapter':<14} {'op':<14} {'items/s':>11} {'baseline/s':>11} {'ratio':>6}  target")
        for adapter, op, ours_s, base_s in results:
            target = "1.5x" if adapter.startswith("SQLite") else "2x"
            print(
                f"{adapter:<14} {op:<14} {n / ours_s:>11,.0f} {n / base_s:>11,.0f} "
                f"{ours_s / base_s:>5.2f}x  {target}"
            )

        print()
        print("peak Python memory of a full SQLiteStorage scan (tracemalloc)")
        print(f"{'items':>10} {'peak KiB':>9} {'scan s':>7}")
        for size in sizes:
            seconds, peak = scan_peak(os.path.join(tmp, f"peak{size}.db"), size)
            print(f"{size:>10,} {peak / 1024:>9,.0f} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
