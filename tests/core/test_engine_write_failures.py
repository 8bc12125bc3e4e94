"""A storage error in the middle of a batch never applies a change twice (issue 10, item 4).

The adapters here wrap a bundled one the way the README's custom-adapter example does
(``__getattr__`` delegation) and make chosen write calls fail after writing part of
their batch. With rollback (``atomic_rolls_back``) the failed batch is undone and retried
whole; without it the engine settles the batch (reads back, writes only the rest).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_engine import CountExecutor, count_type, make_storage, spec

from taskengine.engine import TaskEngine
from taskengine.errors import StorageError
from taskengine.storage import Environment, MemoryStorage, SQLiteStorage, Storage, WriteResult
from taskengine.task import Task, TaskStatus
from taskengine.taskstore import Lease, MemoryTaskStore, SQLiteTaskStore, TaskStore

EDIT = {
    "type": "EDIT_FIELD_DATA",
    "editFieldDataOptions": {
        "dataCollectionId": "Items",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
    },
}
DELETE = {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "Items"}}


class HalfFailing:
    """A README-style wrapping adapter whose chosen write calls fail part-way.

    Write calls are numbered from 1. Call ``fail_at`` (and, when ``persistent``, every
    later one) writes the first ``fraction`` of its batch, then raises ``StorageError``.
    """

    def __init__(
        self, inner: Storage, fail_at: int, *, persistent: bool = False, fraction: float = 0.5
    ) -> None:
        self._inner = inner
        self.fail_at = fail_at
        self.persistent = persistent
        self.fraction = fraction
        self.calls = 0

    def __getattr__(self, name: str) -> Any:  # every other Storage method is the inner one's
        return getattr(self._inner, name)

    def _fails(self) -> bool:
        self.calls += 1
        return self.calls == self.fail_at or (self.persistent and self.calls > self.fail_at)

    def replace_items(
        self, collection: str, environment: Environment | str, items: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        """Replace, or replace a part and fail."""
        if self._fails():
            part = list(items)[: int(len(items) * self.fraction)]
            self._inner.replace_items(collection, environment, part)
            raise StorageError("connection lost in the middle of a batch")
        return self._inner.replace_items(collection, environment, items)

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete, or delete a part and fail."""
        if self._fails():
            part = list(ids)[: int(len(ids) * self.fraction)]
            self._inner.delete_items(collection, environment, part)
            raise StorageError("connection lost in the middle of a batch")
        return self._inner.delete_items(collection, environment, ids)


class NoRollback(HalfFailing):
    """The same adapter, but its atomic() cannot roll back (and it says so)."""

    atomic_rolls_back = False

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """No transaction: every write call stands on its own."""
        return contextlib.nullcontext()


def make_inner(backend: str, n: int) -> Storage:
    """A storage of ``backend`` with ``n`` items, each with ``tags: ["a"]``."""
    inner: Storage = MemoryStorage() if backend == "memory" else SQLiteStorage(":memory:")
    inner.create_collection("Items")
    inner.insert_items("Items", "LIVE", [{"_id": f"i{k:05d}", "tags": ["a"]} for k in range(n)])
    return inner


def store_for(backend: str, storage: Any) -> TaskStore:
    """The memory task store, or a SQLite one sharing the items' database."""
    return MemoryTaskStore() if backend == "memory" else SQLiteTaskStore(storage)


def run_task(storage: Any, task_store: TaskStore, spec: Mapping[str, Any], **settings: Any) -> Task:
    """Run one task to its end with no retry delay; return it."""
    engine = TaskEngine(storage, task_store=task_store, retry_delay=0, **settings)
    task = engine.create_task(spec)
    engine.run_until_idle()
    return engine.get_task(task.id)


