"""Filters pushed into SQLite against the same filters checked in Python, in the same run.

The read side of a ``DELETE_BY_QUERY``: the filtered ``count`` the engine takes first,
then a filtered scan in pages of 1000 (the batch loop's reads), over N items (200k;
``--quick``: 20k) in a file-backed ``SQLiteStorage``. "Python" wraps the same compiled
filter in a plain function, which offers no SQL form, so the adapter decodes every row
and calls the filter; "pushed" passes the compiled filter itself. Each figure is the
best of three runs; both must find the same items. Filters: about 10% of the items
(exact in SQL, sure in SQL on ASCII strings, a UTC date range, a mongo ``$in``), one
that SQL can only narrow down (Python decides the rest) and one matching 1%.

Run: ``.venv/bin/python benchmarks/bench_pushdown.py [--quick]``. Prints figures only;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from taskengine.filters import Filter, compile_filter
from taskengine.storage import SQLiteStorage

PAGE = 1000
START = datetime(2024, 1, 1, tzinfo=timezone.utc)

FILTERS: list[tuple[str, dict[str, Any], str]] = [
    ("wix number range (exact)", {"n": {"$gte": 10, "$lt": 20}}, "wix"),
    ("wix string equality", {"status": "archived"}, "wix"),
    ("wix $endsWith (ASCII: sure)", {"title": {"$endsWith": "7"}}, "wix"),
    ("mongo UTC date range", {"created": {"$lt": START + timedelta(days=10)}}, "mongo"),
    ("mongo $in on an array", {"tags": {"$in": ["t3", "t11"]}}, "mongo"),
    ("mongo $regex (narrowed)", {"title": {"$regex": "7$"}, "n": {"$lt": 20}}, "mongo"),
    ("wix 1% (n == 42)", {"n": 42, "active": True}, "wix"),
]


def make_items(n: int) -> list[dict[str, Any]]:
    """N typical items; each filter above matches a known share of them."""
    return [
        {
            "_id": f"item{i:08d}",
            "title": f"Title {i}",
            "n": i % 100,
            "price": i * 0.25,
            "active": i % 2 == 0,
            "status": "archived" if i % 10 == 3 else "live",
            "tags": ["red", f"t{i % 17}"],
            "created": START + timedelta(days=i % 100, seconds=i),
            "meta": {"owner": "someone", "rank": i % 100},
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def count(storage: SQLiteStorage, flt: Callable[[Mapping[str, Any]], bool]) -> int:
    """The filtered count a DELETE_BY_QUERY takes first."""
    return storage.count("c", "LIVE", flt).value


def scan(storage: SQLiteStorage, flt: Callable[[Mapping[str, Any]], bool]) -> list[str]:
    """A scan in pages, as the batch loop reads: the matching ids."""
    ids: list[str] = []
    after: str | None = None
    while True:
        page = storage.scan("c", "LIVE", after=after, limit=PAGE, filter=flt)
        ids.extend(item["_id"] for item in page.items if flt(item))
        if page.cursor is None:
            return ids
        after = page.cursor


def main() -> None:
    """Print a table of count+scan times, Python against pushed down."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k items instead of 200k")
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.sqlite")
        with SQLiteStorage(path) as storage:
            storage.create_collection("c")
            items = make_items(n)
            for start in range(0, n, 10_000):
                storage.insert_items("c", "LIVE", items[start : start + 10_000])
            del items
            print(f"{n:,} items; count + scan in pages of {PAGE}; best of 3\n")
            print(
                "| filter | matches | exact | count: Python s | pushed s | speed-up"
                " | scan: Python s | pushed s | speed-up | both: speed-up |"
            )
            print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            ratios = []
            for name, spec, dialect in FILTERS:
                flt: Filter = compile_filter(spec, dialect)  # type: ignore[arg-type]
                condition = flt.to_sql("sqlite", "doc")
                exact = "yes" if condition is not None and condition.exact else "no"

                def plain(item: Mapping[str, Any], f: Filter = flt) -> bool:
                    return f(item)

                slow_count, slow_n = timed(lambda: count(storage, plain))
                fast_count, fast_n = timed(lambda: count(storage, flt))  # noqa: B023
                slow_scan, slow_ids = timed(lambda: scan(storage, plain))
                fast_scan, fast_ids = timed(lambda: scan(storage, flt))  # noqa: B023
                assert fast_ids == slow_ids
                assert fast_n == slow_n == len(fast_ids)
                ratio = (slow_count + slow_scan) / (fast_count + fast_scan)
                ratios.append(ratio)
                print(
                    f"| {name} | {len(fast_ids):,} ({len(fast_ids) / n:.0%}) | {exact} |"
                    f" {slow_count:.3f} | {fast_count:.3f} | {slow_count / fast_count:.1f}x |"
                    f" {slow_scan:.3f} | {fast_scan:.3f} | {slow_scan / fast_scan:.1f}x |"
                    f" {ratio:.1f}x |"
                )
            ratios.sort()
            print(f"\nMedian speed-up (count and scan) {ratios[len(ratios) // 2]:.1f}x")


if __name__ == "__main__":
    main()
