"""Sliced tasks (docs/slices.md): one task run as ``_id`` ranges, one combined progress.

Every test decides by what it reads from the stores (progress, checkpoints, counters),
never by sleeping; the engines run synchronously (``run_until_idle``).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskengine import MemoryStorage, SQLiteStorage, SQLiteTaskStore, TaskEngine
from taskengine.clock import ManualClock
from taskengine.errors import InvalidRequest, TaskNotFound
from taskengine.storage.base import Storage
from taskengine.task import Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore, TaskStore

# Ids with characters whose order trips up byte-wise or locale-wise orders: NUL, a
# separator, non-ASCII (two-, three- and four-byte UTF-8), and the slice marker itself.
ODD = ["a", "b", "Z", "~", "\x00", "\x01", "é", "\u20ac", "\U0001f600", " "]
NAMES = itertools.count()
ids = st.lists(st.text(alphabet=ODD, min_size=1, max_size=4), min_size=0, max_size=40, unique=True)


def populate(storage: Storage, item_ids: list[str]) -> None:
    storage.create_collection("Items")
    items = [
        {"_id": item_id, "n": k % 7, "tags": "bad" if k % 5 == 4 else ["t"]}
        for k, item_id in enumerate(item_ids)
    ]
    if items:
        storage.insert_items("Items", "LIVE", items)


def spec(kind: str, threshold: int) -> dict[str, Any]:
    if kind == "delete":
        options = {"dataCollectionId": "Items", "filter": {"n": {"$gt": threshold}}}
        return {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": options}
    if kind == "copy":
        options = {"dataCollectionId": "Items", "sourceFieldKey": "n", "targetFieldKey": "m"}
        return {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": options}
    options = {
        "dataCollectionId": "Items",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
        "filter": {"n": {"$lte": threshold}},
    }
    return {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": options}


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


class ScanPathStorage(MemoryStorage):
    """Memory whose batches take the engine's scan path (it overrides ``scan``)."""

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        return super().scan(*args, **kwargs)


def open_pair(kind: str, folder: Path, name: str) -> tuple[Storage, TaskStore]:
    if kind == "memory":
        return MemoryStorage(), MemoryTaskStore()
    if kind == "memory-scan":
        return ScanPathStorage(), MemoryTaskStore()
    storage = SQLiteStorage(folder / f"{name}.db")
    return storage, SQLiteTaskStore(storage)


def run_task(
    kind: str, folder: Path, name: str, item_ids: list[str], task_spec: Any, slices: int
) -> tuple[Task, list[dict[str, Any]], TaskEngine]:
    storage, store = open_pair(kind, folder, name)
    populate(storage, item_ids)
    engine = TaskEngine(storage, task_store=store, clock=ManualClock(), batch_size=3)
    task = engine.create_task(task_spec, slices=slices)
    engine.run_until_idle()
    return engine.get_task(task.id), list(storage.find("Items", "LIVE")), engine


def outcome(task: Task) -> tuple[Any, ...]:
    return (
        task.status,
        task.items_succeeded,
        task.items_failed,
        sorted(str(f.data) for f in task.failures),
        task.estimated_item_count,
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    item_ids=ids,
    kind=st.sampled_from(["delete", "copy", "edit"]),
    threshold=st.integers(0, 6),
    slices=st.integers(1, 8),
    store=st.sampled_from(["memory", "memory-scan", "sqlite"]),
)
def test_a_sliced_task_ends_as_the_unsliced_one(
    folder: Path, item_ids: list[str], kind: str, threshold: int, slices: int, store: str
) -> None:
    """Every item processed exactly once: the same items and counters as unsliced."""
    task_spec = spec(kind, threshold)
    tag = str(next(NAMES))
    plain, plain_items, _ = run_task(store, folder, f"p{tag}", item_ids, task_spec, 1)
    sliced, sliced_items, engine = run_task(store, folder, f"s{tag}", item_ids, task_spec, slices)
    assert sliced_items == plain_items
    assert outcome(sliced) == outcome(plain)
    assert sliced.status is TaskStatus.COMPLETED
    if sliced.is_sliced:
        assert len(item_ids) >= slices == sliced.slices
        parts = [engine.get_task(part_id) for part_id in sliced.slice_ids]
        assert all(part.status is TaskStatus.COMPLETED for part in parts)
        assert sum(p.items_succeeded + p.items_failed for p in parts) == (
            sliced.items_succeeded + sliced.items_failed
        )
    page = engine.list_tasks()
    assert [t.id for t in page.tasks] == [sliced.id]
    assert page.total == 1


