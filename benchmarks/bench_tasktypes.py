"""Benchmark: the four task types through the engine vs a hand-written loop.

Each task type runs over N items (100k; 10k with ``--quick``) on MemoryStorage and on
SQLiteStorage (a file in a temporary directory). The baseline is a hand-written loop doing
the same work on the same store: scan in pages of 500 with the same compiled filter, the
same per-item change (an unchanged item is not written, a copied container is a copy),
one batched write per page inside ``storage.atomic()``, and for the schedule operation
the written dates go on a sorted timeline (the engine's scheduler keeps one, so that the
dates happen). Neither re-checks the filter (both adapters apply it exactly). The
engine's own extra work (the start count, a checkpoint and counters per batch) is counted
against it. It never passes or fails on time; it prints items/s and the ratio engine
time / loop time.

Run: ``.venv/bin/python benchmarks/bench_tasktypes.py [--quick]``
"""

from __future__ import annotations

import argparse
import copy
import gc
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine.engine import TaskEngine
from taskengine.filters import compile_filter
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage

BATCH = 500
HALLOWEEN = {"holidays": {"$in": ["Halloween"]}}
WHEN = datetime(2030, 1, 1, tzinfo=timezone.utc)
PUBLISHED_ONLY = {"$or": [{"_publishStatus": None}, {"_publishStatus": {"$eq": "PUBLISHED"}}]}

SPECS: dict[str, dict[str, Any]] = {
    "DELETE_BY_QUERY": {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": HALLOWEEN},
    },
    "COPY_FIELD_DATA": {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "sourceFieldKey": "fullName",
            "targetFieldKey": "fullNameCopy",
        },
    },
    "EDIT_FIELD_DATA": {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "filter": HALLOWEEN,
            "fieldKey": "tags",
            "operations": {
                "addItems": ["sale"],
                "removeItems": ["outdated"],
                "replaceItems": [{"from": "Goob", "to": "Good"}],
                "removeDuplicates": True,
            },
        },
    },
    "UPDATE_PUBLISH_STATUS": {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Items",
            "filter": HALLOWEEN,
            "operation": "SCHEDULE_PUBLISHED_STATUS",
            "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
    },
}


def make_items(n: int) -> list[dict[str, Any]]:
    """N items, half of them Halloween, every tenth a draft."""
    return [
        {
            "_id": f"{i:08d}",
            "holidays": ["Halloween"] if i % 2 else ["Easter"],
            "tags": ["Goob", "outdated", "x"],
            "fullName": f"Name {i}",
            **({"_publishStatus": "DRAFT"} if i % 10 == 0 else {}),
        }
        for i in range(n)
    ]


def fill(storage: Storage, items: list[dict[str, Any]]) -> None:
    """(Re)create the collection with the items."""
    if any(info.name == "Items" for info in storage.list_collections()):
        storage.drop_collection("Items")
    storage.create_collection("Items", publish_plugin=True)
    for start in range(0, len(items), 10_000):
        storage.insert_items("Items", "LIVE", items[start : start + 10_000])


# --------------------------------------------------------------------------- hand loops


def _edit_tags(tags: Any) -> Any:
    if not isinstance(tags, list):
        return None
    out = ["Good" if t == "Goob" else t for t in tags]
    out = [t for t in out if t != "outdated"]
    out.append("sale")
    seen: set[Any] = set()
    deduped = []
    for t in out:
        if t not in seen:
            seen.add(t)
            deduped.append(t)
    return deduped


def hand_loop(storage: Storage, kind: str) -> None:
    """The same work as the task, written directly against the storage protocol."""
    spec: dict[str, Any] | None = None if kind == "COPY_FIELD_DATA" else HALLOWEEN
    if kind == "DELETE_BY_QUERY":
        spec = {"$and": [HALLOWEEN, PUBLISHED_ONLY]}
    accept = compile_filter(spec, "wix") if spec else None
    timeline = SortedList()
    after: str | None = None
    while True:
        page = storage.scan("Items", "LIVE", after=after, limit=BATCH, filter=accept)
        batch = page.items
        with storage.atomic():
            if kind == "DELETE_BY_QUERY":
                storage.delete_items("Items", "LIVE", [i["_id"] for i in batch])
            else:
                changed: list[dict[str, Any]] = []
                for item in batch:
                    if kind == "COPY_FIELD_DATA":
                        if "fullName" in item:
                            value = item["fullName"]
                            if isinstance(value, (list, dict)):
                                value = copy.deepcopy(value)
                            if item.get("fullNameCopy", changed) != value:
                                item["fullNameCopy"] = value
                                changed.append(item)
                    elif kind == "EDIT_FIELD_DATA":
                        tags = item.get("tags")
                        new = _edit_tags(tags)
                        if new is not None and new != tags:
                            item["tags"] = new
                            changed.append(item)
                    elif item.get("_publishDate") != WHEN:
                        item["_publishDate"] = WHEN
                        changed.append(item)
                if changed:
                    written = storage.replace_items("Items", "LIVE", changed)
                    if kind == "UPDATE_PUBLISH_STATUS":
                        timeline.update(
                            (WHEN, "Items", "LIVE", i, "_publishDate") for i in written.done
                        )
        if page.cursor is None:
            return
        after = page.cursor


