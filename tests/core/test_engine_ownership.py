"""Several engines on one task store (threads of one process): leases, fencing, takeover.

The same rules as for processes (tests/core/test_ownership_processes.py), on both task
stores: each task runs in one engine at a time, a stale owner commits nothing, a cancel
written by any engine reaches the owner, and a task whose owner is gone is taken over
from its last checkpoint, exactly once per item.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from reference_tasks import edit_task

from taskengine import (
    InvalidRequest,
    MemoryStorage,
    MemoryTaskStore,
    SQLiteStorage,
    SQLiteTaskStore,
    TaskEngine,
    TaskStatus,
)
from taskengine.clock import ManualClock
from taskengine.storage.base import Storage, WriteResult
from taskengine.taskstore import TaskStore
from taskengine.tasktype import BatchChanges, Plan, TaskOptions, TaskType
from taskengine.tasktypes import default_task_types

WAIT = 30.0  # seconds: a bound for what should take milliseconds


class Gate:
    """An executor wrapper that can hold its engine between two batches."""

    def __init__(self, inner: Any, pause_after: int | None = None) -> None:
        self.inner = inner
        self.pause_after = pause_after
        self.batches = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        return self.inner.plan(options, storage)  # type: ignore[no-any-return]

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        return self.inner.apply(plan, items)  # type: ignore[no-any-return]

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        self.inner.committed(plan, changes, written)
        self.batches += 1
        if self.batches == self.pause_after:
            self.reached.set()
            assert self.release.wait(WAIT), "the test never released the gate"


def edit_executor() -> Any:
    return next(t for t in default_task_types().task_types if t.name == "EDIT_FIELD_DATA").executor


def gated_types(gate: Gate | None = None) -> list[TaskType]:
    """The built-in task types, EDIT_FIELD_DATA's executor wrapped by ``gate``."""
    types = list(default_task_types().task_types)
    if gate is None:
        return types
    return [attrs.evolve(t, executor=gate) if t.name == "EDIT_FIELD_DATA" else t for t in types]


def fill(storage: Storage, count: int) -> None:
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"{i:05d}", "tags": []} for i in range(count)])


def tags(storage: Storage) -> list[list[str]]:
    return [item["tags"] for item in storage.find("Items", "LIVE")]


Pair = Callable[[], tuple[Storage, TaskStore]]


@pytest.fixture(params=["memory", "sqlite"])
def open_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    """Opens the storage and task store an engine uses: one shared pair in memory, or a
    new connection to one SQLite file each time (as separate processes would have)."""
    opened: list[Any] = []
    if request.param == "memory":
        shared = (MemoryStorage(), MemoryTaskStore())

        def pair() -> tuple[Storage, TaskStore]:
            return shared

    else:
        path = tmp_path / "shared.db"

        def pair() -> tuple[Storage, TaskStore]:
            storage = SQLiteStorage(path)
            store = SQLiteTaskStore(storage)
            opened.append(storage)
            return storage, store

    yield pair
    for storage in opened:
        storage.close()


def engine_on(pair: Pair, gate: Gate | None = None, **settings: Any) -> TaskEngine:
    storage, store = pair()
    settings.setdefault("batch_size", 10)
    return TaskEngine(storage, task_store=store, task_types=gated_types(gate), **settings)


def test_two_started_engines_run_each_task_once(open_pair: Pair) -> None:
    """Tasks created through either engine run once each: every item gets every value once."""
    first = engine_on(open_pair, workers=2, poll_interval=0.02)
    second = engine_on(open_pair, workers=2, poll_interval=0.02)
    fill(first.storage, 200)
    first.start()
    second.start()
    try:
        created = [
            (first if n % 2 else second).create_task(
                edit_task(fieldKey="tags", operations={"addItems": [f"v{n}"]})
            )
            for n in range(8)
        ]
        finished = [first.wait(task.id, WAIT) for task in created]
    finally:
        first.stop()
        second.stop()
    assert [task.status for task in finished] == [TaskStatus.COMPLETED] * 8
    assert [task.items_succeeded for task in finished] == [200] * 8
    assert all(sorted(item) == sorted(f"v{n}" for n in range(8)) for item in tags(first.storage))


