"""Sliced tasks: one task run as ``_id`` ranges by several workers, one combined progress.

A task created with ``slices=n`` (n > 1) is claimed like any task. Its run plans and
counts as usual, asks the storage for split points (``split_points``, the optional
:class:`~taskengine.storage.base.SplittingStorage` capability), and moves the task to
RUNNING with those points in one fenced update; then it inserts the *slices*: hidden
tasks ``"<id>~0"`` .. ``"<id>~<k>"``, one per range, each NEW with its own lease,
checkpoint and counters. Slice ``i`` covers the ids above point ``i - 1`` (its first
checkpoint) up to point ``i`` (its ``until``, inclusive). Any engine of the store claims
and runs the slices; a sliced task that started is never claimed again.

* **Repair.** The split points are stored with the move to RUNNING, so slices missing
  after a crash are inserted again, the same ones, by :meth:`Slices.ensure` (run by
  the housekeeping of every engine).
* **Progress.** While the task runs, its counters and item failures are its slices'
  (:meth:`Slices.view`); when the last slice ends, the totals are folded into the task
  (:meth:`Slices.settle`), idempotently: whoever ends a slice settles afterwards, and the
  housekeeping settles what a crash left.
* **Outcome.** COMPLETED when every slice completed (and no cancel was asked); else
  FAILED with the first slice's whole-task failure that is not a cancellation, or
  ``CANCELLED``. A slice failing for another reason asks its siblings to cancel.
* **Cancel and retention.** Cancelling the task asks each unfinished slice to cancel
  (a NEW one ends at once). A slice never expires on its own: it goes with its task.

See docs/slices.md.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from taskengine.task import MAX_SLICES, Failure, Task, TaskStatus, slice_id

if TYPE_CHECKING:
    from taskengine._lease import Lease
    from taskengine.clock import Clock
    from taskengine.storage.base import Environment, Storage
    from taskengine.taskstore import TaskStore

__all__ = ["Slices", "combined"]

_log = logging.getLogger("taskengine.engine")


def combined(task: Task, slices: Sequence[Task]) -> Task:
    """The task with its slices' counters and item failures (its own stay first)."""
    failures = list(task.failures)
    for part in slices:
        own = part.failures[1:] if part.status is TaskStatus.FAILED else part.failures
        failures.extend(own)
    return attrs.evolve(
        task,
        items_succeeded=task.items_succeeded + sum(p.items_succeeded for p in slices),
        items_failed=task.items_failed + sum(p.items_failed for p in slices),
        failures=tuple(failures),
    )