def engine_run(storage: Storage, kind: str) -> Callable[[], None]:
    """A started engine (services up: a one-time cost) and the timed part: one task."""
    engine = TaskEngine(storage, batch_size=BATCH)
    engine.run_until_idle()  # starts the publish scheduler (its rebuild scan) untimed

    def work() -> None:
        task = engine.create_task(SPECS[kind])
        engine.run_until_idle()
        done = engine.get_task(task.id)
        assert done.status.value == "COMPLETED", done.to_json()

    return work


_FULL_GCS = [0]


def _count_full_gcs(phase: str, info: dict[str, Any]) -> None:
    if phase == "start" and info["generation"] == 2:
        _FULL_GCS[0] += 1


def timed(
    storage: Storage,
    items: list[dict[str, Any]],
    prepare: Callable[[], Callable[[], None]],
    repeat: int,
) -> tuple[float, int]:
    """Best seconds over ``repeat`` runs of the prepared work on freshly filled storage,
    and how many full (generation 2) garbage collections that run made.

    Both sides start from the same heap state: a full collection right before the
    timing (no garbage of the previous run is collected inside it, and the collector's
    allocation counts start at zero).
    """
    best, full_gcs = float("inf"), 0
    for _ in range(repeat):
        fill(storage, items)
        work = prepare()
        gc.collect()
        _FULL_GCS[0] = 0
        start = time.perf_counter()
        work()
        took = time.perf_counter() - start
        if took < best:
            best, full_gcs = took, _FULL_GCS[0]
    return best, full_gcs


def main() -> None:
    """Parse arguments, run every type on both adapters, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k items instead of 100k")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    repeat = 3
    items = make_items(n)
    rows = []
    gc.callbacks.append(_count_full_gcs)
    with tempfile.TemporaryDirectory() as tmp:
        adapters: list[tuple[str, Storage, float]] = [
            ("memory", MemoryStorage(), 1.5),
            ("sqlite", SQLiteStorage(Path(tmp) / "bench.db"), 2.0),
        ]
        try:
            for name, storage, target in adapters:
                for kind in SPECS:
                    # Interleaved rounds, best of each: load from other processes on the
                    # machine hits both alike.
                    loop: tuple[float, int] = (float("inf"), 0)
                    eng: tuple[float, int] = (float("inf"), 0)
                    for _ in range(repeat):
                        loop = min(
                            loop,
                            timed(
                                storage,
                                items,
                                lambda s=storage, k=kind: lambda: hand_loop(s, k),  # type: ignore[misc]
                                1,
                            ),
                        )
                        eng = min(
                            eng,
                            timed(
                                storage,
                                items,
                                lambda s=storage, k=kind: engine_run(s, k),  # type: ignore[misc]
                                1,
                            ),
                        )
                    rows.append(
                        (
                            name,
                            kind,
                            n / eng[0],
                            n / loop[0],
                            eng[0] / loop[0],
                            target,
                            f"{eng[1]}/{loop[1]}",
                        )
                    )
        finally:
            gc.callbacks.remove(_count_full_gcs)
            for _, storage, _ in adapters:
                if isinstance(storage, SQLiteStorage):
                    storage.close()
    print(f"items per collection: {n:,} (items/s counts every stored item scanned)")
    print(
        f"| {'storage':7} | {'task type':22} | {'engine items/s':>14} | "
        f"{'loop items/s':>12} | {'ratio':>5} | {'target':>6} | {'full GCs e/l':>12} |"
    )
    print(f"|{'-' * 9}|{'-' * 24}|{'-' * 16}|{'-' * 14}|{'-' * 7}|{'-' * 8}|{'-' * 14}|")
    for name, kind, eng_rate, loop_rate, ratio, target, gcs in rows:
        print(
            f"| {name:7} | {kind:22} | {eng_rate:14,.0f} | {loop_rate:12,.0f} | {ratio:5.2f} | "
            f"{'<=' + str(target):>6} | {gcs:>12} |"
        )


if __name__ == "__main__":
    main()
