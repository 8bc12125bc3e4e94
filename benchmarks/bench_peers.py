"""Against the alternatives: taskengine beside plain SQL, mongomock, montydb and TinyDB.

Run: ``.venv/bin/python benchmarks/bench_peers.py [--quick] [--items N] [--rounds N]
[--dsn DSN | --no-postgres]`` after ``pip install -e '.[bench]'``. Writes a markdown table
(``benchmarks/results/peers.md``) and a chart (``benchmarks/results/peers.png``); never
passes or fails on time.

Every contender does the same four operations on the same seeded items (``--items``,
100,000 by default; ``--quick``: 10,000 and one round, under a minute), each run on a
fresh copy:

* ``DELETE_BY_QUERY``: delete the items with ``bucket < 10`` (about 10%);
* ``UPDATE_PUBLISH_STATUS``: set ``_publishStatus`` to ``"DRAFT"`` where ``bucket >= 50``
  (about 50%);
* ``COPY_FIELD_DATA``: every item: ``nameCopy := name``;
* ``EDIT_FIELD_DATA``: every item: append ``"sale"`` to the array ``tags``.

Contenders (each skipped with a message when its package or server is missing):

* taskengine on ``MemoryStorage``, on ``SQLiteStorage`` (with a ``SQLiteTaskStore`` on the
  same file: each batch commits with its checkpoint) and on ``PostgresStorage`` (with a
  ``PostgresTaskStore`` on the same database; ``--dsn``, else a throwaway server started
  as the tests do, ``tests/pg_server.py``): a task created and run to its end;
* plain SQL on a copy of the same SQLite file: one ``DELETE``/``UPDATE`` statement with
  ``json_extract``/``json_set``/``json_insert``, committed;
* mongomock: ``delete_many``/``update_many`` with the same Mongo filter (copy: an update
  pipeline, ``[{"$set": {"nameCopy": "$name"}}]``);
* montydb on its ``sqlite`` storage (``--montydb-storage``; of its in-process engines
  ``sqlite`` was 1.1-2x faster than ``memory`` at 20k items, and ``flatfile`` rewrites
  its file per change: a 10% delete of 10k items took 303 s); montydb has neither update
  pipelines nor ``bulk_write``, and ``update_one`` per item scans the collection (1,000
  of them took 32 s at 10k items), so its copy is not measured;
* TinyDB on its ``MemoryStorage``: ``remove``/``update`` with a ``Query``
  (``tinydb.operations.add`` for the array, a transform function for the copy).

Rounds are interleaved (every contender once per operation per round, in a rotating
order); each figure is the median items/s over the rounds, items/s counting every item of
the collection. Loading the copy and checking the result are not timed. After every run
the end state (the item count and a SHA-256 of the ``_id`` and the operation's field of
every item) must equal the one taskengine on ``MemoryStorage`` produced in an untimed
first run, or the benchmark stops.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from taskengine import MemoryStorage, SQLiteStorage, SQLiteTaskStore, TaskEngine
from taskengine.storage import Storage

SEED = 20261129
COLLECTION = "Items"
OPS = ("DELETE_BY_QUERY", "UPDATE_PUBLISH_STATUS", "COPY_FIELD_DATA", "EDIT_FIELD_DATA")
DELETE_FILTER: dict[str, Any] = {"bucket": {"$lt": 10}}
PUBLISH_FILTER: dict[str, Any] = {"bucket": {"$gte": 50}}
FIELD = {  # the field each operation's check reads (None: the ids only)
    "DELETE_BY_QUERY": None,
    "UPDATE_PUBLISH_STATUS": "_publishStatus",
    "COPY_FIELD_DATA": "nameCopy",
    "EDIT_FIELD_DATA": "tags",
}
SPECS: dict[str, dict[str, Any]] = {
    "DELETE_BY_QUERY": {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {
            "dataCollectionId": COLLECTION,
            "filter": DELETE_FILTER,
            # the same filter as the others: no implicit "PUBLISHED only" condition
            "publishPluginOptions": {"includeDraftItems": True},
        },
    },
    "UPDATE_PUBLISH_STATUS": {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": COLLECTION,
            "filter": PUBLISH_FILTER,
            "operation": "SET_DRAFT_STATUS",
        },
    },
    "COPY_FIELD_DATA": {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": COLLECTION,
            "sourceFieldKey": "name",
            "targetFieldKey": "nameCopy",
        },
    },
    "EDIT_FIELD_DATA": {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": COLLECTION,
            "fieldKey": "tags",
            "operations": {"addItems": ["sale"]},
        },
    },
}
WORDS = ("red", "green", "blue", "new", "old", "sale", "x", "y")
RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = "taskengine SQLite"


def make_items(n: int) -> list[dict[str, Any]]:
    """``n`` seeded items: a ``bucket`` in 0..99, a ``name``, 0-3 ``tags``, PUBLISHED."""
    rng = random.Random(SEED)
    return [
        {
            "_id": f"{i:08d}",
            "bucket": rng.randrange(100),
            "name": f"Name {i} {rng.choice(WORDS)}",
            "tags": rng.sample(WORDS, rng.randrange(4)),
            "_publishStatus": "PUBLISHED",
        }
        for i in range(n)
    ]


def digest(op: str, docs: Iterator[dict[str, Any]]) -> tuple[int, str]:
    """The item count and a SHA-256 of every ``(_id, field)`` pair in ``_id`` order."""
    field = FIELD[op]
    pairs = sorted((doc["_id"], doc.get(field) if field else None) for doc in docs)
    text = json.dumps(pairs, separators=(",", ":"), sort_keys=True)
    return len(pairs), hashlib.sha256(text.encode()).hexdigest()[:16]


def fill(storage: Storage, items: list[dict[str, Any]]) -> None:
    """A publish-plugin collection holding the items."""
    storage.create_collection(COLLECTION, publish_plugin=True)
    for start in range(0, len(items), 10_000):
        storage.insert_items(COLLECTION, "LIVE", items[start : start + 10_000])


def scan_all(storage: Storage) -> Iterator[dict[str, Any]]:
    """Every item of the collection, in pages."""
    after: str | None = None
    while True:
        page = storage.scan(COLLECTION, "LIVE", after=after, limit=5000)
        yield from page.items
        if page.cursor is None:
            return
        after = page.cursor


class Contender:
    """One way to do the operations: ``load`` a fresh copy, ``run`` (timed), ``state``."""

    name = ""
    unsupported: ClassVar[dict[str, str]] = {}  # operations it cannot do in bulk: why

    def load(self, items: list[dict[str, Any]], op: str) -> None:
        """A fresh copy of the items (untimed)."""
        raise NotImplementedError

    def run(self, op: str) -> None:
        """The operation (timed)."""
        raise NotImplementedError

    def state(self, op: str) -> tuple[int, str]:
        """The end state (untimed): ``digest`` of the items."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what the last ``load`` holds."""