@attrs.define
class Slices:
    """An engine's handling of sliced tasks, over its task store.

    Attributes:
        task_store: where tasks (and slices) live.
        clock: where timestamps come from.
        retention: how long finished tasks are kept.
        saved: the engine's bookkeeping after a task change was saved.
    """

    task_store: TaskStore
    clock: Clock
    retention: timedelta
    saved: Callable[[Task], None]

    @property
    def enabled(self) -> bool:
        """Whether the task store keeps slices (``keeps_slices``); else tasks run unsliced."""
        return getattr(self.task_store, "keeps_slices", False) is True

    def start(
        self,
        task: Task,
        lease: Lease,
        storage: Storage,
        collection: str,
        environment: Environment,
        estimate: int,
        now: datetime,
    ) -> Task | None:
        """Move a NEW task asking for slices to RUNNING, split, and insert its slices.

        Returns the task as stored (RUNNING; sliced unless the storage cannot split or
        the item set is smaller than the slices asked), or ``None`` when it was
        cancelled or removed meanwhile.

        Raises:
            LeaseLost: the lease on the task was lost.
            StorageError: the storage or the store failed (the run retries).
        """
        points: list[str] = []
        splitter = getattr(storage, "split_points", None)
        if splitter is not None and self.enabled:
            found = splitter(collection, environment, task.slices)
            if all(type(p) is str for p in found) and all(
                a < b for a, b in itertools.pairwise(found)
            ):
                points = list(found)[: task.slices - 1]
            else:
                _log.warning("task %s: the storage's split points are not ascending ids", task.id)

        def change(current: Task) -> Task | None:
            if current.status is not TaskStatus.NEW:
                return None
            started = current.started(now, estimate)
            return attrs.evolve(started, split=tuple(points), slices=len(points) + 1)

        started = self.task_store.update(task.id, change, lease, now=now)
        if started is None or started.status is not TaskStatus.RUNNING:
            return None
        self.saved(started)
        if started.is_sliced:
            self.ensure(started)
        return started

    def ensure(self, task: Task) -> int:
        """Insert the slices of a started sliced task that are missing (idempotent), and
        pass on a cancel the task has (a slice inserted after the cancel); return how
        many were inserted."""
        store = self.task_store
        inserted = 0
        count = len(task.split) + 1
        for index, child_id in enumerate(task.slice_ids):
            if store.get(child_id) is not None:
                continue
            share = task.estimated_item_count * (index + 1) // count - (
                task.estimated_item_count * index // count
            )
            child = Task(
                id=child_id,
                type=task.type,
                options_key=task.options_key,
                options=task.options,
                created_at=task.created_at,
                estimated_item_count=share,
                checkpoint=None if index == 0 else task.split[index - 1],
                parent=task.id,
                until=None if index == count - 1 else task.split[index],
            )
            try:
                store.insert(child)
            except ValueError:
                continue  # inserted meanwhile by another engine's repair
            inserted += 1
        current = store.get(task.id)
        if current is not None and current.cancel_requested:
            self.cancel_slices(current)
        return inserted

    def slices_of(self, task_ids: Sequence[str]) -> list[str]:
        """The ids the slices of these tasks may have (the sweep removes them first). A
        store that says how many slices each task asked for (``slice_counts``: the
        bundled ones) names exactly those; of any other store, every id a slice may
        have (:data:`MAX_SLICES` per task)."""
        counts = getattr(self.task_store, "slice_counts", None)
        wanted = dict.fromkeys(task_ids, MAX_SLICES) if counts is None else counts(task_ids)
        return [slice_id(task_id, index) for task_id, n in wanted.items() for index in range(n)]

    def view(self, task: Task) -> Task:
        """The task as the API shows it: a running sliced task with its slices' progress."""
        if not task.is_sliced or task.is_finished:
            return task
        get = self.task_store.get
        found = [part for part in map(get, task.slice_ids) if part is not None]
        return combined(task, found)

    def cancel_slices(self, task: Task, *, skip: str | None = None) -> Task | None:
        """Ask every unfinished slice of ``task`` to cancel (a NEW one ends at once), then
        settle the task (it ends when no slice was running); return it if it ended."""
        now = self.clock.now()

        def change(current: Task) -> Task | None:
            return current.cancel_asked(now, self.retention)

        for child_id in task.slice_ids:
            if child_id == skip:
                continue
            updated = self.task_store.update(child_id, change)
            if updated is not None:
                self.saved(updated)
        return self.settle(task.id)

    def slice_ended(self, child: Task) -> None:
        """After a slice's run: a failure that is not a cancel cancels its siblings; the
        task is settled when this was its last slice."""
        if child.parent is None:
            return
        current = self.task_store.get(child.id)
        if current is None or not current.is_finished:
            return
        parent = self.task_store.get(child.parent)
        if parent is None:
            return
        if (
            current.status is TaskStatus.FAILED
            and current.failures[0].code != Failure.cancelled().code
        ):
            self.cancel_slices(parent, skip=current.id)  # settles the task too
        else:
            self.settle(parent.id)

    def settle(self, task_id: str) -> Task | None:
        """End a running sliced task whose slices all ended, with their totals folded in
        (one atomic update; a no-op when it is not due or already done). Returns the task
        as ended, or ``None``."""
        store = self.task_store
        task = store.get(task_id)
        if task is None or not task.is_sliced or task.status is not TaskStatus.RUNNING:
            return None
        parts = [store.get(child_id) for child_id in task.slice_ids]
        done = [part for part in parts if part is not None and part.is_finished]
        if len(done) != len(parts):
            return None
        now = self.clock.now()

        def change(current: Task) -> Task | None:
            if current.status is not TaskStatus.RUNNING or not current.is_sliced:
                return None
            return _fold(current, done, now, self.retention)

        updated = store.update(task_id, change)
        if updated is None or not updated.is_finished:
            return None
        self.saved(updated)
        return updated

    def housekeeping(self) -> int:
        """Repair and settle every running sliced task (what a crash may have left);
        return how many slices were inserted and tasks ended."""
        changed = 0
        for task in self._started_sliced():
            changed += self.ensure(task)
            if self.settle(task.id) is not None:
                changed += 1
        return changed

    def _started_sliced(self) -> list[Task]:
        """The running sliced tasks: from the store's own query when it has one
        (``started_sliced``: the bundled SQL stores read those rows only), else picked
        out of every unfinished task."""
        query = getattr(self.task_store, "started_sliced", None)
        if query is not None:
            found: list[Task] = query()
            return found
        return [
            task
            for task in self.task_store.unfinished()
            if task.is_sliced and task.status is TaskStatus.RUNNING
        ]


def _fold(task: Task, parts: Sequence[Task], now: datetime, retention: timedelta) -> Task:
    """The sliced task ended: its slices' totals in its own fields, and its outcome."""
    total = combined(task, parts)
    cancelled = Failure.cancelled().code
    failure: Failure | None = None
    for part in parts:
        if part.status is TaskStatus.FAILED and part.failures[0].code != cancelled:
            failure = part.failures[0]
            break
    if failure is None and (
        task.cancel_requested or any(part.status is TaskStatus.FAILED for part in parts)
    ):
        failure = Failure.cancelled()
    if failure is None:
        estimate = sum(part.estimated_item_count for part in parts)
        ended = total.finished(TaskStatus.COMPLETED, now, retention)
        return attrs.evolve(ended, estimated_item_count=estimate)
    return total.finished(TaskStatus.FAILED, now, retention, failure)
