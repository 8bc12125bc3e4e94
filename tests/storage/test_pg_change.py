"""PostgresStorage.change_matching: set-based batches equal the scan path's, batch by batch.

Against a real server. Deletes run as one ``DELETE`` per batch over its key range (plus
the rows the filter's SQL leaves undecided, checked in Python); rewrites take
``change_by_scan``. Each batch is checked against a Python model of the collection, and
the whole run against ``change_by_scan`` on a second copy of the same items; then whole
tasks through an engine on PostgreSQL against the same tasks on MemoryStorage.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any
from unittest import mock

import attrs
import pytest
import sql_strategies as sq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_conftest_plugin import emptied

from taskengine import MemoryStorage, PostgresTaskStore, TaskEngine
from taskengine.filters import compile_filter
from taskengine.storage import _pgchange, _pgfilter
from taskengine.storage import postgres as postgres_module
from taskengine.storage.base import Item, ItemFilter, Storage
from taskengine.storage.changes import ChangeResult, ItemChange, change_by_scan
from taskengine.storage.postgres import PgDatabase, PostgresStorage
from taskengine.task import Task, TaskStatus
from taskengine.tasktypes._changes import DELETE_MATCHED, RemoveFields, SetField

_HAS_STATISTICS = postgres_module._has_statistics


@pytest.fixture(autouse=True)
def set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' tables are never analyzed, so the storage would take the scan path for
    deletes; they are about the set-based statement, so it is forced (but in the test of
    that rule itself)."""
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    """The module's database (its collections are emptied per example)."""
    return pg_module_database


@attrs.frozen
class Deletes:
    """``DELETE_MATCHED`` with the choice of ``needs_ids``."""

    needs_ids: bool
    deletes: bool = attrs.field(default=True, init=False)

    def __call__(self, item: Item, /) -> Item | str | None:
        raise AssertionError("a delete has no per-item form")

    def to_sql(self, backend: str, document: str) -> None:
        return None


@attrs.frozen
class Totals:
    """What a run of batches did, summed."""

    written: int = 0
    unchanged: int = 0
    refused: tuple[tuple[str, str], ...] = ()

    def plus(self, result: ChangeResult) -> Totals:
        return Totals(
            self.written + result.written,
            self.unchanged + result.unchanged,
            self.refused + result.refused,
        )


def checked_batch(
    storage: PostgresStorage,
    name: str,
    after: str | None,
    limit: int,
    flt: ItemFilter,
    change: ItemChange,
) -> ChangeResult:
    """One ``change_matching`` batch, checked against the collection before and after."""
    before = {item["_id"]: item for item in storage.find(name, "LIVE")}
    with storage.atomic():
        result = storage.change_matching(
            name, "LIVE", after=after, limit=limit, filter=flt, change=change
        )
    assert result.missing == ()
    if result.cursor is not None:
        assert after is None or result.cursor > after
    covered = [
        item
        for item_id, item in before.items()
        if (after is None or item_id > after)
        and (result.cursor is None or item_id <= result.cursor)
        and flt(item)
    ]
    assert len(covered) <= limit
    expected = dict(before)
    written: list[str] = []
    unchanged = 0
    for item in covered:
        outcome = None if change.deletes else change(dict(item))
        if change.deletes:
            del expected[item["_id"]]
            written.append(item["_id"])
        elif outcome is None:
            unchanged += 1
        elif isinstance(outcome, dict):
            expected[item["_id"]] = outcome
            written.append(item["_id"])
    assert result.written == len(written)
    assert result.unchanged == unchanged
    if change.needs_ids:
        assert sorted(result.done) == sorted(written)
    else:
        assert set(result.done) <= set(written)
    after_batch = list(storage.find(name, "LIVE"))
    assert after_batch == sorted(expected.values(), key=lambda item: item["_id"])
    return result


def run_reference(
    storage: Storage, name: str, after: str | None, limit: int, flt: ItemFilter, change: ItemChange
) -> Totals:
    """``change_by_scan`` batch after batch from ``after`` to the end; the totals."""
    totals = Totals()
    while True:
        with storage.atomic():
            result = change_by_scan(
                storage, name, "LIVE", after=after, limit=limit, filter=flt, change=change
            )
        totals = totals.plus(result)
        if result.cursor is None:
            return totals
        after = result.cursor