class Engine(Contender):
    """taskengine: a task created and run to its end by ``run_until_idle``."""

    def __init__(self, name: str, open_storage: Callable[[], tuple[Storage, Any]]) -> None:
        self.name = name
        self.open_storage = open_storage
        self.storage: Storage | None = None
        self.store: Any = None
        self.engine: TaskEngine | None = None

    def load(self, items: list[dict[str, Any]], op: str) -> None:
        self.storage, self.store = self.open_storage()
        if not any(info.name == COLLECTION for info in self.storage.list_collections()):
            fill(self.storage, items)
        self.engine = TaskEngine(self.storage, task_store=self.store)
        self.engine.run_until_idle()  # the services' first tick, untimed

    def run(self, op: str) -> None:
        assert self.engine is not None
        task = self.engine.create_task(SPECS[op])
        self.engine.run_until_idle()
        done = self.engine.get_task(task.id)
        assert done.status.value == "COMPLETED", done.to_json()
        assert not done.items_failed, done.to_json()

    def state(self, op: str) -> tuple[int, str]:
        assert self.storage is not None
        return digest(op, scan_all(self.storage))

    def close(self) -> None:
        for part in (self.store, self.storage):
            close = getattr(part, "close", None)
            if close is not None:
                close()
        self.storage = self.store = self.engine = None


