"""Filters pushed into SQLite against the same filters checked in Python, in the same run.

The read side of a ``DELETE_BY_QUERY``: the filtered ``count`` the engine takes first,
then a filtered scan in pages of 1000 (the batch loop's reads), over N items (200k;
``--quick``: 20k) in a file-backed ``SQLiteStorage``. "Python" wraps the same compiled
filter in a plain function, which offers no SQL form, so the adapter decodes every row
and calls the filter; "pushed" passes the compiled filter itself. Each figure is the
best of three runs; both must find the same items. Filters: about 10% of the items
(exact in SQL, sure in SQL on ASCII strings, a UTC date range, a mongo ``$in``), one
that SQL can only narrow down (Python decides the rest) and one matching 1%.

Part 2 (``--task``) runs a whole selective ``DELETE_BY_QUERY`` (1% of the items match)
through a ``TaskEngine`` on ``SQLiteStorage`` (file, ``SQLiteTaskStore`` sharing it) and
``PostgresStorage`` (a throwaway server from ``tests/pg_server.py``, or ``--dsn``;
``PostgresTaskStore`` sharing it), push-down on against off in the same run, interleaved
round by round (the deleted items are put back between runs, untimed). "Off" is the same
storage class with every filter wrapped in a plain function (:class:`NoPushdown`), so the
engine, task type and batches are the same and only the SQL form is missing.

Run: ``.venv/bin/python benchmarks/bench_pushdown.py [--quick]`` or ``... --task
[--items N] [--rounds R] [--dsn DSN] [--only sqlite|postgres]``. Prints figures only;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from taskengine import TaskEngine
from taskengine.filters import Filter, compile_filter
from taskengine.storage import Environment, SQLiteStorage
from taskengine.storage.base import ItemFilter, Page, Storage
from taskengine.taskstore import SQLiteTaskStore, TaskStore

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
    return make_items_range(0, n)


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


def read_side(quick: bool) -> None:
    """Part 1: a table of count+scan times on SQLite, Python against pushed down."""
    n = 20_000 if quick else 200_000
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


# ---------------------------------------------------------------- part 2: a whole task

ONE_PERCENT: dict[str, Any] = {"n": 42, "active": True}
"""The wix filter of the task: 1% of :func:`make_items` (``n == 42`` items are all active)."""


def _plain(flt: ItemFilter | None) -> ItemFilter | None:
    """``flt`` as a plain function, which offers no SQL form."""
    if flt is None:
        return None
    inner = flt
    return lambda item: inner(item)


class NoPushdown:
    """Mixin: every filter is checked in Python (the baseline of part 2)."""

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = 1000,
        filter: ItemFilter | None = None,
    ) -> Page:
        """The storage's scan with ``filter`` stripped of its SQL form."""
        scan = super().scan  # type: ignore[misc]
        page: Page = scan(collection, environment, after=after, limit=limit, filter=_plain(filter))
        return page

    def count(
        self, collection: str, environment: Environment | str, filter: ItemFilter | None = None
    ) -> Any:
        """The storage's count with ``filter`` stripped of its SQL form."""
        return super().count(collection, environment, _plain(filter))  # type: ignore[misc]

    def find(
        self, collection: str, environment: Environment | str, filter: ItemFilter | None = None
    ) -> Any:
        """The storage's find with ``filter`` stripped of its SQL form."""
        return super().find(collection, environment, _plain(filter))  # type: ignore[misc]


class PlainSQLite(NoPushdown, SQLiteStorage):
    """SQLiteStorage without push-down."""


def fill(storage: Storage, n: int) -> list[dict[str, Any]]:
    """Store N items in collection ``c``; the ones the task deletes."""
    storage.create_collection("c")
    matches = []
    flt = compile_filter(ONE_PERCENT, "wix")
    for start in range(0, n, 10_000):
        items = make_items_range(start, min(n, start + 10_000))
        storage.insert_items("c", "LIVE", items)
        matches.extend(item for item in items if flt(item))
    return matches


def make_items_range(start: int, stop: int) -> list[dict[str, Any]]:
    """The items ``start`` to ``stop`` of :func:`make_items`."""
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
        for i in range(start, stop)
    ]


SPEC = {
    "type": "DELETE_BY_QUERY",
    "deleteByQueryOptions": {"dataCollectionId": "c", "filter": ONE_PERCENT},
}


