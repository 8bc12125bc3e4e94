"""Task ownership: memory and SQLite stores agree with a model under random claims, renewals,
releases, expiries, fenced and unfenced saves and updates, and leads and resigns of roles
(processes sharing one file: test_taskstore_processes.py)."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taskengine.clock import ManualClock
from taskengine.errors import LeaseLost
from taskengine.task import RawOptions, Task, TaskStatus
from taskengine.taskstore import Lease, MemoryTaskStore, SQLiteTaskStore, TaskStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TASKS = ("t0", "t1", "t2")
OWNERS = ("a", "b", "c")
ROLES = ("scheduler", "t0")  # "t0" names a task too: roles and tasks are separate namespaces
RETENTION = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def make_task(task_id: str) -> Task:
    """A NEW task with raw options (what the SQLite store reads back)."""
    return Task(
        id=task_id,
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0,
    )


def ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch (the stores' lease precision)."""
    return (moment - EPOCH) // MS


@attrs.define
class Held:
    """The model's view of one task's lease: owner (None: free), token, expiry in ms."""

    owner: str | None = None
    token: int = 0
    expires: int = 0


class Ownership(RuleBasedStateMachine):
    """Several owners drive both stores; every answer must match the other store and the model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(T0)
        self.folder = tempfile.mkdtemp(prefix="ownership-")
        self.stores: tuple[TaskStore, TaskStore] = (
            MemoryTaskStore(),
            SQLiteTaskStore(Path(self.folder) / "tasks.db"),
        )
        self.tasks = {task_id: make_task(task_id) for task_id in TASKS}
        self.held = {task_id: Held() for task_id in TASKS}
        self.issued: dict[tuple[str, str, int], Lease] = {}
        self.leaders = {role: Held() for role in ROLES}
        self.led: dict[tuple[str, str, int], Lease] = {}  # the latest end of each term
        for task in self.tasks.values():
            for store in self.stores:
                store.insert(task)

    def teardown(self) -> None:
        """Close the SQLite store and remove its folder."""
        self.stores[1].close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def now_ms(self) -> int:
        """The clock's time in epoch milliseconds."""
        return ms(self.clock.now())

    def current(self, lease: Lease, *, unexpired: bool) -> bool:
        """Whether the model holds ``lease`` as the task's current (and unexpired) lease."""
        held = self.held[lease.task_id]
        return (
            held.owner == lease.owner
            and held.token == lease.token
            and (not unexpired or self.now_ms() < held.expires)
        )

    def pick(self, index: int, leases: dict[tuple[str, str, int], Lease] | None = None) -> Lease:
        """One of the task leases (or of ``leases``) handed out so far."""
        found = sorted((self.issued if leases is None else leases).items())
        return found[index % len(found)][1]

    @rule(task_id=st.sampled_from(TASKS), owner=st.sampled_from(OWNERS), seconds=st.integers(1, 60))
    def claim(self, task_id: str, owner: str, seconds: int) -> None:
        """Both stores grant the same lease exactly when the model says the task is free."""
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        got = [store.claim(task_id, owner, now, duration) for store in self.stores]
        assert got[0] == got[1]
        held = self.held[task_id]
        free = not self.tasks[task_id].is_finished and (
            held.owner is None or held.expires <= self.now_ms()
        )
        if not free:
            assert got[0] is None
            return
        assert got[0] == Lease(task_id, owner, held.token + 1, now + duration)
        assert got[0].token > max(
            (key[2] for key in self.issued if key[0] == task_id), default=0
        )  # tokens strictly increase
        self.held[task_id] = Held(owner, held.token + 1, ms(now + duration))
        self.issued[(task_id, owner, held.token + 1)] = got[0]

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000), seconds=st.integers(1, 60))
    def renew(self, index: int, seconds: int) -> None:
        """A renewal succeeds in both stores exactly for a current, unexpired lease."""
        lease = self.pick(index)
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        outcomes: list[Lease | None] = []
        for store in self.stores:
            try:
                outcomes.append(store.renew(lease, now, duration))
            except LeaseLost:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1]
        if self.current(lease, unexpired=True):
            assert outcomes[0] == attrs.evolve(lease, expires_at=now + duration)
            self.held[lease.task_id].expires = ms(now + duration)
        else:
            assert outcomes[0] is None

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000))
    def release(self, index: int) -> None:
        """A release frees the task exactly when the lease is current; else it is a no-op."""
        lease = self.pick(index)
        for store in self.stores:
            store.release(lease)
        if self.current(lease, unexpired=False):
            self.held[lease.task_id].owner = None

    @rule(millis=st.sampled_from([0, 1, 999, 1000, 15_000, 30_000, 61_000]))
    def advance(self, millis: int) -> None:
        """Time passes (leases expire)."""
        self.clock.advance(timedelta(milliseconds=millis))

    @precondition(lambda self: self.issued or self.led)
    @rule(index=st.integers(0, 1000), millis=st.sampled_from([-1, 0, 1]))
    def advance_to_expiry(self, index: int, millis: int) -> None:
        """Time reaches a lease's end, or a millisecond either side (the boundary cases)."""
        target = self.pick(index, {**self.issued, **self.led}).expires_at + millis * MS
        if target > self.clock.now():
            self.clock.set(target)

    def next_version(self, task: Task, finish: bool) -> Task:
        """The task after one more step of work (started, a batch, or finished)."""
        now = self.clock.now()
        if task.status is TaskStatus.NEW:
            return task.started(now, 10)
        if task.is_finished:
            return attrs.evolve(task, items_succeeded=task.items_succeeded + 1)
        if finish:
            return task.finished(TaskStatus.COMPLETED, now, RETENTION)
        return task.with_batch(1, 0, [], f"c{task.items_succeeded + 1:04d}")

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000), finish=st.booleans())
    def fenced_save(self, index: int, finish: bool) -> None:
        """A fenced save is written exactly for a current, unexpired fence; else nothing."""
        lease = self.pick(index)
        before = self.tasks[lease.task_id]
        after = self.next_version(before, finish)
        refused = []
        for store in self.stores:
            try:
                store.save(after, lease, now=self.clock.now())
            except LeaseLost:
                refused.append(store)
        assert len(refused) in (0, 2)
        if self.current(lease, unexpired=True):
            assert not refused
            self.tasks[lease.task_id] = after
        else:
            assert refused  # an expired or superseded owner's save is always refused
            for store in self.stores:
                assert store.get(lease.task_id) == before  # and changes nothing

    @rule(task_id=st.sampled_from(TASKS), finish=st.booleans())
    def plain_save(self, task_id: str, finish: bool) -> None:
        """A save without a fence is always written and leaves the lease as it was."""
        after = self.next_version(self.tasks[task_id], finish)
        for store in self.stores:
            store.save(after)
        self.tasks[task_id] = after

    @rule(task_id=st.sampled_from(TASKS), finish=st.booleans(), keep=st.booleans())
    def plain_update(self, task_id: str, finish: bool, keep: bool) -> None:
        """An update without a fence always runs: change sees the stored task, and what it
        returns (or, for None, the stored task) is stored and returned."""
        before = self.tasks[task_id]
        seen: list[Task] = []

        def change(current: Task) -> Task | None:
            seen.append(current)
            return None if keep else self.next_version(current, finish)

        got = [store.update(task_id, change) for store in self.stores]
        expected = before if keep else self.next_version(before, finish)
        assert seen == [before, before]
        assert got == [expected, expected]
        self.tasks[task_id] = expected

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000), finish=st.booleans())
    def fenced_update(self, index: int, finish: bool) -> None:
        """A fenced update runs exactly for a current, unexpired fence; else LeaseLost,
        change is not called and nothing is written."""
        lease = self.pick(index)
        before = self.tasks[lease.task_id]
        seen: list[Task] = []

        def change(current: Task) -> Task:
            seen.append(current)
            return self.next_version(current, finish)

        got: list[Task | None] = []
        for store in self.stores:
            try:
                got.append(store.update(lease.task_id, change, lease, now=self.clock.now()))
            except LeaseLost:
                got.append(None)
        if self.current(lease, unexpired=True):
            after = self.next_version(before, finish)
            assert seen == [before, before]
            assert got == [after, after]
            self.tasks[lease.task_id] = after
        else:
            assert seen == []
            assert got == [None, None]

    @rule(role=st.sampled_from(ROLES), owner=st.sampled_from(OWNERS), seconds=st.integers(1, 60))
    def lead(self, role: str, owner: str, seconds: int) -> None:
        """Both stores grant the same leadership exactly when nobody else leads live: a new
        term (token + 1) when nobody leads live, a renewal (same token) for the live leader."""
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        got = [store.lead(role, owner, now, duration) for store in self.stores]
        assert got[0] == got[1]
        held = self.leaders[role]
        live = held.owner is not None and self.now_ms() < held.expires
        if live and held.owner != owner:
            assert got[0] is None
            return
        token = held.token if live else held.token + 1
        assert got[0] == Lease(role, owner, token, now + duration)
        self.leaders[role] = Held(owner, token, ms(now + duration))
        self.led[(role, owner, token)] = got[0]

    @precondition(lambda self: self.led)
    @rule(index=st.integers(0, 1000))
    def resign(self, index: int) -> None:
        """A resign frees the role exactly when the lease is its current term; else a no-op."""
        lease = self.pick(index, self.led)
        for store in self.stores:
            store.resign(lease)
        held = self.leaders[lease.task_id]
        if held.owner == lease.owner and held.token == lease.token:
            held.owner = None

    @invariant()
    def leaders_agree_with_the_model(self) -> None:
        """Every role's leadership is the same in both stores and the model."""
        memory, sqlite = self.stores
        for role, held in self.leaders.items():
            expected = (
                None
                if held.owner is None
                else Lease(role, held.owner, held.token, EPOCH + held.expires * MS)
            )
            assert memory.leader_of(role) == sqlite.leader_of(role) == expected

    @invariant()
    def stores_agree_with_the_model(self) -> None:
        """Tasks, leases and the claimable list are the same in both stores and the model."""
        memory, sqlite = self.stores
        now = self.clock.now()
        for task_id, task in self.tasks.items():
            assert memory.get(task_id) == sqlite.get(task_id) == task
            held = self.held[task_id]
            expected = (
                None
                if held.owner is None
                else Lease(task_id, held.owner, held.token, EPOCH + held.expires * MS)
            )
            assert memory.lease_of(task_id) == sqlite.lease_of(task_id) == expected
        claimable = [
            task_id
            for task_id in TASKS
            if not self.tasks[task_id].is_finished
            and (self.held[task_id].owner is None or self.held[task_id].expires <= self.now_ms())
        ]
        assert memory.claimable(now, 10) == sqlite.claimable(now, 10) == claimable

    @invariant()
    def at_most_one_live_owner(self) -> None:
        """Of every lease ever handed out, at most one per task passes the fence check."""
        now = self.clock.now()
        for store in self.stores:
            live: dict[str, int] = {}
            for lease in self.issued.values():
                try:
                    store.check_fence(lease, now)
                except LeaseLost:
                    continue
                live[lease.task_id] = live.get(lease.task_id, 0) + 1
            assert all(count == 1 for count in live.values()), live


Ownership.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestOwnership = Ownership.TestCase
