"""The task-store conformance checks' parts, and the checks of task leases.

Each check is a plain function ``check(store, clock) -> None`` run on a fresh, empty task
store with a fresh :class:`~taskengine.clock.ManualClock`; it raises
:class:`~taskengine.testing.ConformanceError` naming the rule the store broke (the rules
are in the ``TaskStore`` docstring, taskengine/taskstore.py). The checks here are those of
claims, renewals, releases and fencing; ``_update_checks`` and ``_leader_checks`` hold the
rest, each registering with :func:`register`, and ``_taskstore_suite`` lists them all as
``TASKSTORE_CHECKS``. Nothing here imports pytest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import attrs

from taskengine.clock import ManualClock
from taskengine.errors import LeaseLost
from taskengine.task import Failure, RawOptions, Task, TaskStatus
from taskengine.taskstore import Lease, TaskStore
from taskengine.testing._checks import expect, expect_raises

__all__ = [
    "LEASE",
    "REGISTRY",
    "TaskStoreCheck",
    "TaskStoreFactory",
    "claim",
    "lost",
    "make_task",
    "register",
    "stored",
]

TaskStoreFactory = Callable[[], TaskStore]
"""Makes a fresh, empty task store."""

LEASE = timedelta(seconds=30)
"""The duration of every lease the checks take."""


@attrs.frozen
class TaskStoreCheck:
    """One named ownership rule and the function that checks it on a fresh task store."""

    name: str
    run: Callable[[TaskStore, ManualClock], None] = attrs.field(repr=False)

    @property
    def description(self) -> str:
        """The rule, in words (the check function's docstring)."""
        return (self.run.__doc__ or self.name).strip()


REGISTRY: list[TaskStoreCheck] = []
"""Every registered task-store check, in registration order."""


_CheckFunction = Callable[[TaskStore, ManualClock], None]


def register(fn: _CheckFunction) -> _CheckFunction:
    """Add ``fn`` to :data:`REGISTRY` as a check named after it (``check_`` removed)."""
    REGISTRY.append(TaskStoreCheck(fn.__name__.removeprefix("check_"), fn))
    return fn


def make_task(n: int, clock: ManualClock) -> Task:
    """A NEW task number ``n``, created at the clock's time, with raw options."""
    return Task(
        id=f"task-{n:04d}",
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=clock.now(),
    )


def stored(store: TaskStore, clock: ManualClock, count: int = 1) -> list[Task]:
    """``count`` new tasks (:func:`make_task` 0, 1, ...), inserted into ``store``."""
    tasks = [make_task(n, clock) for n in range(count)]
    for task in tasks:
        store.insert(task)
    return tasks


def claim(store: TaskStore, task_id: str, owner: str, clock: ManualClock) -> Lease:
    """A claim of a claimable task at the clock's time, for :data:`LEASE`; it must succeed."""
    lease = store.claim(task_id, owner, clock.now(), LEASE)
    expect(lease is not None, f"claim({task_id!r}, {owner!r}) of a claimable task returned None")
    assert lease is not None
    return lease


def lost(what: str, call: Callable[[], object]) -> None:
    """Require ``call()`` to raise ``LeaseLost`` (``what`` names the call in the failure)."""
    expect_raises(LeaseLost, what, call)


@register
def check_claim_grants_a_lease(store: TaskStore, clock: ManualClock) -> None:
    """A first claim returns token 1, the owner and now + duration; lease_of returns it."""
    (task,) = stored(store, clock)
    expect(store.lease_of(task.id) is None, "a task never leased has a lease")
    lease = claim(store, task.id, "a", clock)
    expect(
        lease == Lease(task.id, "a", 1, clock.now() + LEASE),
        f"claim returned {lease!r}, expected token 1 until now + duration",
    )
    expect(lease.expires_at.utcoffset() == timedelta(0), "expires_at is not aware UTC")
    expect(store.lease_of(task.id) == lease, f"lease_of returned {store.lease_of(task.id)!r}")


@register
def check_at_most_one_live_owner(store: TaskStore, clock: ManualClock) -> None:
    """While a lease is live, every claim (other owners and the holder itself) returns None."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    clock.advance(LEASE - timedelta(milliseconds=1))
    for owner in ("b", "a"):
        got = store.claim(task.id, owner, clock.now(), LEASE)
        expect(got is None, f"{owner!r} claimed a task under a live lease: {got!r}")
    expect(store.lease_of(task.id) == lease, "a refused claim changed the lease")


@register
def check_expired_lease_can_be_claimed(store: TaskStore, clock: ManualClock) -> None:
    """At expires_at the task is claimable again, with the next token, by anyone."""
    (task,) = stored(store, clock)
    first = claim(store, task.id, "a", clock)
    clock.set(first.expires_at)
    second = claim(store, task.id, "b", clock)
    expect(second.token == 2, f"the claim after expiry has token {second.token}, expected 2")
    clock.set(second.expires_at)
    third = claim(store, task.id, "b", clock)
    expect(third.token == 3, f"the same owner's claim after expiry has token {third.token}")


@register
def check_tokens_strictly_increase(store: TaskStore, clock: ManualClock) -> None:
    """Tokens grow by one on every claim, through releases and expiries alike."""
    (task,) = stored(store, clock)
    tokens = []
    for round_ in range(6):
        lease = claim(store, task.id, "ab"[round_ % 2], clock)
        tokens.append(lease.token)
        if round_ % 2:
            store.release(lease)
        else:
            clock.set(lease.expires_at)
    expect(tokens == [1, 2, 3, 4, 5, 6], f"tokens over six claims: {tokens}")


@register
def check_renew_extends_a_current_lease(store: TaskStore, clock: ManualClock) -> None:
    """renew moves the expiry to now + duration and keeps the token; the task stays held."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    clock.advance(LEASE / 2)
    renewed = store.renew(lease, clock.now(), LEASE)
    expect(
        renewed == attrs.evolve(lease, expires_at=clock.now() + LEASE),
        f"renew returned {renewed!r}",
    )
    expect(store.lease_of(task.id) == renewed, "lease_of does not show the renewal")
    clock.set(lease.expires_at)
    expect(store.claim(task.id, "b", clock.now(), LEASE) is None, "a renewed lease was taken")
    store.check_fence(renewed, clock.now())
    store.check_fence(lease, clock.now() - timedelta(milliseconds=1))


@register
def check_renew_refuses_a_lost_lease(store: TaskStore, clock: ManualClock) -> None:
    """renew raises LeaseLost when expired, superseded, released, or not the owner's."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    thief, forged = attrs.evolve(lease, owner="b"), attrs.evolve(lease, token=7)
    lost("renew by another owner", lambda: store.renew(thief, clock.now(), LEASE))
    lost("renew with another token", lambda: store.renew(forged, clock.now(), LEASE))
    clock.set(lease.expires_at)
    lost("renew of an expired lease", lambda: store.renew(lease, clock.now(), LEASE))
    newer = claim(store, task.id, "b", clock)
    lost("renew of a superseded lease", lambda: store.renew(lease, clock.now(), LEASE))
    store.release(newer)
    lost("renew of a released lease", lambda: store.renew(newer, clock.now(), LEASE))
    try:
        store.renew(lease, clock.now(), LEASE)
    except LeaseLost as exc:
        fields = (exc.task_id, exc.owner, exc.token)
        expect(fields == (task.id, "a", 1), f"LeaseLost names {fields}")


@register
def check_release_frees_the_task_at_once(store: TaskStore, clock: ManualClock) -> None:
    """After release another owner claims at once; a stale release changes nothing."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    store.release(lease)
    expect(store.lease_of(task.id) is None, "lease_of shows a released lease")
    expect(task.id in store.claimable(clock.now(), 10), "a released task is not claimable")
    newer = claim(store, task.id, "b", clock)
    expect(newer.token == 2, f"the claim after release has token {newer.token}")
    store.release(lease)  # stale: must neither raise nor free the task
    store.release(attrs.evolve(newer, owner="a"))
    expect(store.lease_of(task.id) == newer, "a stale release changed the current lease")
    expect(store.claim(task.id, "c", clock.now(), LEASE) is None, "a stale release freed the task")


@register
def check_finished_tasks_are_never_claimed(store: TaskStore, clock: ManualClock) -> None:
    """COMPLETED and FAILED tasks are never claimable, leased before or not."""
    done, failed, held = stored(store, clock, 3)
    store.save(done.started(clock.now(), 1).finished(TaskStatus.COMPLETED, clock.now(), LEASE))
    store.save(
        failed.finished(TaskStatus.FAILED, clock.now(), LEASE, Failure("CANCELLED", "cancelled"))
    )
    lease = claim(store, held.id, "a", clock)
    running = held.started(clock.now(), 1)
    store.save(running, lease, now=clock.now())
    store.save(running.finished(TaskStatus.COMPLETED, clock.now(), LEASE), lease, now=clock.now())
    store.release(lease)
    for task in (done, failed, held):
        got = store.claim(task.id, "b", clock.now(), LEASE)
        expect(got is None, f"a finished task was claimed: {got!r}")
    expect(store.claimable(clock.now(), 10) == [], "claimable lists finished tasks")


@register
def check_claimable_order_and_limit(store: TaskStore, clock: ManualClock) -> None:
    """claimable lists unfinished, unleased ids oldest first, at most limit."""
    tasks = stored(store, clock, 5)
    ids = [task.id for task in tasks]
    expect(store.claimable(clock.now(), 10) == ids, "claimable is not in creation order")
    expect(store.claimable(clock.now(), 2) == ids[:2], "claimable ignores its limit")
    expect(store.claimable(clock.now(), 0) == [], "claimable(limit=0) is not empty")
    lease = claim(store, ids[1], "a", clock)
    store.save(tasks[2].started(clock.now(), 1))
    got = store.claimable(clock.now(), 10)
    expect(got == [ids[0], *ids[2:]], f"claimable with ids[1] leased: {got}")
    clock.set(lease.expires_at)
    expect(store.claimable(clock.now(), 10) == ids, "an expired lease keeps its task unclaimable")


@register
def check_fence_refuses_a_stale_owner(store: TaskStore, clock: ManualClock) -> None:
    """check_fence passes for the current, unexpired lease and raises LeaseLost otherwise."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    store.check_fence(lease, clock.now())
    forged = attrs.evolve(lease, token=2)
    lost("check_fence of another token", lambda: store.check_fence(forged, clock.now()))
    clock.set(lease.expires_at)
    lost("check_fence of an expired lease", lambda: store.check_fence(lease, clock.now()))
    newer = claim(store, task.id, "b", clock)
    lost("check_fence of a superseded lease", lambda: store.check_fence(lease, clock.now()))
    store.check_fence(newer, clock.now())
    store.release(newer)
    lost("check_fence of a released lease", lambda: store.check_fence(newer, clock.now()))


@register
def check_fenced_save_refuses_a_stale_owner(store: TaskStore, clock: ManualClock) -> None:
    """A fenced save by an expired or superseded owner raises LeaseLost and writes nothing."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    running = task.started(clock.now(), 10)
    store.save(running, lease, now=clock.now())
    expect(store.get(task.id) == running, "a fenced save by the current owner was not written")
    ahead = running.with_batch(1, 0, [], "c1")
    clock.set(lease.expires_at)
    lost("a fenced save after expiry", lambda: store.save(ahead, lease, now=clock.now()))
    expect(store.get(task.id) == running, "a refused fenced save was written")
    newer = claim(store, task.id, "b", clock)
    lost("a superseded fenced save", lambda: store.save(ahead, lease, now=clock.now()))
    expect(store.get(task.id) == running, "a refused fenced save was written")
    expect(store.lease_of(task.id) == newer, "a refused fenced save changed the lease")


@register
def check_save_keeps_the_lease(store: TaskStore, clock: ManualClock) -> None:
    """save, fenced or not, never changes the lease: the holder keeps the task."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    running = task.started(clock.now(), 10)
    store.save(running)
    store.save(running.with_batch(1, 0, [], "c1"), lease, now=clock.now())
    expect(store.lease_of(task.id) == lease, "a save changed the lease")
    expect(store.claim(task.id, "b", clock.now(), LEASE) is None, "a save freed the task")
    store.check_fence(lease, clock.now())


@register
def check_unknown_task_ids(store: TaskStore, clock: ManualClock) -> None:
    """An unknown id: claim None, lease_of None, release no-op, renew/fence/fenced save raise."""
    stored(store, clock)
    ghost = Lease("no-such-task", "a", 1, clock.now() + LEASE)
    expect(store.claim(ghost.task_id, "a", clock.now(), LEASE) is None, "claimed an unknown id")
    expect(store.lease_of(ghost.task_id) is None, "an unknown id has a lease")
    store.release(ghost)
    lost("renew of an unknown id", lambda: store.renew(ghost, clock.now(), LEASE))
    lost("check_fence of an unknown id", lambda: store.check_fence(ghost, clock.now()))
    lonely = attrs.evolve(make_task(99, clock), id=ghost.task_id)
    lost("a fenced save of an unknown id", lambda: store.save(lonely, ghost, now=clock.now()))
    expect(store.get(ghost.task_id) is None, "a refused fenced save stored a task")


@register
def check_delete_removes_the_lease(store: TaskStore, clock: ManualClock) -> None:
    """A deleted task has no lease; stored again under its id, its first claim has token 1."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    expect(store.delete([task.id]) == 1, "delete did not remove the task")
    expect(store.lease_of(task.id) is None, "a deleted task keeps its lease")
    lost("check_fence of a deleted task", lambda: store.check_fence(lease, clock.now()))
    store.insert(task)
    again = claim(store, task.id, "b", clock)
    expect(again.token == 1, f"the re-stored task's first claim has token {again.token}")


@register
def check_bad_arguments(store: TaskStore, clock: ManualClock) -> None:
    """A non-positive duration or an empty owner is a ValueError, and claims nothing."""
    (task,) = stored(store, clock)
    now = clock.now()
    expect_raises(ValueError, "claim for 0 s", lambda: store.claim(task.id, "a", now, timedelta(0)))
    expect_raises(ValueError, "claim by ''", lambda: store.claim(task.id, "", clock.now(), LEASE))
    expect(store.lease_of(task.id) is None, "a refused claim left a lease")
    lease = claim(store, task.id, "a", clock)
    expect_raises(ValueError, "renew for -1 s", lambda: store.renew(lease, clock.now(), -LEASE))
    expect_raises(TypeError, "a fenced save without now", lambda: store.save(task, lease))


@register
def check_concurrent_claims_have_one_winner(store: TaskStore, clock: ManualClock) -> None:
    """Eight threads claiming the same tasks at once: each task goes to exactly one."""
    tasks = stored(store, clock, 5)
    now = clock.now()
    won: list[Lease] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def race(owner: str) -> None:
        try:
            barrier.wait(timeout=30)
            for task in tasks:
                lease = store.claim(task.id, owner, now, LEASE)
                if lease is not None:
                    with lock:
                        won.append(lease)
        except BaseException as exc:  # reported below, in the checking thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(f"owner-{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expect(not errors, f"a claiming thread failed: {errors!r}")
    expect(
        sorted(lease.task_id for lease in won) == [task.id for task in tasks],
        f"claims won by several threads at once: {sorted(won, key=lambda lease: lease.task_id)}",
    )
    expect(all(lease.token == 1 for lease in won), "a racing claim got a token other than 1")
