"""SQLiteStorage and Database: durability, format versions, errors, transactions, threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.errors import DuplicateItem, InvalidItem, StorageError
from taskengine.storage import MemoryStorage, SQLiteStorage
from taskengine.storage._database import FORMAT_VERSION, Database
from taskengine.storage.sqlite import COMPONENT, SCHEMA_VERSION


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_items_survive_reopening(tmp_path: Path) -> None:
    """Collections and items (dates included) are still there after close and reopen."""
    path = tmp_path / "db.sqlite"
    when = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=timezone.utc)
    with SQLiteStorage(path) as storage:
        storage.create_collection("c", sandbox=True, publish_plugin=True)
        storage.insert_items("c", "SANDBOX", [{"_id": "a", "when": when, "n": [1, 2.5]}])
    with SQLiteStorage(path) as storage:
        assert storage.collection_info("c").publish_plugin is True
        assert storage.get_item("c", "SANDBOX", "a") == {"_id": "a", "when": when, "n": [1, 2.5]}


def test_file_is_wal_and_versioned(tmp_path: Path) -> None:
    """A new file uses WAL, has PRAGMA user_version = FORMAT_VERSION and a storage schema row."""
    path = tmp_path / "db.sqlite"
    SQLiteStorage(path).close()
    conn = _raw(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
        rows = conn.execute("SELECT component, version FROM taskengine_schema").fetchall()
        assert (COMPONENT, SCHEMA_VERSION) in rows
    finally:
        conn.close()


def test_newer_format_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file with a newer user_version raises StorageError and is not modified."""
    path = tmp_path / "db.sqlite"
    conn = _raw(path)
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStorage(path)
    conn = _raw(path)
    try:
        tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION + 1
    finally:
        conn.close()


def test_newer_component_schema_is_refused(tmp_path: Path) -> None:
    """A storage schema version newer than the code raises StorageError."""
    path = tmp_path / "db.sqlite"
    SQLiteStorage(path).close()
    conn = _raw(path)
    conn.execute("UPDATE taskengine_schema SET version = 99 WHERE component = ?", (COMPONENT,))
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        SQLiteStorage(path)


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    """A file that is not SQLite raises StorageError chained from sqlite3, file untouched."""
    path = tmp_path / "junk.db"
    content = b"this is not a database" * 100
    path.write_bytes(content)
    with pytest.raises(StorageError) as info:
        SQLiteStorage(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    """A path in a missing directory, or a directory, raises StorageError."""
    for path in (tmp_path / "missing" / "db.sqlite", tmp_path):
        with pytest.raises(StorageError, match="cannot open"):
            SQLiteStorage(path)


def test_closed_storage_raises_clearly() -> None:
    """Every call on a closed storage raises StorageError saying it is closed."""
    storage = SQLiteStorage(":memory:")
    storage.create_collection("c")
    storage.close()
    storage.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: storage.create_collection("d"),
        lambda: storage.collection_info("c"),
        storage.list_collections,
        lambda: storage.drop_collection("c"),
        lambda: storage.scan("c", "LIVE"),
        lambda: storage.count("c", "LIVE"),
        lambda: storage.insert_items("c", "LIVE", [{"_id": "a"}]),
        lambda: storage.get_item("c", "LIVE", "a"),
        lambda: storage.find("c", "LIVE"),
        lambda: storage.replace_items("c", "LIVE", [{"_id": "a"}]),
        lambda: storage.delete_items("c", "LIVE", ["a"]),
        lambda: storage.atomic().__enter__(),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="is closed"):
            call()


