"""Task-store conformance checks: ``update``, the atomic read-change-write of one task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import attrs

from taskengine.clock import ManualClock
from taskengine.task import Task, TaskStatus
from taskengine.taskstore import Lease, TaskStore
from taskengine.testing._checks import expect, expect_raises
from taskengine.testing._taskstore_checks import LEASE, claim, lost, register, stored


def _bump(task: Task) -> Task:
    return attrs.evolve(task, items_succeeded=task.items_succeeded + 1)


@attrs.define
class _Change:
    """A change for ``update`` that records every snapshot it is given."""

    result: Callable[[Task], Task | None]
    seen: list[Task] = attrs.Factory(list)

    def __call__(self, task: Task) -> Task | None:
        self.seen.append(task)
        return self.result(task)


class _Boom(Exception):
    """The exception a failing change raises."""


@register
def check_update_writes_the_change(store: TaskStore, clock: ManualClock) -> None:
    """update gives change the stored snapshot, stores what it returns and returns that."""
    (task,) = stored(store, clock)
    start = _Change(lambda current: current.started(clock.now(), 10))
    got = store.update(task.id, start)
    running = task.started(clock.now(), 10)
    expect(start.seen == [task], f"change was given {start.seen!r}, not the stored task once")
    expect(got == running, f"update returned {got!r}, not the changed task")
    expect(store.get(task.id) == running, "update did not store the changed task")
    bump = _Change(_bump)
    got = store.update(task.id, bump)
    expect(bump.seen == [running], "a second update was not given the first one's result")
    expect(got == store.get(task.id) == _bump(running), "a second update was not stored")


@register
def check_update_returning_none_keeps_the_task(store: TaskStore, clock: ManualClock) -> None:
    """A change returning None writes nothing; update returns the stored snapshot."""
    (task,) = stored(store, clock)
    running = task.started(clock.now(), 10)
    store.save(running)
    keep = _Change(lambda current: None)
    got = store.update(task.id, keep)
    expect(keep.seen == [running], "change was not given the stored snapshot once")
    expect(got == running, f"update returned {got!r}, not the stored snapshot")
    expect(store.get(task.id) == running, "a change returning None changed the task")


@register
def check_update_of_an_unknown_id(store: TaskStore, clock: ManualClock) -> None:
    """An unknown or deleted id: update returns None (fenced: LeaseLost) and never calls change."""
    (task,) = stored(store, clock)
    change = _Change(_bump)
    got = store.update("no-such-task", change)
    expect(got is None, f"update of an unknown id returned {got!r}")
    ghost = Lease("no-such-task", "a", 1, clock.now() + LEASE)
    lost(
        "a fenced update of an unknown id",
        lambda: store.update(ghost.task_id, change, ghost, now=clock.now()),
    )
    lease = claim(store, task.id, "a", clock)
    store.delete([task.id])
    expect(store.update(task.id, change) is None, "update of a deleted task did not return None")
    lost(
        "a fenced update of a deleted task",
        lambda: store.update(task.id, change, lease, now=clock.now()),
    )
    expect(change.seen == [], f"change was called for a task that is not stored: {change.seen!r}")
    expect(len(store) == 0, "an update of an unknown id stored a task")
    expect(store.get("no-such-task") is None, "an update of an unknown id stored a task")


@register
def check_fenced_update_needs_a_current_lease(store: TaskStore, clock: ManualClock) -> None:
    """A fenced update runs only for the current, unexpired lease; otherwise LeaseLost,
    change not called, nothing written."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    change = _Change(_bump)
    clock.set(lease.expires_at - timedelta(milliseconds=1))
    got = store.update(task.id, change, lease, now=clock.now())
    expect(got == store.get(task.id) == _bump(task), "the current owner's fenced update failed")
    expect(change.seen == [task], "the current owner's change was not called once")
    after = _bump(task)

    def refused(what: str, fence: Lease) -> None:
        lost(
            f"a fenced update {what}", lambda: store.update(task.id, change, fence, now=clock.now())
        )

    refused("by another owner", attrs.evolve(lease, owner="b"))
    refused("with another token", attrs.evolve(lease, token=lease.token + 1))
    clock.set(lease.expires_at)
    refused("after expiry", lease)
    newer = claim(store, task.id, "b", clock)
    refused("by a superseded owner", lease)
    store.release(newer)
    refused("after release", newer)
    expect(change.seen == [task], f"change was called for a refused fence: {change.seen!r}")
    expect(store.get(task.id) == after, "a refused fenced update changed the task")


@register
def check_update_keeps_the_id(store: TaskStore, clock: ManualClock) -> None:
    """A change returning a task with another id is a ValueError, and nothing is written."""
    (task,) = stored(store, clock)
    other = _Change(lambda current: attrs.evolve(_bump(current), id="task-9999"))
    expect_raises(ValueError, "an update to another id", lambda: store.update(task.id, other))
    expect(store.get(task.id) == task, "an update to another id changed the task")
    expect(store.get("task-9999") is None, "an update to another id stored that id")
    expect(len(store) == 1, f"an update to another id left {len(store)} tasks")