class CancellingStorage(MemoryStorage):
    """Runs ``hook`` once, at the ``at``-th scan (the scan path: it overrides ``scan``)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.scans = 0
        self.hook: Callable[[], None] = lambda: None

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        self.scans += 1
        if self.scans == self.at:
            self.hook()
        return super().scan(*args, **kwargs)


@pytest.mark.parametrize("at", [2, 5, 9])
def test_cancel_mid_way_counts_exactly_the_items_changed(at: int) -> None:
    """A cancel while slices run (read in progress: some items done, some not) ends the
    task FAILED/CANCELLED with counters equal to the items changed."""
    storage = CancellingStorage(at)
    populate(storage, [f"{k:03d}" for k in range(40)])
    engine = TaskEngine(storage, clock=ManualClock(), batch_size=3)
    task = engine.create_task(spec("copy", 0), slices=4)
    seen: list[Task] = []

    def cancel() -> None:
        progress = engine.get_task(task.id)
        assert progress.status is TaskStatus.RUNNING
        assert progress.items_succeeded < 40
        seen.append(engine.cancel_task(task.id))

    storage.hook = cancel
    engine.run_until_idle()
    assert seen
    assert seen[0].cancel_requested
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "CANCELLED"
    changed = sum(1 for item in storage.find("Items", "LIVE") if "m" in item)
    assert done.items_succeeded == changed < 40
    assert done.items_failed == 0
    parts = [engine.get_task(part_id) for part_id in done.slice_ids]
    assert all(part.is_finished for part in parts)


class Crash(BaseException):
    """The engine's process dies here."""


class CrashingStorage(SQLiteStorage):
    """Crashes at the ``at``-th scan (inside the batch's transaction, which rolls back)."""

    at = 0
    scans = 0

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        type(self).scans += 1
        if type(self).scans == self.at:
            raise Crash
        return super().scan(*args, **kwargs)


def test_a_slice_whose_engine_died_resumes_from_its_checkpoint(folder: Path) -> None:
    """Another engine takes the dead engine's slice over from its last checkpoint: every
    item gets ``x`` exactly once (addItems is not idempotent)."""
    path = folder / "crash.db"
    seed = SQLiteStorage(path)
    populate(seed, [f"{k:03d}" for k in range(30)])
    seed.close()
    clock = ManualClock()
    first = CrashingStorage(path)
    CrashingStorage.at, CrashingStorage.scans = 7, 0  # the third batch of slice 1
    engine = TaskEngine(first, task_store=SQLiteTaskStore(first), clock=clock, batch_size=4)
    task = engine.create_task(spec("edit", 6), slices=2)
    with pytest.raises(Crash):
        engine.run_until_idle()
    mid = [t for t in SQLiteTaskStore(first).unfinished() if t.parent == task.id]
    assert any(t.status is TaskStatus.RUNNING and t.items_succeeded > 0 for t in mid)
    CrashingStorage.at = -1
    clock.advance(60)  # the dead engine's leases run out
    second = SQLiteStorage(path)
    other = TaskEngine(second, task_store=SQLiteTaskStore(second), clock=clock, batch_size=4)
    other.run_until_idle()
    done = other.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED
    items = list(second.find("Items", "LIVE"))
    assert all(item["tags"] in ("bad", ["t", "x"]) for item in items)
    assert done.items_succeeded == sum(1 for item in items if item["tags"] == ["t", "x"])
    assert done.items_failed == sum(1 for item in items if item["tags"] == "bad")


def test_slices_are_hidden_from_lists_and_swept_with_their_task() -> None:
    """Lists and totals show the task only; a slice reads by id; retention removes the
    slices with their task, and the task's view never breaks."""
    clock = ManualClock()
    storage = MemoryStorage()
    populate(storage, [f"{k:03d}" for k in range(20)])
    store = MemoryTaskStore()
    engine = TaskEngine(
        storage, task_store=store, clock=clock, batch_size=3, retention=timedelta(hours=1)
    )
    plain = engine.create_task(spec("copy", 0))
    sliced = engine.create_task(spec("copy", 0), slices=3)
    assert sliced.to_json()["slices"] == 3
    engine.run_until_idle()
    page = engine.list_tasks()
    assert [t.id for t in page.tasks] == [sliced.id, plain.id]
    assert page.total == 2 == len(store)
    done = engine.get_task(sliced.id)
    assert (done.items_succeeded, done.estimated_item_count) == (20, 20)
    assert done.to_json()["slices"] == 3
    part = engine.get_task(f"{sliced.id}~1")
    assert part.to_json()["sliceOf"] == sliced.id
    assert part.expires_at is None
    with pytest.raises(InvalidRequest, match="task_id"):
        engine.cancel_task(part.id)
    store.delete([f"{sliced.id}~0"])  # a slice gone early: the ended task keeps its totals
    assert engine.get_task(sliced.id) == done
    assert engine.get_progress(sliced.id).processed_elements == 20
    clock.advance(2 * 3600)
    assert engine.sweep() == 2
    for task_id in (sliced.id, *done.slice_ids):
        assert store.get(task_id) is None
        with pytest.raises(TaskNotFound):
            engine.get_task(task_id)


def test_a_failing_slice_cancels_its_siblings_and_fails_the_task() -> None:
    """A slice failing on its own (the collection dropped) asks the others to cancel;
    the task ends FAILED with that slice's failure."""
    storage = CancellingStorage(3)
    populate(storage, [f"{k:03d}" for k in range(30)])
    storage.hook = lambda: storage.drop_collection("Items")
    engine = TaskEngine(storage, clock=ManualClock(), batch_size=3)
    task = engine.create_task(spec("copy", 0), slices=3)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "WDE0025"
    assert not done.failures[1:] or all(f.code != "CANCELLED" for f in done.failures[1:])


