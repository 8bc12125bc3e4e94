"""Task ownership: the memory, SQLite and PostgreSQL stores agree with a model under random
claims, renewals, releases, expiries, fenced and unfenced saves and updates, and leads and
resigns of roles (processes sharing one file or database: test_taskstore_processes.py,
test_pg_taskstore.py)."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

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
SETTINGS = settings(max_examples=60, stateful_step_count=40)
T = TypeVar("T")


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


def agreed(answers: list[T]) -> T:
    """The one answer every store gave (they must all give the same)."""
    assert all(answer == answers[0] for answer in answers), answers
    return answers[0]


@attrs.define
class Held:
    """The model's view of one task's lease: owner (None: free), token, expiry in ms."""

    owner: str | None = None
    token: int = 0
    expires: int = 0


class Ownership(RuleBasedStateMachine):
    """Several owners drive every store; every answer must match the other stores and the
    model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(T0)
        self.folder = tempfile.mkdtemp(prefix="ownership-")
        self.stores = self.make_stores()
        self.tasks = {task_id: make_task(task_id) for task_id in TASKS}
        self.held = {task_id: Held() for task_id in TASKS}
        self.issued: dict[tuple[str, str, int], Lease] = {}
        self.leaders = {role: Held() for role in ROLES}
        self.led: dict[tuple[str, str, int], Lease] = {}  # the latest end of each term
        for task in self.tasks.values():
            for store in self.stores:
                store.insert(task)

    def make_stores(self) -> list[TaskStore]:
        """Fresh, empty stores to drive: memory and SQLite (a subclass may add more)."""
        return [MemoryTaskStore(), SQLiteTaskStore(Path(self.folder) / "tasks.db")]

    def teardown(self) -> None:
        """Close the stores and remove the SQLite store's folder."""
        for store in self.stores:
            store.close()
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
        """Every store grants the same lease exactly when the model says the task is free."""
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        got = agreed([store.claim(task_id, owner, now, duration) for store in self.stores])
        held = self.held[task_id]
        free = not self.tasks[task_id].is_finished and (
            held.owner is None or held.expires <= self.now_ms()
        )
        if not free:
            assert got is None
            return
        assert got == Lease(task_id, owner, held.token + 1, now + duration)
        assert got.token > max(
            (key[2] for key in self.issued if key[0] == task_id), default=0
        )  # tokens strictly increase
        self.held[task_id] = Held(owner, held.token + 1, ms(now + duration))
        self.issued[(task_id, owner, held.token + 1)] = got

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000), seconds=st.integers(1, 60))
    def renew(self, index: int, seconds: int) -> None:
        """A renewal succeeds in every store exactly for a current, unexpired lease."""
        lease = self.pick(index)
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        outcomes: list[Lease | None] = []
        for store in self.stores:
            try:
                outcomes.append(store.renew(lease, now, duration))
            except LeaseLost:
                outcomes.append(None)
        renewed = agreed(outcomes)
        if self.current(lease, unexpired=True):
            assert renewed == attrs.evolve(lease, expires_at=now + duration)
            self.held[lease.task_id].expires = ms(now + duration)
        else:
            assert renewed is None

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
        assert len(refused) in (0, len(self.stores))
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
        assert seen == [before] * len(self.stores)
        assert got == [expected] * len(self.stores)
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
            assert seen == [before] * len(self.stores)
            assert got == [after] * len(self.stores)
            self.tasks[lease.task_id] = after
        else:
            assert seen == []
            assert got == [None] * len(self.stores)

    @rule(role=st.sampled_from(ROLES), owner=st.sampled_from(OWNERS), seconds=st.integers(1, 60))
    def lead(self, role: str, owner: str, seconds: int) -> None:
        """Every store grants the same leadership exactly when nobody else leads live: a new
        term (token + 1) when nobody leads live, a renewal (same token) for the live leader."""
        now, duration = self.clock.now(), timedelta(seconds=seconds)
        got = agreed([store.lead(role, owner, now, duration) for store in self.stores])
        held = self.leaders[role]
        live = held.owner is not None and self.now_ms() < held.expires
        if live and held.owner != owner:
            assert got is None
            return
        token = held.token if live else held.token + 1
        assert got == Lease(role, owner, token, now + duration)
        self.leaders[role] = Held(owner, token, ms(now + duration))
        self.led[(role, owner, token)] = got

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
        """Every role's leadership is the same in every store and the model."""
        for role, held in self.leaders.items():
            expected = (
                None
                if held.owner is None
                else Lease(role, held.owner, held.token, EPOCH + held.expires * MS)
            )
            assert [store.leader_of(role) for store in self.stores] == [expected] * len(self.stores)

    @invariant()
    def stores_agree_with_the_model(self) -> None:
        """Tasks, leases and the claimable list are the same in every store and the model."""
        now = self.clock.now()
        every = len(self.stores)
        for task_id, task in self.tasks.items():
            assert [store.get(task_id) for store in self.stores] == [task] * every
            held = self.held[task_id]
            expected = (
                None
                if held.owner is None
                else Lease(task_id, held.owner, held.token, EPOCH + held.expires * MS)
            )
            assert [store.lease_of(task_id) for store in self.stores] == [expected] * every
        claimable = [
            task_id
            for task_id in TASKS
            if not self.tasks[task_id].is_finished
            and (self.held[task_id].owner is None or self.held[task_id].expires <= self.now_ms())
        ]
        assert [store.claimable(now, 10) for store in self.stores] == [claimable] * every

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


Ownership.TestCase.settings = SETTINGS
TestOwnership = Ownership.TestCase


def test_postgres_agrees_with_memory_and_sqlite(pg_database: str) -> None:
    """The same machine with a PostgresTaskStore as a third store: on one database, emptied
    before each example, it answers every step as memory and SQLite do."""
    from taskengine import PostgresTaskStore
    from taskengine.storage._pgdatabase import PgDatabase

    with PgDatabase(pg_database) as database:
        PostgresTaskStore(database)  # creates the tables once

        class WithPostgres(Ownership):
            """Memory, SQLite and PostgreSQL."""

            def make_stores(self) -> list[TaskStore]:
                """The two stores of the base machine and a PostgreSQL one, emptied."""
                with database.transaction() as conn:
                    conn.execute("TRUNCATE taskengine_tasks, taskengine_leaders")
                return [*super().make_stores(), PostgresTaskStore(database)]

        run_state_machine_as_test(WithPostgres, settings=SETTINGS)