def test_a_stale_owner_commits_nothing(open_pair: Pair) -> None:
    """An owner paused past its lease is fenced out: the new owner finishes the task from
    the last checkpoint, and the old one's next batch is refused and rolled back."""
    clock = ManualClock()
    gate = Gate(edit_executor(), pause_after=2)
    stale = engine_on(open_pair, gate, clock=clock, lease=timedelta(seconds=30))
    fill(stale.storage, 100)
    task = stale.create_task(edit_task(operations={"addItems": ["z"]}))
    outcome: list[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(stale.run_until_idle()))
    runner.start()
    try:
        assert gate.reached.wait(WAIT)
        lease = stale.task_store.lease_of(task.id)
        assert lease is not None
        assert lease.owner == stale.owner
        clock.advance(timedelta(seconds=31))  # the paused owner's lease runs out
        successor = engine_on(open_pair, clock=clock)
        assert successor.run_until_idle() == 1
        taken = successor.task_store.lease_of(task.id)
        done = successor.get_task(task.id)
        assert done.status is TaskStatus.COMPLETED
        assert done.items_succeeded == 100
    finally:
        gate.release.set()
        runner.join(WAIT)
    assert not runner.is_alive()
    assert outcome == [1]  # the stale run ended (its task counted as run), having written nothing
    assert taken is None  # released when the successor's run ended
    after = stale.get_task(task.id)
    assert (after.status, after.items_succeeded, after.items_failed) == (
        TaskStatus.COMPLETED,
        100,
        0,
    )
    assert tags(stale.storage) == [["z"]] * 100


def test_a_cancel_from_another_engine_reaches_the_owner(open_pair: Pair) -> None:
    """A RUNNING task cancelled through another engine ends FAILED/CANCELLED after the
    owner's next batch, with counters equal to the items it changed."""
    gate = Gate(
        edit_executor(),
        pause_after=1,
    )
    owner = engine_on(open_pair, gate)
    other = engine_on(open_pair)
    fill(owner.storage, 100)
    task = owner.create_task(edit_task(operations={"addItems": ["z"]}))
    owner.start()
    try:
        assert gate.reached.wait(WAIT)
        requested = other.cancel_task(task.id)
        assert requested.status is TaskStatus.RUNNING
        assert requested.cancel_requested
        gate.release.set()
        ended = owner.wait(task.id, WAIT)
    finally:
        gate.release.set()
        owner.stop()
    assert ended.status is TaskStatus.FAILED
    assert [f.code for f in ended.failures] == ["CANCELLED"]
    changed = sum(1 for item in tags(owner.storage) if item == ["z"])
    assert ended.items_succeeded == changed
    assert 10 <= changed < 100


def test_a_new_task_cancelled_elsewhere_never_starts(open_pair: Pair) -> None:
    """A NEW task cancelled by another engine is never started by its creator."""
    creator = engine_on(open_pair)
    other = engine_on(open_pair)
    fill(creator.storage, 20)
    task = creator.create_task(edit_task(operations={"addItems": ["z"]}))
    cancelled = other.cancel_task(task.id)
    assert cancelled.status is TaskStatus.FAILED
    creator.run_until_idle()
    after = creator.get_task(task.id)
    assert after.status is TaskStatus.FAILED
    assert after.started_at is None
    assert tags(creator.storage) == [[]] * 20


def test_a_task_leased_by_someone_else_waits_for_the_lease(open_pair: Pair) -> None:
    """A live lease keeps other engines off the task; once it runs out the task is taken
    over without any user code."""
    clock = ManualClock()
    engine = engine_on(open_pair, clock=clock, lease=timedelta(seconds=5))
    fill(engine.storage, 30)
    task = engine.create_task(edit_task(operations={"addItems": ["z"]}))
    held = engine.task_store.claim(task.id, "elsewhere:1:dead", clock.now(), timedelta(seconds=5))
    assert held is not None
    assert engine.run_until_idle() == 0
    assert engine.get_task(task.id).status is TaskStatus.NEW
    clock.advance(timedelta(seconds=5))
    assert engine.run_until_idle() == 1
    done = engine.get_task(task.id)
    assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 30)


def test_a_started_engine_takes_over_an_expired_lease(open_pair: Pair) -> None:
    """A started engine notices, by polling, that a task's lease ran out, and runs it."""
    clock = ManualClock()
    engine = engine_on(open_pair, clock=clock, lease=timedelta(seconds=5), poll_interval=0.01)
    fill(engine.storage, 30)
    task = engine.create_task(edit_task(operations={"addItems": ["z"]}))
    assert engine.task_store.claim(task.id, "elsewhere:1:x", clock.now(), timedelta(seconds=5))
    engine.start()
    try:
        assert engine.wait(task.id, 0.2).status is TaskStatus.NEW  # the lease is live
        clock.advance(timedelta(seconds=6))
        done = engine.wait(task.id, WAIT)
    finally:
        engine.stop()
    assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 30)