def test_driver_errors_become_storage_errors() -> None:
    """A sqlite3 error inside a storage call surfaces as StorageError from the original."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        with storage.database.transaction() as conn:
            conn.execute("DROP TABLE taskengine_items")
        with pytest.raises(StorageError) as info:
            storage.scan("c", "LIVE")
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(StorageError) as info:
            storage.insert_items("c", "LIVE", [{"_id": "a"}])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_atomic_commits_with_another_components_writes() -> None:
    """Item writes and another component's rows in one atomic() block commit together."""
    with SQLiteStorage(":memory:") as storage:
        db = storage.database
        db.ensure_schema("other", 1, ["CREATE TABLE other (k TEXT PRIMARY KEY)"])
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a", "v": 0}])
        with storage.atomic(), db.transaction() as conn:
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
            conn.execute("INSERT INTO other VALUES ('checkpoint')")
        with db.read() as conn:
            assert conn.execute("SELECT k FROM other").fetchall() == [("checkpoint",)]
        assert storage.get_item("c", "LIVE", "a") == {"_id": "a", "v": 1}


def test_atomic_rolls_back_everything_on_error() -> None:
    """An exception in atomic() undoes the item writes and the other component's writes."""
    with SQLiteStorage(":memory:") as storage:
        db = storage.database
        db.ensure_schema("other", 1, ["CREATE TABLE other (k TEXT PRIMARY KEY)"])
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a", "v": 0}])

        def batch() -> None:
            with storage.atomic():
                storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
                storage.delete_items("c", "LIVE", ["a"])
                storage.insert_items("c", "LIVE", [{"_id": "b"}])
                with db.transaction() as conn:
                    conn.execute("INSERT INTO other VALUES ('checkpoint')")
                raise RuntimeError("crash")

        with pytest.raises(RuntimeError, match="crash"):
            batch()
        with db.read() as conn:
            assert conn.execute("SELECT k FROM other").fetchall() == []
        assert list(storage.find("c", "LIVE")) == [{"_id": "a", "v": 0}]


def test_caught_error_inside_atomic_undoes_only_its_call() -> None:
    """A DuplicateItem caught inside atomic() undoes that insert only; the rest commits."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a"}])
        with storage.atomic():
            storage.insert_items("c", "LIVE", [{"_id": "b"}])
            with pytest.raises(DuplicateItem):
                storage.insert_items("c", "LIVE", [{"_id": "c"}, {"_id": "a"}])
            with pytest.raises(InvalidItem):
                storage.replace_items("c", "LIVE", [{"_id": "a", "v": float("nan")}])
        assert [item["_id"] for item in storage.find("c", "LIVE")] == ["a", "b"]


def test_shared_database_is_not_closed_by_the_storage() -> None:
    """A storage built on a shared Database leaves it open on close()."""
    with Database(":memory:") as db:
        storage = SQLiteStorage(db)
        storage.create_collection("c")
        storage.close()
        assert not db.closed
        assert SQLiteStorage(db).list_collections()[0].name == "c"
    assert db.closed


def test_two_connections_on_one_file_from_threads(tmp_path: Path) -> None:
    """Two storages on one file written from two threads at once keep every write."""
    path = tmp_path / "shared.db"
    with SQLiteStorage(path) as setup:
        setup.create_collection("c")
    start = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with SQLiteStorage(path, timeout=30) as storage:
                start.wait()
                for n in range(40):
                    storage.insert_items("c", "LIVE", [{"_id": f"{name}{n:02d}"}])
                    with storage.atomic():
                        storage.replace_items("c", "LIVE", [{"_id": f"{name}{n:02d}", "n": n}])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    with SQLiteStorage(path) as storage:
        items = list(storage.find("c", "LIVE"))
    assert len(items) == 80
    assert all(item["n"] == int(item["_id"][1:]) for item in items)


def test_reads_wait_for_another_threads_transaction() -> None:
    """Another thread's read blocks while a transaction is open and sees only its result."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a", "v": 0}])
        inside = threading.Event()
        seen: list[object] = []

        def reader() -> None:
            inside.wait(timeout=30)
            seen.append(storage.get_item("c", "LIVE", "a"))

        thread = threading.Thread(target=reader)
        thread.start()
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
            inside.set()
            thread.join(timeout=0.2)  # bounded: the reader must still be blocked
            assert thread.is_alive()
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 2}])
        thread.join(timeout=30)
        assert seen == [{"_id": "a", "v": 2}]