_IDS = ["i0", "i1", "i\x00", "i\x01", "i\x01\x00", "j", "\U0001f600", "é", "i00"]
_CHANGES: list[ItemChange] = [
    Deletes(needs_ids=True),
    Deletes(needs_ids=False),
    DELETE_MATCHED,
    SetField("a", "x"),
    SetField("b", datetime(2030, 1, 1, tzinfo=timezone.utc), needs_ids=True),
    RemoveFields(("b", "c")),
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(sq.documents, max_size=9),
    st.sampled_from(["mongo", "wix"]),
    st.integers(1, 3),
    st.integers(1, 4),
    st.sampled_from(_CHANGES),
    st.data(),
)
def test_batches_equal_the_scan_path(
    shared: PgDatabase,
    docs: list[dict[str, Any]],
    dialect: str,
    limit: int,
    window: int,
    change: ItemChange,
    data: st.DataObject,
) -> None:
    """Every batch changes exactly the accepted items of its key range (at most ``limit``),
    and a whole run ends as ``change_by_scan`` ends on a copy, with the same counters."""
    docs = [sq.storable(doc) for doc in docs]
    fields = sq.linked(docs)
    # U+0000 under a key no filter names: the row's jsonb is NULL, its filter undecided.
    hidden = data.draw(st.lists(st.booleans(), min_size=len(docs), max_size=len(docs)))
    docs = [{**doc, "zz": "\x00"} if nul else doc for doc, nul in zip(docs, hidden, strict=True)]
    specs = sq.mongo_specs(fields=fields) if dialect == "mongo" else sq.wix_specs(fields=fields)
    # An empty filter (every row sure, or undecided without jsonb) now and then.
    spec = data.draw(st.one_of(st.just({}), specs), label="spec")
    flt = compile_filter(spec, dialect)  # type: ignore[arg-type]
    ids = data.draw(st.permutations(_IDS), label="ids")
    items = [{**doc, "_id": ids[n]} for n, doc in enumerate(docs)]
    start = data.draw(st.sampled_from([None, *ids[: len(docs)], "i\ud800", "h"]), label="after")
    storage = emptied(shared, "a", "b")
    for name in ("a", "b"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", items)
    totals = Totals()
    after = start
    with (
        mock.patch.object(_pgchange, "WINDOW", window),
        mock.patch.object(_pgfilter, "WINDOW", window),
    ):
        for _ in range(len(items) + 2):  # each batch but the last covers a row
            result = checked_batch(storage, "a", after, limit, flt, change)
            totals = totals.plus(result)
            if result.cursor is None:
                break
            after = result.cursor
        else:
            pytest.fail("the batches did not reach the end")
        reference = run_reference(storage, "b", start, limit, flt, change)
    assert (totals.written, totals.unchanged) == (reference.written, reference.unchanged)
    assert sorted(totals.refused) == sorted(reference.refused)
    assert list(storage.find("a", "LIVE")) == list(storage.find("b", "LIVE"))


@pytest.mark.parametrize(("cheap", "expected_batches"), [(False, 4), (True, 5)])
def test_one_delete_per_batch_over_many_windows(
    shared: PgDatabase, cheap: bool, expected_batches: int
) -> None:
    """Batches span windows and the undecided rows (no jsonb) go through Python; the
    engine-shaped run deletes exactly the accepted items, the filter called only on the
    undecided rows. Without the condition's ``undecided`` test a batch is 250 candidates
    (windows of candidates); with it, key windows in one pass, the undecided rows found
    by ``data IS NULL``: 250 keys (75 candidates), then windows sized for the candidates
    still needed (at most two keys each): 350 keys (105), 140 keys (42), so 740 keys a
    batch."""
    storage = emptied(shared, "big")
    storage.create_collection("big")
    storage.insert_items(
        "big",
        "LIVE",
        [
            {"_id": f"{k:05d}", "n": k % 10, "s": "x\x00" if k % 25 == 0 else "x"}
            for k in range(3000)
        ],
    )
    flt = compile_filter({"n": {"$lt": 3}})
    calls = 0

    def counted(item: Item) -> bool:
        nonlocal calls
        calls += 1
        return flt(item)

    class Counted:
        def __call__(self, item: Item) -> bool:
            return counted(item)

        def to_sql(self, backend: str, document: str) -> Any:
            condition = flt.to_sql(backend, document)
            assert condition is not None
            assert condition.undecided == "data IS NULL"
            return condition if cheap else attrs.evolve(condition, undecided=None)

    after: str | None = None
    written = batches = 0
    with mock.patch.object(_pgchange, "WINDOW", 100):
        while True:
            with storage.atomic():
                result = storage.change_matching(
                    "big", "LIVE", after=after, limit=250, filter=Counted(), change=DELETE_MATCHED
                )
            written += result.written
            batches += 1
            if result.cursor is None:
                break
            after = result.cursor
    assert written == 900
    assert batches == expected_batches  # 120 undecided rows among the 900
    assert calls == 120  # every 25th row has no jsonb: n < 3 is decided in Python there
    assert storage.count("big", "LIVE").value == 2100
    assert storage.count("big", "LIVE", flt).value == 0


def test_a_filter_without_sql_and_errors(shared: PgDatabase) -> None:
    """A plain callable takes the scan path; bad calls raise the storage's typed errors."""
    from taskengine.errors import CollectionNotFound, SandboxNotEnabled

    storage = emptied(shared, "p")
    storage.create_collection("p")
    storage.insert_items("p", "LIVE", [{"_id": f"{k}", "n": k} for k in range(6)])
    result = storage.change_matching(
        "p", "LIVE", after=None, limit=4, filter=lambda i: i["n"] % 2 == 0, change=Deletes(True)
    )
    assert (result.cursor, result.written, sorted(result.done)) == ("3", 2, ["0", "2"])
    assert [item["_id"] for item in storage.find("p", "LIVE")] == ["1", "3", "4", "5"]
    with pytest.raises(CollectionNotFound):
        storage.change_matching(
            "nope", "LIVE", after=None, limit=4, filter=None, change=DELETE_MATCHED
        )
    with pytest.raises(SandboxNotEnabled):
        storage.change_matching(
            "p", "SANDBOX", after=None, limit=4, filter=None, change=DELETE_MATCHED
        )
    odd = compile_filter({"n": {"$in": [1, 3]}})
    expected: tuple[Any, ...] = (None, 2, ("1", "3"))
    for limit in (2**62, 2**31, 2**31 - 1, 2**15):  # past integer subscripts, bigint limits
        with storage.atomic():
            result = storage.change_matching(
                "p", "LIVE", after=None, limit=limit, filter=odd, change=Deletes(True)
            )
        assert (result.cursor, result.written, result.done) == expected
        expected = (None, 0, ())
    result = storage.change_matching(
        "p", "LIVE", after=None, limit=2**62, filter=None, change=Deletes(True)
    )
    assert (result.cursor, result.written, result.done) == (None, 2, ("4", "5"))


# --------------------------------------------------------------------------- the engine


class Counting(PostgresStorage):
    """PostgresStorage counting its set-based batches; it can hold the task after two."""

    def __init__(self, source: PgDatabase) -> None:
        super().__init__(source)
        self.batches = 0
        self.gate_after: int | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def change_matching(self, *args: Any, **kwargs: Any) -> ChangeResult:
        self.batches += 1
        return super().change_matching(*args, **kwargs)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        # Entered before a batch's transaction begins: the gate holds no lock.
        if self.batches == self.gate_after and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(10)
        with super().atomic():
            yield


def engine_items() -> list[dict[str, Any]]:
    """Half Halloween, every tenth a draft, some without jsonb (U+0000), some odd ids."""
    items: list[dict[str, Any]] = []
    for k in range(240):
        item: dict[str, Any] = {
            "_id": f"{k:04d}" + ("\x00" if k % 37 == 0 else ""),
            "holidays": ["Halloween"] if k % 2 else ["Easter"],
        }
        if k % 10 == 5:
            item["_publishStatus"] = "DRAFT"
        if k % 11 == 0:
            item["note"] = "n\x00"
        items.append(item)
    return items


HALLOWEEN = {"holidays": {"$in": ["Halloween"]}}
TASKS = {
    "DELETE_BY_QUERY": {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": HALLOWEEN},
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


def counters(task: Task) -> tuple[Any, ...]:
    return task.status, task.items_succeeded, task.items_failed, task.estimated_item_count


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_engine_tasks_end_as_on_memory(shared: PgDatabase, kind: str) -> None:
    """A whole task on PostgresStorage + PostgresTaskStore (one database) ends in the same
    items and counters as on MemoryStorage; deletes go through change_matching."""
    memory = MemoryStorage()
    memory.create_collection("Items", publish_plugin=True)
    memory.insert_items("Items", "LIVE", engine_items())
    on_memory = TaskEngine(memory, batch_size=16)
    expected = on_memory.create_task(TASKS[kind])
    on_memory.run_until_idle()

    emptied(shared, "Items")
    storage = Counting(shared)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", engine_items())
    store = PostgresTaskStore(storage)
    engine = TaskEngine(storage, task_store=store, batch_size=16, set_batch_size=16, listen=False)
    task = engine.create_task(TASKS[kind])
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert counters(done) == counters(on_memory.get_task(expected.id))
    assert list(storage.find("Items", "LIVE")) == list(memory.find("Items", "LIVE"))
    assert storage.batches > 1  # the set-based path ran, batch by batch


def test_cancel_mid_task_keeps_counters_equal_to_the_items_deleted(shared: PgDatabase) -> None:
    """Cancelled between two set-based batches: FAILED/CANCELLED, and itemsSucceeded is
    exactly the number of items gone."""
    emptied(shared, "Items")
    storage = Counting(shared)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", engine_items())
    flt = compile_filter(HALLOWEEN)
    matching = storage.count("Items", "LIVE", flt).value
    store = PostgresTaskStore(storage)
    storage.gate_after = 2
    engine = TaskEngine(storage, task_store=store, batch_size=16, set_batch_size=16, listen=False)
    engine.start()
    try:
        task = engine.create_task(TASKS["DELETE_BY_QUERY"])
        assert storage.reached.wait(10)
        assert engine.cancel_task(task.id).cancel_requested
        storage.release.set()
        done = engine.wait(task.id, timeout=10)
    finally:
        storage.release.set()
        engine.stop()
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "CANCELLED"
    gone = 240 - storage.count("Items", "LIVE").value
    assert done.items_succeeded == gone
    assert 0 < gone < matching


def test_two_engines_deleting_the_same_items_count_each_once(
    shared: PgDatabase, pg_module_dsn: str
) -> None:
    """Two engines on their own sessions run a DELETE_BY_QUERY each on the same items at
    the same time: every matching item is deleted once and counted once, by one task."""
    emptied(shared, "Items")
    storage = PostgresStorage(shared)
    storage.create_collection("Items", publish_plugin=True)
    items = [
        {"_id": f"{k:05d}", "holidays": ["Halloween"] if k % 3 else ["Easter"]} for k in range(1500)
    ]
    storage.insert_items("Items", "LIVE", items)
    matching = sum(1 for item in items if item["holidays"] == ["Halloween"])
    databases = [PgDatabase(pg_module_dsn) for _ in range(2)]  # a session each
    try:
        engines = [
            TaskEngine(
                own,
                task_store=PostgresTaskStore(own),
                batch_size=40,
                set_batch_size=40,
                listen=False,
            )
            for own in map(PostgresStorage, databases)
        ]
        tasks = [engine.create_task(TASKS["DELETE_BY_QUERY"]) for engine in engines]
        start = threading.Barrier(2, timeout=10)
        errors: list[BaseException] = []

        def run(engine: TaskEngine) -> None:
            try:
                start.wait()
                engine.run_until_idle()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        done = [engines[0].get_task(task.id) for task in tasks]
    finally:
        for database in databases:
            database.close()
    assert all(task.status is TaskStatus.COMPLETED for task in done), done
    assert sum(task.items_succeeded for task in done) == matching
    assert all(task.items_failed == 0 for task in done)
    kept = [item["_id"] for item in storage.find("Items", "LIVE")]
    assert kept == [item["_id"] for item in items if item["holidays"] == ["Easter"]]


_READ = (
    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
    " FROM pg_stat_xact_user_tables WHERE relname = 'taskengine_items'"
)


def test_a_batch_reads_its_windows_not_the_item_set(pg_database: str) -> None:
    """On a table never analyzed (no statistics), a set-based batch in the middle of
    20,000 items reads about its own window's rows: no statement of it is planned over
    the whole item set (which made a whole task quadratic). (The storage itself takes the
    scan path on such a table; the statement is forced here, as in every test but the
    next.)"""
    with PgDatabase(pg_database) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"{k:06d}", "n": k % 5} for k in range(20000)])
        flt = compile_filter({"n": {"$lt": 2}})
        with storage.atomic(), database.read() as conn:
            before = conn.execute(_READ).fetchone()
            result = storage.change_matching(
                "c", "LIVE", after="010000", limit=100, filter=flt, change=DELETE_MATCHED
            )
            after = conn.execute(_READ).fetchone()
        assert before is not None
        assert after is not None
        # One pass (the filter's undecided rows are those without jsonb): the next 100
        # keys, 2 in 5 of them matching, then 91 keys for the 60 candidates still needed
        # less three standard deviations; every part reads its window at most once.
        assert (result.written, result.cursor) == (77, "010191")
        assert after[0] - before[0] < 2000