def delete_task(engine: TaskEngine, expected: int) -> float:
    """Seconds to create and run the task to its end (checked: all matches deleted)."""
    gc.collect()
    start = time.perf_counter()
    task = engine.create_task(SPEC)
    engine.run_until_idle()
    took = time.perf_counter() - start
    done = engine.get_task(task.id).to_json()
    assert done["status"] == "COMPLETED", done
    assert engine.storage.count("c", "LIVE", compile_filter(ONE_PERCENT, "wix")).value == 0
    return took


def compare(
    name: str,
    pushed: Storage,
    plain: Storage,
    store: Callable[[Storage], TaskStore],
    matches: list[dict[str, Any]],
    n: int,
    rounds: int,
) -> None:
    """Interleaved rounds of the task with and without push-down; one table row."""
    engines = {
        "pushed": TaskEngine(pushed, task_store=store(pushed)),
        "plain": TaskEngine(plain, task_store=store(plain)),
    }
    for engine in engines.values():
        engine.run_until_idle()  # services started, untimed
    times: dict[str, list[float]] = {"pushed": [], "plain": []}
    for round_ in range(rounds):
        order = ["plain", "pushed"] if round_ % 2 == 0 else ["pushed", "plain"]
        for mode in order:
            times[mode].append(delete_task(engines[mode], len(matches)))
            pushed.insert_items("c", "LIVE", matches)  # put back, untimed
    for engine in engines.values():
        engine.stop()
    slow, fast = statistics.median(times["plain"]), statistics.median(times["pushed"])
    print(
        f"| {name} | {n:,} | {len(matches):,} | {rounds} | {slow:.3f} | {fast:.3f} |"
        f" {slow / fast:.1f}x | {min(times['plain']) / min(times['pushed']):.1f}x |",
        flush=True,
    )


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """A fresh database on the given server, or on a throwaway one; dropped after."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pg_server import PostgresServer, create_database, drop_database

    with contextlib.ExitStack() as stack:
        if dsn is None:
            dsn = stack.enter_context(PostgresServer()).dsn
        name = f"bench_pushdown_{uuid.uuid4().hex[:8]}"
        created = create_database(dsn, name)
        try:
            yield created
        finally:
            drop_database(dsn, name)


def task_side(n: int, rounds: int, dsn: str | None, only: str | None) -> None:
    """Part 2: a 1% DELETE_BY_QUERY task, push-down on and off, on SQLite and PostgreSQL."""
    print(f"DELETE_BY_QUERY of 1% ({ONE_PERCENT}), engine defaults (batches of 500)\n")
    print(
        "| storage | items | deleted | rounds | off: median s | on: median s | speed-up"
        " | best/best |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    if only in (None, "sqlite"):
        with (
            tempfile.TemporaryDirectory() as folder,
            SQLiteStorage(os.path.join(folder, "bench.sqlite")) as storage,
        ):
            matches = fill(storage, n)
            plain = PlainSQLite(storage.database)
            compare("SQLite", storage, plain, SQLiteTaskStore, matches, n, rounds)
    if only in (None, "postgres"):
        from taskengine import PostgresStorage, PostgresTaskStore

        class PlainPostgres(NoPushdown, PostgresStorage):
            """PostgresStorage without push-down."""

        with postgres(dsn) as created, PostgresStorage(created) as storage:
            matches = fill(storage, n)
            with storage.database.read() as conn:
                conn.execute("VACUUM ANALYZE taskengine_items")
            plain = PlainPostgres(storage.database)
            compare("PostgreSQL", storage, plain, PostgresTaskStore, matches, n, rounds)


def main() -> None:
    """Part 1 (read side, SQLite) or, with ``--task``, part 2."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k items instead of 200k")
    parser.add_argument("--task", action="store_true", help="part 2: a DELETE_BY_QUERY task")
    parser.add_argument("--items", type=int, default=100_000, help="part 2: items (100k)")
    parser.add_argument("--rounds", type=int, default=3, help="part 2: runs of each mode")
    parser.add_argument("--dsn", default=os.environ.get("TASKENGINE_TEST_POSTGRES") or None)
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="part 2: one storage")
    args = parser.parse_args()
    if args.task:
        task_side(args.items, args.rounds, args.dsn, args.only)
    else:
        read_side(args.quick)


if __name__ == "__main__":
    main()
