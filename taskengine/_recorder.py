"""Recording a batch in its task, and the retry policy of a task's storage calls.

A :class:`Recorder` owns what happens to the task after a batch's items were changed
(for :class:`~taskengine._batches.Batches`): the fenced ``TaskStore.update`` with the
batch's counters, checkpoint and maybe its end (:meth:`Recorder.record`, whose new task
:meth:`Recorder.outcome` computes), writing a scan-path batch inside its ``atomic()``
block (:meth:`Recorder.commit`), and settling a batch whose write failed on a storage that
does not roll back (:meth:`Recorder.settle`, with :func:`taskengine._writes.settle_writes`).
:func:`retry` is the bounded retry with doubling delays that every storage call of a task
run goes through. The exceptions :class:`Stopped`, :class:`Gone` and :class:`Unsettled`
carry a run's early ends between the two modules; none leaves the engine.

Lock order (as for the batch loop): target lock -> ``storage.atomic()`` -> task store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import attrs

from taskengine import codes
from taskengine._writes import WHOLE_TASK, settle_writes, write_changes
from taskengine.errors import StorageError
from taskengine.storage.base import WriteResult
from taskengine.task import Failure, Task, TaskStatus
from taskengine.tasktype import BatchChanges, Plan

if TYPE_CHECKING:
    from taskengine._lease import Lease
    from taskengine._ownership import Hold, Ownership
    from taskengine.clock import Clock
    from taskengine.storage.base import Storage
    from taskengine.taskstore import TaskStore

__all__ = ["Gone", "Recorder", "Stopped", "Unsettled", "retry"]

_log = logging.getLogger("taskengine.engine")

_T = TypeVar("_T")


class Stopped(Exception):
    """The engine is stopping: leave the task RUNNING where it is."""


class Gone(Exception):
    """The task is no longer RUNNING under this run (finished or removed): stop."""


class Unsettled(Exception):
    """A batch's write failed after it may have written something: settle, never redo.

    Attributes:
        changes: the batch's changes.
        cursor: the scan's cursor after the batch.
        error: the write's error.
    """

    def __init__(self, changes: BatchChanges, cursor: str | None, error: StorageError) -> None:
        super().__init__(str(error))
        self.changes = changes
        self.cursor = cursor
        self.error = error


def retry(
    action: Callable[[], _T],
    max_retries: int,
    retry_delay: float,
    stopping: threading.Event,
    *,
    sync: bool,
) -> _T:
    """``action()``, retried up to ``max_retries`` times on a ``StorageError`` after
    ``retry_delay`` seconds, doubled each time.

    An error that fails the whole task (``WHOLE_TASK``) is never retried.

    Raises:
        StorageError: the last error, once the retries ran out.
        Stopped: the engine began to stop during a delay (not with ``sync``).
    """
    attempt = 0
    while True:
        try:
            return action()
        except WHOLE_TASK:
            raise
        except StorageError as exc:
            if attempt >= max_retries:
                raise
            delay = retry_delay * (2**attempt)
            attempt += 1
            _log.info("storage error, retry %d in %.3fs: %s", attempt, delay, exc)
            if stopping.wait(delay) and not sync:
                raise Stopped from exc


@attrs.define
class Recorder:
    """Records batches in their tasks for the engine's batch loop.

    Attributes:
        storage: the item storage.
        task_store: where tasks live.
        clock: where timestamps come from.
        retention: how long finished tasks are kept.
        max_retries: retries of a storage call.
        retry_delay: seconds before the first retry (doubled each time).
        stopping: set while the engine stops.
        ownership: the engine's leases (fences every batch).
        inside: whether the task is recorded inside the batch's ``atomic()`` block.
        rolls_back: whether the storage's ``atomic()`` undoes a failed block.
    """

    storage: Storage
    task_store: TaskStore
    clock: Clock
    retention: timedelta
    max_retries: int
    retry_delay: float
    stopping: threading.Event
    ownership: Ownership
    inside: bool
    rolls_back: bool

    def commit(
        self, hold: Hold, task_id: str, plan: Plan, changes: BatchChanges, cursor: str | None
    ) -> tuple[WriteResult, Task | None]:
        """Inside the batch's atomic() block: fence, write the batch, and (when the block
        holds the task too) record it. Return what was written and the task afterwards
        (``None`` when it is to be recorded after the block)."""
        now = self.clock.now()
        fence = self.ownership.fence(hold, now)
        try:
            written = write_changes(self.storage, plan, changes)
            if not self.inside:
                return written, None
            return written, self.record(fence, task_id, plan, changes, written, cursor, now)
        except WHOLE_TASK:
            raise
        except StorageError as exc:
            if self.rolls_back:
                raise  # the block undoes the batch: it is retried whole
            raise Unsettled(changes, cursor, exc) from exc

    def record_after(
        self,
        hold: Hold,
        task_id: str,
        plan: Plan,
        changes: BatchChanges,
        written: WriteResult,
        cursor: str | None,
    ) -> Task:
        """Record a batch whose items committed in a block that could not hold the task."""
        now = self.clock.now()
        try:
            return self.record(hold.lease, task_id, plan, changes, written, cursor, now)
        except StorageError as exc:  # the items are written, the task is not
            raise Unsettled(changes, cursor, exc) from exc

    def record(
        self,
        fence: Lease,
        task_id: str,
        plan: Plan,
        changes: BatchChanges,
        written: WriteResult,
        cursor: str | None,
        now: datetime,
    ) -> Task:
        """The fenced update of the task after a batch: counters, checkpoint, maybe its end."""

        def change(current: Task) -> Task:
            if current.status is not TaskStatus.RUNNING:
                raise Gone
            return self.outcome(current, plan, changes, written, cursor)

        updated = self.task_store.update(task_id, change, fence, now=now)
        if updated is None:
            raise Gone
        return updated

    def settle(
        self,
        hold: Hold,
        task_id: str,
        plan: Plan,
        unsettled: Unsettled,
        target_lock: threading.Lock,
    ) -> tuple[WriteResult | None, Task | None, StorageError | None]:
        """Settle a batch whose write failed (:func:`settle_writes`), then record it.

        Returns ``(written, the task as recorded or None when it is gone, the error to
        fail the task with or None)``;
        the error (``WDE0054``) comes when the retries ran out with items unverified.
        """
        changes = unsettled.changes
        written, unknown, error = settle_writes(
            self.storage,
            plan,
            changes,
            unsettled.error,
            target_lock,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
        )
        done, missing = written.done, written.missing

        def change(current: Task) -> Task:
            if current.status is not TaskStatus.RUNNING:
                raise Gone
            if unknown:
                return current.with_batch(
                    len(done), len(missing), _vanished(missing), current.checkpoint
                )
            return self.outcome(current, plan, changes, written, unsettled.cursor)

        def record() -> Task | None:
            now = self.clock.now()
            try:
                return self.task_store.update(task_id, change, hold.lease, now=now)
            except Gone:
                return None

        updated = retry(record, self.max_retries, self.retry_delay, self.stopping, sync=True)
        if updated is None:
            return None, None, None
        if unknown:
            gave_up = StorageError(
                f"{error}; a batch could not be completed: {len(done) + len(missing)} of its "
                f"items are counted (proven written or gone), {unknown} left unwritten or "
                "unverified"
            )
            gave_up.__cause__ = error
            return written, updated, gave_up
        return written, updated, None

    def outcome(
        self,
        task: Task,
        plan: Plan,
        changes: BatchChanges,
        written: WriteResult,
        cursor: str | None,
    ) -> Task:
        """The task after a batch whose writes did ``written``: counters, checkpoint, end."""
        done, missing = written.done, written.missing
        failures = [Failure(f.code, f.description, {"itemId": f.item_id}) for f in changes.failures]
        failures.extend(_vanished(missing))
        updated = task.with_batch(
            len(done) + changes.unchanged,
            len(changes.failures) + len(missing),
            failures,
            cursor,
        )
        if updated.cancel_requested:
            updated = updated.finished(
                TaskStatus.FAILED, self.clock.now(), self.retention, Failure.cancelled()
            )
        elif cursor is None:
            updated = updated.finished(TaskStatus.COMPLETED, self.clock.now(), self.retention)
            processed = updated.items_succeeded + updated.items_failed
            if plan.filter is not None and updated.estimated_item_count != processed:
                # The re-estimate: every item the filter accepted has been processed.
                updated = attrs.evolve(updated, estimated_item_count=processed)
        return updated


def _vanished(missing: Iterable[str]) -> list[Failure]:
    return [
        Failure(codes.ITEM_VANISHED, f"item {item_id!r} no longer exists", {"itemId": item_id})
        for item_id in missing
    ]