def test_scan_with_huge_limit_and_filter_skips() -> None:
    """A limit above SQLite's integer range works; a filtered page's cursor skips rejects."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"{n}", "n": n} for n in range(5)])
        assert len(storage.scan("c", "LIVE", limit=2**80).items) == 5
        page = storage.scan("c", "LIVE", limit=3, filter=lambda doc: doc["n"] == 4)
        assert page.items == []
        assert page.cursor == "2"
        page = storage.scan("c", "LIVE", after=page.cursor, limit=3, filter=lambda d: d["n"] == 4)
        assert page.items == [{"_id": "4", "n": 4}]
        assert page.cursor is None


def test_database_nested_transactions() -> None:
    """Database.transaction nests: a caught inner failure undoes only the inner writes."""
    with Database(":memory:") as db:
        with db.transaction() as conn:
            conn.execute("CREATE TABLE t (v INTEGER)")
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (1)")

            def failing() -> None:
                with db.transaction() as inner:
                    inner.execute("INSERT INTO t VALUES (2)")
                    raise ZeroDivisionError

            with pytest.raises(ZeroDivisionError):
                failing()
            with pytest.raises(StorageError) as info, db.transaction() as inner:
                inner.execute("INSERT INTO missing VALUES (3)")
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with db.read() as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]


_IDS = st.sampled_from([f"k{n}" for n in range(8)])


@given(stored=st.sets(_IDS, max_size=5), batch=st.lists(_IDS, min_size=1, max_size=8))
def test_duplicate_named_is_the_first_offender(stored: set[str], batch: list[str]) -> None:
    """Both adapters name the first batch id that is stored or repeated, and change nothing."""
    offenders = [i for n, i in enumerate(batch) if i in stored or i in batch[:n]]
    with SQLiteStorage(":memory:") as sqlite:
        for storage in (sqlite, MemoryStorage()):
            storage.create_collection("c")
            storage.insert_items("c", "LIVE", [{"_id": i, "old": True} for i in sorted(stored)])
            if not offenders:
                assert storage.insert_items("c", "LIVE", [{"_id": i} for i in batch]) == len(batch)
                continue
            with pytest.raises(DuplicateItem) as raised:
                storage.insert_items("c", "LIVE", [{"_id": i, "new": True} for i in batch])
            assert raised.value.item_id == offenders[0]
            assert list(storage.find("c", "LIVE")) == [
                {"_id": i, "old": True} for i in sorted(stored)
            ]


def test_duplicate_inside_an_atomic_block_keeps_the_earlier_writes() -> None:
    """A duplicate caught inside atomic() undoes only the failed insert, naming the real id."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "s"}])
        with storage.atomic():
            storage.insert_items("c", "LIVE", [{"_id": "before"}])
            with pytest.raises(DuplicateItem) as raised:
                storage.insert_items("c", "LIVE", [{"_id": "a"}, {"_id": "b"}, {"_id": "s"}])
            assert raised.value.item_id == "s"
        assert [item["_id"] for item in storage.find("c", "LIVE")] == ["before", "s"]


def test_replace_and_delete_report_missing_ids_in_batch_order() -> None:
    """replace/delete report done and missing ids in the order given, each once."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"i{n:04d}"} for n in range(1200)])
        ids = [f"i{n:04d}" for n in range(1199, -1, -2)] + ["zz", "i0001", "zz"]
        result = storage.replace_items("c", "LIVE", [{"_id": i, "v": 1} for i in ids])
        assert result.done == tuple(f"i{n:04d}" for n in range(1199, -1, -2))
        assert result.missing == ("zz",)
        result = storage.delete_items("c", "LIVE", ids)
        assert result.done == tuple(f"i{n:04d}" for n in range(1199, -1, -2))
        assert result.missing == ("zz",)
        assert storage.count("c", "LIVE").value == 600