PLAIN_SQL = {
    "DELETE_BY_QUERY": "DELETE FROM taskengine_items WHERE coll = ? AND env = 0"
    " AND json_extract(doc, '$.bucket') < 10",
    "UPDATE_PUBLISH_STATUS": "UPDATE taskengine_items"
    " SET doc = json_set(doc, '$._publishStatus', 'DRAFT')"
    " WHERE coll = ? AND env = 0 AND json_extract(doc, '$.bucket') >= 50",
    "COPY_FIELD_DATA": "UPDATE taskengine_items"
    " SET doc = json_set(doc, '$.nameCopy', json(doc -> '$.name'))"
    " WHERE coll = ? AND env = 0 AND json_type(doc, '$.name') IS NOT NULL",
    "EDIT_FIELD_DATA": "UPDATE taskengine_items"
    " SET doc = json_insert(doc, '$.tags[#]', 'sale')"
    " WHERE coll = ? AND env = 0 AND json_type(doc, '$.tags') = 'array'",
}


class PlainSQL(Contender):
    """One SQL statement on a copy of the SQLite file, committed."""

    name = "plain SQL (SQLite)"

    def __init__(self, template: Path, folder: Path) -> None:
        self.template, self.path = template, folder / "plain.db"
        self.conn: sqlite3.Connection | None = None

    def load(self, items: list[dict[str, Any]], op: str) -> None:
        shutil.copyfile(self.template, self.path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        row = self.conn.execute(
            "SELECT id FROM taskengine_collections WHERE name = ?", (COLLECTION,)
        ).fetchone()
        self.coll = row[0]

    def run(self, op: str) -> None:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(PLAIN_SQL[op], (self.coll,))
        self.conn.execute("COMMIT")

    def state(self, op: str) -> tuple[int, str]:
        with SQLiteStorage(self.path) as storage:
            return digest(op, scan_all(storage))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class MongoLike(Contender):
    """mongomock or montydb: ``delete_many``/``update_many`` with the same filter."""

    def __init__(self, name: str, connect: Callable[[], Any], pipelines: bool) -> None:
        self.name, self.connect = name, connect
        self.client: Any = None
        self.items: Any = None
        if not pipelines:
            self.unsupported = {  # type: ignore[misc]
                "COPY_FIELD_DATA": "no update pipelines and no bulk_write; update_one per "
                "item scans the collection"
            }

    def load(self, items: list[dict[str, Any]], op: str) -> None:
        self.client = self.connect()
        self.database = f"bench_{uuid.uuid4().hex[:8]}"
        self.items = self.client[self.database]["items"]
        self.items.insert_many(copy.deepcopy(items))

    def run(self, op: str) -> None:
        if op == "DELETE_BY_QUERY":
            self.items.delete_many(DELETE_FILTER)
        elif op == "UPDATE_PUBLISH_STATUS":
            self.items.update_many(PUBLISH_FILTER, {"$set": {"_publishStatus": "DRAFT"}})
        elif op == "COPY_FIELD_DATA":
            self.items.update_many({}, [{"$set": {"nameCopy": "$name"}}])
        else:
            self.items.update_many({}, {"$push": {"tags": "sale"}})

    def state(self, op: str) -> tuple[int, str]:
        return digest(op, iter(self.items.find({})))

    def close(self) -> None:
        if self.client is not None:
            self.client.drop_database(self.database)  # montydb's memory outlives a client
            self.client.close()
        self.client = self.items = None


class Tiny(Contender):
    """TinyDB on its ``MemoryStorage``: ``remove``/``update`` with a ``Query``."""

    name = "TinyDB (memory)"

    def __init__(self) -> None:
        self.db: Any = None

    def load(self, items: list[dict[str, Any]], op: str) -> None:
        from tinydb import TinyDB
        from tinydb.storages import MemoryStorage as TinyMemory

        self.db = TinyDB(storage=TinyMemory)
        self.table = self.db.table("items")
        self.table.insert_multiple(copy.deepcopy(items))

    def run(self, op: str) -> None:
        from tinydb import Query
        from tinydb.operations import add

        item = Query()
        if op == "DELETE_BY_QUERY":
            self.table.remove(item.bucket < 10)
        elif op == "UPDATE_PUBLISH_STATUS":
            self.table.update({"_publishStatus": "DRAFT"}, item.bucket >= 50)
        elif op == "COPY_FIELD_DATA":

            def copy_name(doc: dict[str, Any]) -> None:
                doc["nameCopy"] = doc["name"]

            self.table.update(copy_name, item.name.exists())
        else:
            self.table.update(add("tags", ["sale"]), item.tags.exists())

    def state(self, op: str) -> tuple[int, str]:
        return digest(op, iter(self.table.all()))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = None


# -- contenders that need something installed or a server -----------------------------


def optional(name: str, module: str) -> bool:
    """Whether ``module`` imports; says which contender is skipped when it does not."""
    try:
        __import__(module)
    except ImportError:
        print(f"skipped {name}: {module} is not installed (pip install -e '.[bench]')")
        return False
    return True


@contextmanager
def postgres(dsn: str | None, wanted: bool) -> Iterator[str | None]:
    """A server's DSN (``--dsn``, else a throwaway one), or None (with a message)."""
    if not wanted:
        print("skipped taskengine PostgreSQL: --no-postgres")
        yield None
        return
    if not optional("taskengine PostgreSQL", "psycopg"):
        yield None
        return
    if dsn:
        yield dsn
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pg_server import PostgresServer, PostgresUnavailable

    with ExitStack() as stack:
        try:
            started = stack.enter_context(PostgresServer())
        except PostgresUnavailable as why:
            print(f"skipped taskengine PostgreSQL: no server ({why}); give one with --dsn")
            yield None
            return
        yield started.dsn


def pg_contender(dsn: str) -> Engine:
    """taskengine on a fresh database of the server for every load."""
    from pg_server import create_database, drop_database

    from taskengine import PostgresStorage, PostgresTaskStore

    made: list[str] = []

    def open_storage() -> tuple[Storage, Any]:
        while made:
            drop_database(dsn, made.pop())
        name = f"bench_peers_{uuid.uuid4().hex[:8]}"
        storage = PostgresStorage(create_database(dsn, name))
        made.append(name)
        return storage, PostgresTaskStore(storage)

    contender = Engine("taskengine PostgreSQL", open_storage)
    base_close = contender.close

    def close() -> None:
        base_close()
        while made:
            drop_database(dsn, made.pop())

    contender.close = close  # type: ignore[method-assign]
    return contender


def contenders(
    folder: Path, items: list[dict[str, Any]], dsn: str | None, monty_storage: str
) -> list[Contender]:
    """Every contender that can run here; the SQLite template file is built once."""
    template = folder / "template.db"
    with SQLiteStorage(template) as storage:
        fill(storage, items)
        SQLiteTaskStore(storage).close()  # its tables exist in every copy

    def sqlite_copy() -> tuple[Storage, Any]:
        path = folder / "engine.db"
        shutil.copyfile(template, path)
        storage = SQLiteStorage(path)
        return storage, SQLiteTaskStore(storage)

    found: list[Contender] = [
        Engine("taskengine memory", lambda: (MemoryStorage(), None)),
        Engine(BASELINE, sqlite_copy),
    ]
    if dsn is not None:
        found.append(pg_contender(dsn))
    found.append(PlainSQL(template, folder))
    if optional("mongomock", "mongomock"):
        import mongomock

        found.append(MongoLike("mongomock", mongomock.MongoClient, pipelines=True))
    if optional("montydb", "montydb"):
        import montydb

        def monty() -> Any:
            if monty_storage == "memory":
                return montydb.MontyClient(":memory:")
            path = folder / f"monty-{uuid.uuid4().hex[:8]}"
            montydb.set_storage(str(path), storage=monty_storage)
            return montydb.MontyClient(str(path))

        found.append(MongoLike(f"montydb ({monty_storage})", monty, pipelines=False))
    if optional("TinyDB", "tinydb"):
        found.append(Tiny())
    return found


# -- the run ------------------------------------------------------------------------


def once(contender: Contender, items: list[dict[str, Any]], op: str) -> tuple[float, Any]:
    """Seconds of one timed run on a fresh copy, and its end state."""
    contender.load(items, op)
    try:
        gc.collect()
        start = time.perf_counter()
        contender.run(op)
        took = time.perf_counter() - start
        return took, contender.state(op)
    finally:
        contender.close()


def measure(
    found: list[Contender], items: list[dict[str, Any]], rounds: int
) -> dict[tuple[str, str], float]:
    """Median items/s per (contender, operation); every end state checked."""
    reference = {op: once(found[0], items, op)[1] for op in OPS}  # untimed: the expected
    seconds: dict[tuple[str, str], list[float]] = {}
    for number in range(rounds):
        for op in OPS:
            shift = (number + OPS.index(op)) % len(found)
            for contender in found[shift:] + found[:shift]:
                if op in contender.unsupported:
                    continue
                took, state = once(contender, items, op)
                if state != reference[op]:
                    sys.exit(
                        f"{contender.name} {op}: end state {state} differs from "
                        f"taskengine's {reference[op]} (count, checksum)"
                    )
                seconds.setdefault((contender.name, op), []).append(took)
                print(f"round {number + 1} {op:22} {contender.name:22} {took:8.3f} s", flush=True)
    return {key: len(items) / statistics.median(values) for key, values in seconds.items()}


def table(found: list[Contender], rates: dict[tuple[str, str], float], n: int) -> str:
    """The markdown table: items/s and the ratio to taskengine on SQLite."""
    lines = [
        f"| {n:,} items: items/s (÷ {BASELINE}) | " + " | ".join(OPS) + " |",
        "|---|" + "---:|" * len(OPS),
    ]
    for contender in found:
        cells = []
        for op in OPS:
            rate = rates.get((contender.name, op))
            if rate is None:
                cells.append("n/a")
                continue
            base = rates.get((BASELINE, op))
            ratio = f" ({rate / base:.2f}×)" if base else ""
            cells.append(f"{rate:,.0f}{ratio}")
        lines.append(f"| {contender.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(found: list[Contender], rates: dict[tuple[str, str], float], n: int, rounds: int) -> bool:
    """Grouped bars (log scale) in ``results/peers.png``; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("skipped the chart: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    figure, axes = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(found)
    for index, contender in enumerate(found):
        xs = [o + (index - (len(found) - 1) / 2) * width for o in range(len(OPS))]
        ys = [rates.get((contender.name, op), 0.0) for op in OPS]
        axes.bar(xs, ys, width, label=contender.name)
        for x, y in zip(xs, ys, strict=True):
            if not y:  # not measured: say so where the bar would be
                axes.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"), ha="center")
    axes.set_yscale("log")
    axes.set_xticks(range(len(OPS)), OPS)
    axes.set_ylabel("items/s (log scale, higher is better)")
    axes.set_title(f"{n:,} items, median of {rounds} interleaved round(s)")
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(fontsize="small", ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    figure.tight_layout()
    figure.savefig(RESULTS / "peers.png", dpi=100)
    plt.close(figure)
    return True


def versions() -> str:
    """The versions of Python, SQLite and each contender's package."""
    parts = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}"]
    for module in ("mongomock", "montydb", "tinydb", "psycopg"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            pass
    return ", ".join(parts)


def main() -> None:
    """Parse arguments, measure every contender, write the table and the chart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="10,000 items, one round")
    parser.add_argument("--dsn", help="a PostgreSQL server (else a throwaway one)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--montydb-storage",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="montydb's storage engine (sqlite: its fastest here)",
    )
    args = parser.parse_args()
    n = 10_000 if args.quick else args.items
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    items = make_items(n)
    began = time.perf_counter()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        dsn = stack.enter_context(postgres(args.dsn, not args.no_postgres))
        found = contenders(folder, items, dsn, args.montydb_storage)
        rates = measure(found, items, args.rounds)
    took = time.perf_counter() - began
    notes = [
        f"{n:,} items, median of {args.rounds} interleaved rounds, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}; {versions()}; whole run {took:.0f} s.",
        f"In parentheses: items/s ÷ {BASELINE}'s (above 1: faster). Every end state "
        "(count and checksum of the changed field) equals taskengine's.",
    ]
    for contender in found:
        for op, why in contender.unsupported.items():
            notes.append(f"{contender.name} {op}: n/a ({why}).")
    text = table(found, rates, n) + "\n\n" + "\n".join(notes) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.md").write_text(text, encoding="utf-8")
    print()
    print(text)
    if chart(found, rates, n, args.rounds):
        print(f"wrote {RESULTS / 'peers.md'} and {RESULTS / 'peers.png'}")


if __name__ == "__main__":
    main()
