"""Task stores: the memory and SQLite implementations keep the same contract."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.errors import StorageError
from taskengine.storage import MemoryStorage
from taskengine.storage._database import Database
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import Failure, RawOptions, Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore, SQLiteTaskStore, TaskStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_task(n: int) -> Task:
    """A NEW task number ``n`` with raw options."""
    return Task(
        id=f"t{n:04d}",
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0 + timedelta(seconds=n),
    )


def finished(task: Task, at: datetime) -> Task:
    """``task`` run and COMPLETED at ``at`` with a 1-hour retention."""
    running = task.started(at, 3).with_batch(
        2, 1, [Failure("WDE0075", "bad", {"itemId": "x"})], "c"
    )
    return running.finished(TaskStatus.COMPLETED, at, timedelta(hours=1))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    """Each task store implementation, fresh."""
    if request.param == "memory":
        yield MemoryTaskStore()
    else:
        sqlite_store = SQLiteTaskStore(tmp_path / "tasks.db")
        yield sqlite_store
        sqlite_store.close()


def test_insert_get_save_roundtrip(store: TaskStore) -> None:
    """A stored task comes back equal (JSON fields and checkpoint), and save replaces it."""
    task = make_task(1)
    store.insert(task)
    assert store.get(task.id) == task
    done = finished(task, T0)
    store.save(done)
    back = store.get(task.id)
    assert back is not None
    assert back.to_json() == done.to_json()
    assert back.checkpoint == "c"
    assert store.get("missing") is None
    assert len(store) == 1


def test_duplicate_insert_is_refused(store: TaskStore) -> None:
    """Inserting an id twice raises ValueError and keeps the first."""
    store.insert(make_task(1))
    with pytest.raises(ValueError, match="already stored"):
        store.insert(make_task(1))
    assert len(store) == 1


def test_page_is_newest_first(store: TaskStore) -> None:
    """page() lists by creation order, newest first, with the total; saves keep the order."""
    for n in range(5):
        store.insert(make_task(n))
    store.save(finished(make_task(0), T0))
    tasks, total = store.page(2, 1)
    assert [t.id for t in tasks] == ["t0003", "t0002"]
    assert total == 5
    assert store.page(10, 4)[0][0].id == "t0000"
    assert store.page(10, 9) == ([], 5)


def test_unfinished_expired_and_delete(store: TaskStore) -> None:
    """unfinished() lists NEW/RUNNING oldest first; expired() the finished ones whose
    expiry passed; delete removes."""
    for n in range(4):
        store.insert(make_task(n))
    store.save(finished(make_task(1), T0))
    store.save(make_task(2).started(T0, 1))
    assert [t.id for t in store.unfinished()] == ["t0000", "t0002", "t0003"]
    assert store.expired(T0 + timedelta(hours=1), 10) == ["t0001"]
    assert store.expired(T0 + timedelta(minutes=59), 10) == []
    assert store.delete(["t0001", "t0003", "nope"]) == 2
    assert len(store) == 2
    assert store.get("t0001") is None


def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    """A SQLite task store keeps tasks (and checkpoints) across close and reopen."""
    path = tmp_path / "tasks.db"
    first = SQLiteTaskStore(path)
    task = make_task(7).started(T0, 10).with_batch(4, 0, [], "i0004")
    first.insert(task)
    first.close()
    second = SQLiteTaskStore(str(path))
    try:
        back = second.get(task.id)
        assert back == task
        assert back is not None
        assert back.checkpoint == "i0004"
    finally:
        second.close()


def test_sqlite_store_shares_a_storage_database(tmp_path: Path) -> None:
    """Built on a SQLiteStorage (or its Database), the store shares its transactions."""
    storage = SQLiteStorage(tmp_path / "all.db")
    try:
        on_storage = SQLiteTaskStore(storage)
        on_database = SQLiteTaskStore(storage.database)
        assert on_storage.shares_transactions_with(storage)
        assert on_database.shares_transactions_with(storage)
        assert not on_storage.shares_transactions_with(MemoryStorage())
        on_storage.close()  # not owned: the storage stays usable
        storage.list_collections()
    finally:
        storage.close()


def test_memory_store_shares_nothing() -> None:
    """The memory store never claims shared transactions."""
    assert not MemoryTaskStore().shares_transactions_with(MemoryStorage())


def test_sqlite_store_rejects_bad_sources(tmp_path: Path) -> None:
    """A non-path source is a TypeError; a non-SQLite file is a StorageError."""
    with pytest.raises(TypeError):
        SQLiteTaskStore(42)
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError):
        SQLiteTaskStore(bogus)


def test_sqlite_store_on_closed_database_raises_storage_error(tmp_path: Path) -> None:
    """Using a store whose database is closed raises StorageError, not sqlite3 errors."""
    database = Database(tmp_path / "x.db")
    store = SQLiteTaskStore(database)
    database.close()
    with pytest.raises(StorageError):
        store.get("t")


@given(
    st.lists(st.sampled_from(["insert", "finish", "delete"]), max_size=40),
    st.integers(1, 10),
    st.integers(0, 12),
)
def test_memory_store_matches_a_list_model(ops: list[str], limit: int, offset: int) -> None:
    """For any insert/finish/delete sequence, page() equals slicing a reversed list model."""
    store = MemoryTaskStore()
    model: list[Task] = []
    n = 0
    for op in ops:
        if op == "insert":
            task = make_task(n)
            n += 1
            store.insert(task)
            model.append(task)
        elif op == "finish" and model:
            done = finished(model[0], T0) if not model[0].is_finished else model[0]
            store.save(done)
            model[0] = done
        elif op == "delete" and model:
            victim = model.pop(len(model) // 2)
            assert store.delete([victim.id]) == 1
    tasks, total = store.page(limit, offset)
    assert total == len(model) == len(store)
    assert tasks == model[::-1][offset : offset + limit]
    assert store.unfinished() == [t for t in model if not t.is_finished]


def test_memory_store_returns_to_near_empty_after_tasks_are_deleted() -> None:
    """After 20k tasks are stored and deleted, the store holds almost no memory."""
    import gc
    import tracemalloc

    store = MemoryTaskStore()
    tasks = [finished(make_task(n), T0) for n in range(20_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for task in tasks:
            store.insert(task)
        full = tracemalloc.get_traced_memory()[0] - before
        store.delete([task.id for task in tasks])
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == 0
    assert full > 1_000_000  # the index really held the tasks
    assert after < full // 50, (full, after)


@attrs.frozen
class DatedOptions:
    """Typed options holding a datetime, as a filter may."""

    collection: str
    when: datetime

    def to_json(self) -> dict[str, Any]:
        """camelCase JSON with the datetime itself (no wrapper)."""
        return {"dataCollectionId": self.collection, "filter": {"at": {"$lt": self.when}}}


def test_sqlite_rows_keep_dates_in_options_as_date_wrappers(tmp_path: Path) -> None:
    """A datetime in typed options reads back as {"$date": ISO}, the form parsers accept."""
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        task = attrs.evolve(make_task(1), options=DatedOptions("things", when))
        store.insert(task)
        back = store.get(task.id)
        assert back is not None
        assert back.options == RawOptions(
            "things",
            {"dataCollectionId": "things", "filter": {"at": {"$lt": {"$date": when.isoformat()}}}},
        )
    finally:
        store.close()


def test_sqlite_saves_of_a_running_task_follow_every_change(tmp_path: Path) -> None:
    """Saving batch after batch stores each new counter, failure, checkpoint and options."""
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        task = make_task(1).started(T0, 10)
        store.insert(task)
        for k in range(3):
            task = task.with_batch(1, 1, [Failure("WDE0075", f"bad {k}", {"itemId": k})], f"c{k}")
            store.save(task)
            assert store.get(task.id) == task
        task = task.with_batch(2, 0, [], "c9")
        store.save(task)
        assert store.get(task.id) == task
        other = RawOptions("others", {"dataCollectionId": "others"})
        task = attrs.evolve(task, options=other)
        store.save(task)
        assert store.get(task.id) == task
        done = task.finished(TaskStatus.COMPLETED, T0, timedelta(hours=1))
        store.save(done)
        assert store.get(task.id) == done
    finally:
        store.close()


def test_sqlite_row_that_is_not_a_task_raises_storage_error(tmp_path: Path) -> None:
    """A damaged row (an unknown status) is a StorageError naming the problem, not a crash."""
    path = tmp_path / "tasks.db"
    store = SQLiteTaskStore(path)
    try:
        store.insert(make_task(1))
        with store.transaction() as conn:
            conn.execute("UPDATE taskengine_tasks SET status = 'PAUSED'")
        with pytest.raises(StorageError, match="cannot be read back"):
            store.get("t0001")
    finally:
        store.close()


def test_new_owner_ids_name_host_and_process_and_differ() -> None:
    """new_owner_id() is host:pid:8-hex, and two calls never give the same id."""
    import os
    import re
    import socket

    from taskengine.taskstore import new_owner_id

    first, second = new_owner_id(), new_owner_id()
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{8}}", first)
    assert first != second


def test_lease_lost_is_a_runtime_error_with_its_fields() -> None:
    """LeaseLost carries task id, owner and token, is a RuntimeError, and pickles whole."""
    import pickle

    import taskengine
    from taskengine.errors import LeaseLost, TaskEngineError

    error = LeaseLost("t1", "host:1:abcd0123", 7)
    assert isinstance(error, TaskEngineError)
    assert isinstance(error, RuntimeError)
    assert "'t1'" in str(error)
    assert "lease 7" in str(error)
    back = pickle.loads(pickle.dumps(error))
    assert (back.task_id, back.owner, back.token) == ("t1", "host:1:abcd0123", 7)
    assert taskengine.LeaseLost is LeaseLost
    assert taskengine.Lease.__module__ == "taskengine._lease"


def test_leases_stay_out_of_the_task_and_its_json(store: TaskStore) -> None:
    """Claiming, renewing and releasing never change the stored task or its JSON."""
    task = make_task(1)
    store.insert(task)
    lease = store.claim(task.id, "engine-a", T0, timedelta(seconds=30))
    assert lease is not None
    assert store.get(task.id) == task
    store.renew(lease, T0, timedelta(seconds=60))
    store.release(lease)
    back = store.get(task.id)
    assert back == task
    assert back is not None
    assert back.to_json() == task.to_json()
    assert not any("lease" in key.lower() for key in back.to_json())


def test_expired_is_earliest_first_bounded_and_follows_changes(store: TaskStore) -> None:
    """expired(now, limit) lists finished tasks whose expiresAt <= now, earliest first,
    at most ``limit``; a re-save with another expiry moves a task, delete removes it."""
    for n in range(6):
        store.insert(make_task(n))
    # Finished at T0 + 5 min, 4 min, ... : expiry order is the reverse of creation order.
    for n in range(5):
        store.save(finished(make_task(n), T0 + timedelta(minutes=5 - n)))
    expiry = T0 + timedelta(hours=1)
    assert store.expired(expiry + timedelta(minutes=5), 10) == [
        "t0004",
        "t0003",
        "t0002",
        "t0001",
        "t0000",
    ]
    assert store.expired(expiry + timedelta(minutes=5), 2) == ["t0004", "t0003"]
    assert store.expired(expiry + timedelta(minutes=5), 0) == []
    # Boundary: due at exactly its expiresAt, not a millisecond before.
    assert store.expired(expiry + timedelta(minutes=1), 10) == ["t0004"]
    assert store.expired(expiry + timedelta(minutes=1) - timedelta(milliseconds=1), 10) == []
    # Saved again with a later finish (another retention), it moves to its new place.
    store.save(finished(make_task(4), T0 + timedelta(minutes=10)))
    assert store.expired(expiry + timedelta(minutes=5), 10) == ["t0003", "t0002", "t0001", "t0000"]
    store.delete(["t0002"])
    assert store.expired(expiry + timedelta(minutes=10), 10) == ["t0003", "t0001", "t0000", "t0004"]