@pytest.mark.parametrize("bad", [0, 65, -1, True, 2.0, "2", None])
def test_bad_slices_are_refused_and_nothing_is_stored(bad: Any) -> None:
    """``slices`` must be an integer in 1..64 (a bool is not): InvalidRequest naming it."""
    engine = TaskEngine(MemoryStorage(), clock=ManualClock())
    with pytest.raises(InvalidRequest, match="slices") as caught:
        engine.create_task(spec("copy", 0), slices=bad)
    assert [v.field for v in caught.value.violations] == ["slices"]
    assert engine.list_tasks().total == 0


def test_a_crash_between_start_and_slices_is_repaired() -> None:
    """A started sliced task with slices missing (its engine died after the start) gets
    them back, the same ranges, from the housekeeping, and completes exactly."""
    storage = MemoryStorage()
    populate(storage, [f"{k:03d}" for k in range(12)])
    store = MemoryTaskStore()
    engine = TaskEngine(storage, task_store=store, clock=ManualClock(), batch_size=5)
    task = engine.create_task(spec("edit", 6), slices=3)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    # The same task again, as if its engine died right after the start was saved.
    storage2 = MemoryStorage()
    populate(storage2, [f"{k:03d}" for k in range(12)])
    store2 = MemoryTaskStore()
    started = done.__class__(
        id=task.id,
        type=done.type,
        options_key=done.options_key,
        options=done.options,
        created_at=done.created_at,
        status=TaskStatus.RUNNING,
        started_at=done.started_at,
        estimated_item_count=12,
        slices=done.slices,
        split=done.split,
    )
    store2.insert(started)
    again = TaskEngine(storage2, task_store=store2, clock=ManualClock(), batch_size=5)
    assert store2.claimable(again.clock.now(), 10) == []
    again.run_until_idle()
    repaired = again.get_task(task.id)
    assert (repaired.status, repaired.items_succeeded, repaired.items_failed) == (
        done.status,
        done.items_succeeded,
        done.items_failed,
    )
    assert list(storage2.find("Items", "LIVE")) == list(storage.find("Items", "LIVE"))


def test_a_cancel_before_the_slices_exist_ends_them_when_they_are_inserted() -> None:
    """Cancelled after its start but before its slices were inserted (its engine died
    between): the repair inserts them, ends them at once, and the task ends CANCELLED
    with nothing changed."""
    storage = MemoryStorage()
    populate(storage, [f"{k:03d}" for k in range(12)])
    store = MemoryTaskStore()
    engine = TaskEngine(storage, task_store=store, clock=ManualClock(), batch_size=5)
    created = engine.create_task(spec("copy", 0), slices=3)
    started = created.started(engine.clock.now(), 12)
    store.save(attrs.evolve(started, slices=3, split=("003", "007")))
    cancelled = engine.cancel_task(created.id)
    assert cancelled.status is TaskStatus.RUNNING
    assert cancelled.cancel_requested
    engine.run_until_idle()
    done = engine.get_task(created.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "CANCELLED"
    assert (done.items_succeeded, done.items_failed) == (0, 0)
    assert not any("m" in item for item in storage.find("Items", "LIVE"))
    parts = [engine.get_task(part_id) for part_id in done.slice_ids]
    assert [part.status for part in parts] == [TaskStatus.FAILED] * 3
    assert Task.from_json(parts[0].to_json()).parent == created.id


@pytest.mark.parametrize("store", ["memory", "memory-scan", "sqlite"])
@pytest.mark.parametrize("kind", ["delete", "copy", "edit", "publish"])
def test_every_slice_works_within_its_own_range(folder: Path, store: str, kind: str) -> None:
    # Totals alone would not show a slice running past its end (a delete or a copy done
    # twice counts the same): every slice must have done its share, and no more.
    task_spec = (
        spec(kind, 3)
        if kind != "publish"
        else {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Items",
                "filter": {"n": {"$gte": 0}},
                "operation": "SET_DRAFT_STATUS",
            },
        }
    )
    storage, task_store = open_pair(store, folder, f"share-{kind}")
    populate(storage, [f"{k:03d}" for k in range(80)])
    if kind == "publish":
        storage.drop_collection("Items")
        storage.create_collection("Items", publish_plugin=True)
        storage.insert_items("Items", "LIVE", [{"_id": f"{k:03d}", "n": k % 7} for k in range(80)])
    engine = TaskEngine(storage, task_store=task_store, clock=ManualClock(), batch_size=3)
    task = engine.create_task(task_spec, slices=4)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.COMPLETED, done.to_json()
    shares = [engine.get_task(f"{task.id}~{i}").items_succeeded for i in range(4)]
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == done.items_succeeded
    assert max(shares) <= 2 * min(shares), shares  # about equal ranges
