"""Task ownership: memory and SQLite stores agree with a model under random claims, renewals,
releases, expiries and fenced saves; processes racing on one SQLite file never share a claim."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
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

    def pick(self, index: int) -> Lease:
        """One of the leases handed out so far."""
        leases = sorted(self.issued.values(), key=lambda lease: (lease.task_id, lease.token))
        return leases[index % len(leases)]

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

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(0, 1000), millis=st.sampled_from([-1, 0, 1]))
    def advance_to_expiry(self, index: int, millis: int) -> None:
        """Time reaches a lease's end, or a millisecond either side (the boundary cases)."""
        target = self.pick(index).expires_at + timedelta(milliseconds=millis)
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


CLAIMER = textwrap.dedent(
    """
    import json, random, sys
    from datetime import datetime, timedelta, timezone
    from taskengine.taskstore import SQLiteTaskStore

    path, owner, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lease = timedelta(seconds=60)
    store = SQLiteTaskStore(path)
    ids = store.claimable(t0, 1000)
    random.Random(seed).shuffle(ids)
    print("ready", len(ids), flush=True)
    sys.stdin.readline()
    claims = []
    for now in (t0, t0 + lease + timedelta(seconds=1)):
        for task_id in ids:
            got = store.claim(task_id, owner, now, lease)
            if got is not None:
                claims.append([task_id, got.token])
    store.close()
    print(json.dumps(claims), flush=True)
    """
)


def test_processes_racing_to_claim_never_share_a_token(tmp_path: Path) -> None:
    """Four processes claim 40 tasks on one file, twice (the second round after expiry):
    each (task, token) is won by exactly one process, and tokens go 1 then 2."""
    path = tmp_path / "tasks.db"
    store = SQLiteTaskStore(path)
    ids = [f"task-{n:03d}" for n in range(40)]
    for task_id in ids:
        store.insert(make_task(task_id))
    store.close()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path), f"proc-{k}", str(k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        for child in children:  # every child has opened the file and listed the tasks
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
            assert ready, "a claiming process never said it was ready"
            assert child.stdout.readline().split() == ["ready", "40"]
        for child in children:  # then all of them start at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert child.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    winners: dict[tuple[str, int], list[int]] = {}
    for k, claims in enumerate(reports):
        for task_id, token in claims:
            winners.setdefault((task_id, token), []).append(k)
    assert sorted(winners) == sorted((task_id, token) for task_id in ids for token in (1, 2))
    assert all(len(procs) == 1 for procs in winners.values()), winners
    store = SQLiteTaskStore(path)
    try:
        for task_id in ids:
            lease = store.lease_of(task_id)
            assert lease is not None
            assert (lease.owner, lease.token) == (f"proc-{winners[(task_id, 2)][0]}", 2)
    finally:
        store.close()