def x_counts(storage: Storage) -> list[int]:
    """How many times each item got ``addItems: ["x"]``, in ``_id`` order."""
    return [item["tags"].count("x") for item in storage.find("Items", "LIVE")]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Both bundled adapters (SQLite with the task store in the same database)."""
    return str(request.param)


def test_rollback_failure_once_changes_every_item_once(backend: str) -> None:
    """Rollback adapter, one mid-batch failure: COMPLETED, every item changed exactly once."""
    inner = make_inner(backend, 5000)
    storage = HalfFailing(inner, fail_at=3)
    done = run_task(storage, store_for(backend, storage), EDIT, batch_size=500)
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed) == (5000, 0)
    assert x_counts(inner) == [1] * 5000


def test_rollback_persistent_failure_counts_what_was_written(backend: str) -> None:
    """Rollback adapter, persistent failure: FAILED, counters == items written, none twice."""
    inner = make_inner(backend, 5000)
    storage = HalfFailing(inner, fail_at=3, persistent=True)
    done = run_task(storage, store_for(backend, storage), EDIT, batch_size=500)
    assert done.status is TaskStatus.FAILED
    assert done.failures[-1].code == "WDE0054"
    assert done.items_succeeded == 1000
    assert x_counts(inner) == [1] * 1000 + [0] * 4000


def test_no_rollback_failure_once_is_settled_without_reapplying(backend: str) -> None:
    """No-rollback adapter, one mid-batch failure: COMPLETED, every item changed once."""
    inner = make_inner(backend, 5000)
    storage = NoRollback(inner, fail_at=3)
    done = run_task(storage, store_for(backend, storage), EDIT, batch_size=500)
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed) == (5000, 0)
    assert x_counts(inner) == [1] * 5000


def test_no_rollback_persistent_failure_counts_what_was_written(backend: str) -> None:
    """No-rollback adapter, persistent failure: FAILED, counters match the stored data."""
    inner = make_inner(backend, 5000)
    storage = NoRollback(inner, fail_at=3, persistent=True)
    done = run_task(storage, store_for(backend, storage), EDIT, batch_size=500)
    counts = x_counts(inner)
    assert done.status is TaskStatus.FAILED
    assert done.failures[-1].code == "WDE0054"
    assert max(counts) == 1
    assert done.items_succeeded == sum(counts) > 1000  # the batch's written part counts
    assert done.items_failed == 0


def test_no_rollback_delete_failure_counts_every_deleted_item(backend: str) -> None:
    """No-rollback adapter, a delete failing mid-batch: every deleted item counted once."""
    inner = make_inner(backend, 2000)
    storage = NoRollback(inner, fail_at=2)
    done = run_task(storage, store_for(backend, storage), DELETE, batch_size=500)
    assert done.status is TaskStatus.COMPLETED
    assert (done.items_succeeded, done.items_failed) == (2000, 0)
    assert inner.count("Items", "LIVE").value == 0


class SaveFailsOnce(MemoryTaskStore):
    """A task store whose ``fail_at``-th save fails (after the batch's items committed)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.saves = 0

    def save(self, task: Task, fence: Lease | None = None, *, now: datetime | None = None) -> None:
        """Save, except the chosen one."""
        self.saves += 1
        if self.saves == self.fail_at:
            raise StorageError("task store unreachable")
        super().save(task, fence, now=now)


def test_task_save_failure_after_the_batch_committed_is_not_reapplied() -> None:
    """A task save failing after a batch's items committed never re-applies the batch."""
    storage = make_inner("memory", 50)
    done = run_task(storage, SaveFailsOnce(fail_at=3), EDIT, batch_size=10)
    assert done.status is TaskStatus.COMPLETED
    assert done.items_succeeded == 50
    assert x_counts(storage) == [1] * 50


@given(
    backend=st.sampled_from(["memory", "sqlite"]),
    rolls_back=st.booleans(),
    kind=st.sampled_from(["edit", "delete"]),
    n=st.integers(min_value=1, max_value=30),
    batch_size=st.integers(min_value=1, max_value=8),
    fail_at=st.integers(min_value=1, max_value=12),
    persistent=st.booleans(),
    fraction=st.sampled_from([0.0, 0.3, 0.5, 0.99, 1.0]),
    max_retries=st.integers(min_value=0, max_value=3),
)
def test_any_failure_point_changes_each_item_at_most_once(
    backend: str,
    rolls_back: bool,
    kind: str,
    n: int,
    batch_size: int,
    fail_at: int,
    persistent: bool,
    fraction: float,
    max_retries: int,
) -> None:
    """Whatever write call fails, once or for good: items change at most once, counted."""
    inner = make_inner(backend, n)
    wrapper = HalfFailing if rolls_back else NoRollback
    storage = wrapper(inner, fail_at, persistent=persistent, fraction=fraction)
    spec = EDIT if kind == "edit" else DELETE
    done = run_task(
        storage, store_for(backend, storage), spec, batch_size=batch_size, max_retries=max_retries
    )
    if kind == "edit":
        counts = x_counts(inner)
        assert max(counts) <= 1
        changed = sum(counts)
    else:
        changed = n - inner.count("Items", "LIVE").value
    assert done.items_succeeded == changed
    assert done.items_failed == 0
    assert (done.status is TaskStatus.COMPLETED) == (changed == n)
    if not persistent and max_retries >= 1:
        assert done.status is TaskStatus.COMPLETED


class GoesDark(NoRollback):
    """No rollback; after the failing write, reads fail too (the storage is gone)."""

    def get_item(self, collection: str, environment: Environment | str, item_id: str) -> Any:
        """Fail once the write has failed."""
        if self.calls >= self.fail_at:
            raise StorageError("storage unreachable")
        return self._inner.get_item(collection, environment, item_id)


def test_unverifiable_batch_fails_and_says_so() -> None:
    """When a failed batch cannot even be read back, the task FAILS saying how many."""
    inner = make_inner("memory", 30)
    storage = GoesDark(inner, fail_at=2, persistent=True)
    done = run_task(storage, MemoryTaskStore(), EDIT, batch_size=10)
    assert done.status is TaskStatus.FAILED
    assert done.items_succeeded == 10
    assert "10 left unwritten or unverified" in done.failures[-1].description
    assert max(x_counts(inner)) == 1


def test_executor_hears_of_items_written_before_the_engine_gave_up() -> None:
    """After giving up on a batch, the executor's committed() gets the items written."""
    inner = make_storage(30)
    executor = CountExecutor()
    storage = NoRollback(inner, fail_at=2, persistent=True)
    engine = TaskEngine(storage, task_types=[count_type(executor)], batch_size=10, retry_delay=0)
    task = engine.create_task(spec())
    engine.run_until_idle()
    done = engine.get_task(task.id)
    changed = [item["_id"] for item in inner.find("things", "LIVE") if item.get("n")]
    assert done.status is TaskStatus.FAILED
    assert done.items_succeeded == len(changed) > 10
    assert [i for batch in executor.committed_batches for i in batch.done] == changed