def test_stop_releases_the_lease_for_the_next_engine(open_pair: Pair) -> None:
    """A stopped engine gives its task up at once: another engine goes on from the
    checkpoint without waiting for the lease to run out."""
    gate = Gate(
        edit_executor(),
        pause_after=2,
    )
    first = engine_on(open_pair, gate, lease=timedelta(hours=1))
    fill(first.storage, 100)
    task = first.create_task(edit_task(operations={"addItems": ["z"]}))
    first.start()
    assert gate.reached.wait(WAIT)
    stopper = threading.Thread(target=first.stop)
    stopper.start()
    gate.release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert first.task_store.lease_of(task.id) is None
    middle = first.get_task(task.id)
    assert middle.status is TaskStatus.RUNNING
    assert middle.items_succeeded == 20
    second = engine_on(open_pair, lease=timedelta(hours=1))
    assert second.run_until_idle() == 1
    done = second.get_task(task.id)
    assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 100)
    assert tags(first.storage) == [["z"]] * 100


def test_a_task_of_an_exited_process_is_taken_over_at_once(open_pair: Pair) -> None:
    """A lease held by a process of this host that has exited is released on start,
    however long it still had to run."""
    probe = subprocess.Popen(["true"])
    probe.wait()
    engine = engine_on(open_pair, lease=timedelta(hours=1))
    fill(engine.storage, 10)
    task = engine.create_task(edit_task(operations={"addItems": ["z"]}))
    dead_owner = f"{socket.gethostname()}:{probe.pid}:0000"
    assert engine.task_store.claim(task.id, dead_owner, engine.clock.now(), timedelta(hours=1))
    fresh = engine_on(open_pair, lease=timedelta(hours=1))
    assert fresh.run_until_idle() == 1
    assert fresh.get_task(task.id).status is TaskStatus.COMPLETED


def test_an_engine_that_does_not_adopt_runs_only_its_own_tasks(open_pair: Pair) -> None:
    """With ``adopt=False`` an engine leaves tasks it did not create alone."""
    creator = engine_on(open_pair)
    fill(creator.storage, 10)
    theirs = creator.create_task(edit_task(operations={"addItems": ["a"]}))
    loner = engine_on(open_pair, adopt=False)
    mine = loner.create_task(edit_task(operations={"addItems": ["b"]}))
    assert loner.run_until_idle() == 1
    assert loner.get_task(mine.id).status is TaskStatus.COMPLETED
    assert loner.get_task(theirs.id).status is TaskStatus.NEW
    assert creator.run_until_idle() == 1
    assert tags(creator.storage) == [["b", "a"]] * 10


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lease", timedelta(0)),
        ("lease", 30),
        ("poll_interval", 0),
        ("poll_interval", True),
        ("poll_interval", "1"),
        ("adopt", 1),
        ("owner", ""),
        ("owner", 7),
    ],
)
def test_ownership_settings_are_checked(setting: str, value: Any) -> None:
    """Bad ownership settings are refused, naming the setting."""
    with pytest.raises(InvalidRequest) as caught:
        TaskEngine(MemoryStorage(), **{setting: value})
    assert [v.field for v in caught.value.violations] == [setting]


def test_the_engine_names_its_owner_and_its_leases() -> None:
    """``owner`` is the engine's id in the store; ``owned()`` lists the tasks it holds."""
    gate = Gate(
        edit_executor(),
        pause_after=1,
    )
    storage = MemoryStorage()
    fill(storage, 20)
    engine = TaskEngine(storage, task_types=gated_types(gate), batch_size=5, owner="me:1:a")
    assert engine.owner == "me:1:a"
    task = engine.create_task(edit_task(operations={"addItems": ["z"]}))
    engine.start()
    try:
        assert gate.reached.wait(WAIT)
        assert engine.owned() == (task.id,)
        lease = engine.task_store.lease_of(task.id)
        assert lease is not None
        assert lease.owner == "me:1:a"
        assert lease.token == 1
    finally:
        gate.release.set()
        engine.wait(task.id, WAIT)
        engine.stop()
    assert engine.owned() == ()


class CountingService:
    """A service that counts its starts and ticks."""

    def __init__(self) -> None:
        self.starts = 0
        self.ticks = 0

    def start(self, storage: Storage) -> None:
        self.starts += 1

    def tick(self, now: datetime) -> datetime | None:
        self.ticks += 1
        return None


