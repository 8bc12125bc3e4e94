"""Task-store conformance checks of sliced tasks (docs/slices.md).

A store that keeps slices says so with ``keeps_slices = True``; the engine slices tasks
only on such a store (on any other one they run unsliced), so on a store without the
attribute these checks pass without looking.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from taskengine.clock import ManualClock
from taskengine.task import Task, TaskStatus, slice_id
from taskengine.taskstore import TaskStore
from taskengine.testing._checks import expect
from taskengine.testing._taskstore_checks import make_task, register

# Split points and bounds are item ids: any string a storage may hold.
_POINTS = ("b\u00e9", "m\x00n", "\U0001f600")


def _keeps(store: TaskStore) -> bool:
    return getattr(store, "keeps_slices", False) is True


def _sliced(store: TaskStore, clock: ManualClock, n: int) -> tuple[Task, list[Task]]:
    """A started task ``n`` in four slices (stored), and its slices (stored, NEW)."""
    parent = make_task(n, clock).started(clock.now(), 40)
    parent = attrs.evolve(parent, slices=len(_POINTS) + 1, split=_POINTS)
    store.insert(parent)
    bounds = (None, *_POINTS, None)
    children = [
        attrs.evolve(
            make_task(n, clock),
            id=slice_id(parent.id, index),
            parent=parent.id,
            checkpoint=bounds[index],
            until=bounds[index + 1],
            estimated_item_count=10,
        )
        for index in range(len(_POINTS) + 1)
    ]
    for child in children:
        store.insert(child)
    return parent, children


@register
def check_slice_fields_round_trip(store: TaskStore, clock: ManualClock) -> None:
    """A sliced task's slices and split points, and a slice's parent, bound and first
    checkpoint (ids with NUL and non-ASCII characters), read back equal, also after an
    update."""
    if not _keeps(store):
        return
    parent, children = _sliced(store, clock, 0)
    expect(store.get(parent.id) == parent, "a sliced task reads back changed")
    for child in children:
        expect(store.get(child.id) == child, f"slice {child.id!r} reads back changed")
    ended = (
        children[1]
        .started(clock.now(), 10)
        .finished(TaskStatus.COMPLETED, clock.now(), timedelta(0))
    )
    updated = store.update(children[1].id, lambda current: ended)
    expect(updated == ended and store.get(ended.id) == ended, "an updated slice reads back changed")
    expect(ended.expires_at is None, "a finished slice has an expiry")


@register
def check_slices_are_hidden_from_pages(store: TaskStore, clock: ManualClock) -> None:
    """page() and len() show and count the tasks, never their slices; slices are read by
    id, are unfinished while NEW, and are claimable."""
    if not _keeps(store):
        return
    first = make_task(10, clock)
    store.insert(first)
    parent, children = _sliced(store, clock, 11)
    clock.advance(1)
    last = make_task(12, clock)
    store.insert(last)
    tasks, total = store.page(10, 0)
    expect(total == 3 == len(store), f"total {total}, len {len(store)}: slices were counted")
    expect(
        [task.id for task in tasks] == [last.id, parent.id, first.id],
        f"page lists {[task.id for task in tasks]}, not the three tasks newest first",
    )
    tasks, total = store.page(1, 1)
    expect([task.id for task in tasks] == [parent.id], "page(1, 1) skips a slice or lists one")
    unfinished = {task.id for task in store.unfinished()}
    expect(all(child.id in unfinished for child in children), "a NEW slice is not unfinished")
    claimable = store.claimable(clock.now(), 10)
    expect(all(child.id in claimable for child in children), "a NEW slice is not claimable")


@register
def check_a_started_sliced_task_is_not_claimable(store: TaskStore, clock: ManualClock) -> None:
    """A RUNNING task with slices > 1 runs as its slices: claimable() never returns it;
    a NEW one asking for slices is claimable like any task."""
    if not _keeps(store):
        return
    asking = attrs.evolve(make_task(20, clock), slices=4)
    store.insert(asking)
    parent, _ = _sliced(store, clock, 21)
    claimable = store.claimable(clock.now(), 10)
    expect(parent.id not in claimable, "a started sliced task is claimable")
    expect(asking.id in claimable, "a NEW task asking for slices is not claimable")


@register
def check_started_sliced_lists_the_running_sliced_tasks(
    store: TaskStore, clock: ManualClock
) -> None:
    """A store's optional ``started_sliced()`` returns exactly the unfinished tasks that
    are sliced and RUNNING (what the engine's housekeeping would pick out of
    ``unfinished()``), oldest first: not a NEW task asking for slices, not a slice, not
    an ended sliced task."""
    query = getattr(store, "started_sliced", None)
    if query is None or not _keeps(store):
        return
    store.insert(attrs.evolve(make_task(30, clock), slices=4))  # NEW, asking for slices
    first, _ = _sliced(store, clock, 31)
    ended, _ = _sliced(store, clock, 32)
    store.save(ended.finished(TaskStatus.COMPLETED, clock.now(), timedelta(days=1)))
    second, _ = _sliced(store, clock, 33)
    picked = [t.id for t in store.unfinished() if t.is_sliced and t.status is TaskStatus.RUNNING]
    got = [task.id for task in query()]
    expect(got == picked == [first.id, second.id], f"started_sliced() gave {got!r}")


@register
def check_slice_counts_name_the_sliced_tasks(store: TaskStore, clock: ManualClock) -> None:
    """A store's optional ``slice_counts(ids)`` gives the ``slices`` of exactly those of
    the tasks that have more than one (unknown ids and unsliced tasks left out), so the
    sweep removes those slices and no more."""
    query = getattr(store, "slice_counts", None)
    if query is None or not _keeps(store):
        return
    plain = make_task(40, clock)
    store.insert(plain)
    parent, _ = _sliced(store, clock, 41)
    asking = attrs.evolve(make_task(42, clock), slices=3)
    store.insert(asking)
    got = query([plain.id, parent.id, asking.id, "no such task"])
    expect(
        got == {parent.id: len(_POINTS) + 1, asking.id: 3},
        f"slice_counts() gave {got!r}",
    )