@register
def check_update_errors_propagate(store: TaskStore, clock: ManualClock) -> None:
    """An exception from change propagates as it is and nothing is written; the store
    still works afterwards."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    boom = _Boom("change failed")

    def failing(current: Task) -> Task:
        raise boom

    for fence in (None, lease):
        try:
            store.update(task.id, failing, fence, now=clock.now())
        except _Boom as exc:
            expect(exc is boom, f"update raised another exception: {exc!r}")
        else:
            raise AssertionError("an exception raised by change did not propagate")
        expect(store.get(task.id) == task, "a failed change wrote the task")
    expect(store.lease_of(task.id) == lease, "a failed change touched the lease")
    got = store.update(task.id, _bump, lease, now=clock.now())
    expect(got == store.get(task.id) == _bump(task), "an update after a failed change failed")


@register
def check_update_keeps_the_lease(store: TaskStore, clock: ManualClock) -> None:
    """update, fenced or not, never changes the lease: the holder keeps the task."""
    (task,) = stored(store, clock)
    lease = claim(store, task.id, "a", clock)
    store.update(task.id, lambda current: current.started(clock.now(), 10))
    store.update(task.id, _bump, lease, now=clock.now())
    expect(store.lease_of(task.id) == lease, "an update changed the lease")
    expect(store.claim(task.id, "b", clock.now(), LEASE) is None, "an update freed the task")
    store.check_fence(lease, clock.now())


@register
def check_update_bad_arguments(store: TaskStore, clock: ManualClock) -> None:
    """A fence without now is a TypeError, another task's fence a ValueError; change not called."""
    first, second = stored(store, clock, 2)
    lease = claim(store, first.id, "a", clock)
    change = _Change(_bump)
    expect_raises(
        TypeError, "a fenced update without now", lambda: store.update(first.id, change, lease)
    )
    expect_raises(
        ValueError,
        "an update fenced by another task's lease",
        lambda: store.update(second.id, change, lease, now=clock.now()),
    )
    expect(change.seen == [], "change was called for a refused update")
    expect(store.get(first.id) == first and store.get(second.id) == second, "a task was changed")


@register
def check_concurrent_updates_lose_nothing(store: TaskStore, clock: ManualClock) -> None:
    """Four threads each adding one to a counter 50 times: the counter ends at 200, and each
    update saw a different value."""
    (task,) = stored(store, clock)
    seen: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)
    lock = threading.Lock()

    def add() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(50):
                got = store.update(task.id, _bump)
                assert got is not None
                with lock:
                    seen.append(got.items_succeeded)
        except BaseException as exc:  # reported below, in the checking thread
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expect(not errors, f"an updating thread failed: {errors!r}")
    final = store.get(task.id)
    count = None if final is None else final.items_succeeded
    expect(count == 200, f"four threads' 200 increments left the counter at {count}")
    expect(sorted(seen) == list(range(1, 201)), "two concurrent updates returned the same count")


@register
def check_expired_lists_due_tasks_earliest_first(store: TaskStore, clock: ManualClock) -> None:
    """expired(now, limit) lists the finished tasks whose expiresAt is at or before now,
    earliest first, at most limit; unfinished tasks and deleted ones never appear, and a
    task saved again with another expiry is listed at its new one."""
    tasks = stored(store, clock, 4)
    start = clock.now()
    # Finished one minute apart in reverse order: expiry order is the reverse of ids.
    for n, task in enumerate(reversed(tasks[:3])):
        at = start + timedelta(minutes=n)
        store.save(task.started(at, 1).finished(TaskStatus.COMPLETED, at, timedelta(hours=1)))
    first = start + timedelta(hours=1)
    order = [tasks[2].id, tasks[1].id, tasks[0].id]
    got = store.expired(first + timedelta(minutes=5), 10)
    expect(got == order, f"expired() listed {got!r}, not {order!r} (earliest expiry first)")
    got = store.expired(first + timedelta(minutes=5), 2)
    expect(got == order[:2], f"expired(limit=2) listed {got!r}, not {order[:2]!r}")
    got = store.expired(first, 10)
    expect(got == order[:1], f"a task due exactly at now was not listed: {got!r}")
    got = store.expired(first - timedelta(milliseconds=1), 10)
    expect(got == [], f"a task listed before its expiresAt: {got!r}")
    later = start + timedelta(minutes=30)
    store.save(tasks[2].started(later, 1).finished(TaskStatus.COMPLETED, later, timedelta(hours=1)))
    store.delete([tasks[1].id])
    got = store.expired(first + timedelta(hours=1), 10)
    expect(
        got == [tasks[0].id, tasks[2].id],
        f"after a re-save and a delete, expired() listed {got!r}",
    )