def test_a_service_runs_in_its_leader_only(open_pair: Pair) -> None:
    """Of two engines with the same service, only the leader starts and ticks it; when
    its leadership runs out, the other takes over (and starts it: a rebuild)."""
    clock = ManualClock()
    first = engine_on(open_pair, clock=clock, lease=timedelta(seconds=5))
    second = engine_on(open_pair, clock=clock, lease=timedelta(seconds=5))
    one, two = CountingService(), CountingService()
    first.register_service(one)
    second.register_service(two)
    first.run_until_idle()
    second.run_until_idle()
    assert (one.starts, one.ticks, two.starts, two.ticks) == (1, 1, 0, 0)
    first.run_until_idle()  # still the leader: ticked, not started again
    assert (one.starts, one.ticks) == (1, 2)
    clock.advance(timedelta(seconds=5))
    second.run_until_idle()
    first.run_until_idle()
    assert (one.starts, one.ticks, two.starts, two.ticks) == (1, 2, 1, 1)


def test_stopping_hands_the_services_over_at_once(open_pair: Pair) -> None:
    """A stopped engine resigns its services' leadership: another engine leads at once."""
    first = engine_on(open_pair, lease=timedelta(hours=1), tick_interval=0.01)
    second = engine_on(open_pair, lease=timedelta(hours=1))
    one, two = CountingService(), CountingService()
    first.register_service(one)
    second.register_service(two)
    first.start()
    try:
        deadline = time.monotonic() + WAIT
        while one.ticks == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # polls the tick counter, bounded by the deadline
    finally:
        first.stop()
    assert one.ticks > 0
    second.run_until_idle()
    assert (two.starts, two.ticks) == (1, 1)


def test_a_task_store_with_its_own_connection_to_the_items_file(tmp_path: Path) -> None:
    """Items and tasks in one file through two connections (not shared): the batch's task
    update waits for nothing the batch holds, and the task completes."""
    path = tmp_path / "one.db"
    with SQLiteStorage(path) as storage:
        store = SQLiteTaskStore(path)  # its own Database: no shared transactions
        try:
            assert not store.shares_transactions_with(storage)
            fill(storage, 50)
            engine = TaskEngine(storage, task_store=store, batch_size=10)
            task = engine.create_task(edit_task(operations={"addItems": ["z"]}))
            started = time.monotonic()
            assert engine.run_until_idle() == 1
            assert time.monotonic() - started < WAIT
            done = engine.get_task(task.id)
            assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 50)
            assert tags(storage) == [["z"]] * 50
        finally:
            store.close()


def test_a_service_led_by_an_exited_process_moves_at_once(open_pair: Pair) -> None:
    """A leader lease held by an exited process of this host is taken over on the next
    tick, however long it still had to run."""
    probe = subprocess.Popen(["true"])
    probe.wait()
    engine = engine_on(open_pair, lease=timedelta(hours=1))
    service = CountingService()
    engine.register_service(service)
    role = "service:test_engine_ownership.CountingService:0"
    dead = f"{socket.gethostname()}:{probe.pid}:0000"
    assert engine.task_store.lead(role, dead, engine.clock.now(), timedelta(hours=1))
    engine.run_until_idle()
    assert (service.starts, service.ticks) == (1, 1)
    leader = engine.task_store.leader_of(role)
    assert leader is not None
    assert leader.owner == engine.owner


class _SlowCount(MemoryStorage):
    """A storage whose count at task start lasts 90 s of a manual clock (three times
    half a 30 s lease), each step waiting until the engine renewed the task's lease."""

    def __init__(self, clock: ManualClock, store: MemoryTaskStore) -> None:
        super().__init__()
        self.clock = clock
        self.store = store
        self.task_id = ""

    def count(self, collection: str, environment: Any, filter: Any = None) -> Any:
        for _ in range(3):
            self.clock.advance(timedelta(seconds=15))
            deadline = time.monotonic() + 30
            while True:
                lease = self.store.lease_of(self.task_id)
                assert lease is not None
                if lease.expires_at - self.clock.now() > timedelta(seconds=15):
                    break  # renewed after the advance: a whole lease ahead again
                assert time.monotonic() < deadline, "the lease was never renewed"
                time.sleep(0.005)
        return super().count(collection, environment, filter)


def test_run_until_idle_renews_the_lease_while_a_long_count_runs() -> None:
    """run_until_idle has no owner thread, yet a count at task start longer than the
    lease keeps the task: its lease is renewed meanwhile and the task completes."""
    clock = ManualClock()
    store = MemoryTaskStore()
    storage = _SlowCount(clock, store)
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": str(n), "tags": []} for n in range(5)])
    engine = TaskEngine(
        storage, task_store=store, clock=clock, lease=timedelta(seconds=30), poll_interval=0.01
    )
    task = engine.create_task(edit_task())
    storage.task_id = task.id
    assert engine.run_until_idle() == 1
    done = engine.get_task(task.id)
    assert done.status.value == "COMPLETED"
    assert done.items_succeeded == 5