def test_deletes_are_set_based_only_on_a_table_with_statistics(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without statistics (never analyzed) a delete takes the scan path, whose plans do
    not depend on them; once the table is analyzed, the set-based statement."""
    calls: list[int] = []
    real = postgres_module.delete_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(postgres_module, "delete_rows", counted)
    monkeypatch.setattr(postgres_module, "_has_statistics", _HAS_STATISTICS)
    flt = compile_filter({"n": {"$lt": 2}})
    with PgDatabase(pg_database) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"{k:04d}", "n": k % 5} for k in range(1000)])
        with storage.atomic():
            first = storage.change_matching(
                "c", "LIVE", after=None, limit=100, filter=flt, change=DELETE_MATCHED
            )
        assert calls == []
        with database.transaction() as conn:
            conn.execute("ANALYZE taskengine_items")
        with storage.atomic():
            second = storage.change_matching(
                "c", "LIVE", after=first.cursor, limit=100, filter=flt, change=DELETE_MATCHED
            )
        assert calls == [1]
        # The scan path's batch is 100 accepted items; the set-based one the next 100 keys
        # (one pass: 2 in 5 of them match) and 91 more, none deleted twice.
        assert (first.written, second.written) == (100, 76)
        assert storage.count("c", "LIVE").value == 824
        assert storage.count("c", "LIVE", flt).value == 400 - 176


def test_a_yes_from_the_statistics_is_trusted_for_a_while(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog is read again for every batch while it says "no statistics"; once it
    says yes, batches skip it for ``STATISTICS_FRESH_FOR`` seconds, then read it again."""
    answers = [False, True, True]
    looks: list[int] = []

    def looked(conn: Any) -> bool:
        looks.append(1)
        return answers[len(looks) - 1]

    now = [1000.0]
    monkeypatch.setattr(postgres_module, "_has_statistics", looked)
    monkeypatch.setattr(postgres_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    flt = compile_filter({"n": {"$lt": 2}})
    with PgDatabase(pg_database) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"{k:04d}", "n": k % 5} for k in range(100)])
        after: str | None = None
        seen: list[int] = []
        for step in (0.0, 0.0, 1.0, postgres_module.STATISTICS_FRESH_FOR):
            now[0] += step
            with storage.atomic():
                after = storage.change_matching(
                    "c", "LIVE", after=after, limit=10, filter=flt, change=DELETE_MATCHED
                ).cursor
            seen.append(len(looks))
    assert seen == [1, 2, 2, 3]
