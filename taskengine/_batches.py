"""The batch loop: one task run to its end, batch by batch, with retries and settling.

How a task runs (one worker thread per task at a time)::

    plan = executor.plan(options, storage)          # TaskFailure -> FAILED with its code
    estimate = storage.count(...)                   # NEW -> RUNNING, saved
    loop until the scan is finished, a cancel was requested, or the engine stops:
        page = storage.scan(..., after=checkpoint, limit=batch_size, filter=plan.filter)
        changes = executor.apply(plan, matching items)
        with engine lock, storage.atomic():         # one transaction when the task store
            delete/replace items                    # shares the storage's Database
            counters += ..., checkpoint = page.cursor, task saved
        executor.committed(plan, changes, written)

Storage errors are retried a bounded number of times per batch, and a retry never applies
a change twice. On an adapter whose ``atomic()`` rolls back (``atomic_rolls_back``) a
failed batch left nothing behind, so the whole batch (scan, apply, write) is retried;
after the last retry the task ends FAILED with ``WDE0054`` and its counters as of the
last committed batch. On any other adapter a batch whose write failed is *settled*
(:mod:`taskengine._writes`), and so is one whose items committed but whose task save
failed (a task store that does not share the storage's transactions). See
docs/durability.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import attrs

from taskengine import codes
from taskengine._taskjson import stored_options
from taskengine._writes import WHOLE_TASK, settle_writes, write_changes
from taskengine.errors import (
    CollectionNotFound,
    InvalidItem,
    SandboxNotEnabled,
    StorageError,
    TaskFailure,
)
from taskengine.storage.base import WriteResult
from taskengine.task import Failure, Task, TaskStatus
from taskengine.tasktype import BatchChanges, Plan

if TYPE_CHECKING:
    from taskengine.clock import Clock
    from taskengine.storage.base import Storage
    from taskengine.taskstore import TaskStore
    from taskengine.tasktype import TaskType

__all__ = ["Batches"]

_log = logging.getLogger("taskengine.engine")

_NOTHING = BatchChanges()
_T = TypeVar("_T")

class _Stopped(Exception):
    """The engine is stopping: leave the task RUNNING where it is."""


class _Unsettled(Exception):
    """A batch's write failed after it may have written something: settle, never redo."""

    def __init__(self, changes: BatchChanges, cursor: str | None, error: StorageError) -> None:
        super().__init__(str(error))
        self.changes = changes
        self.cursor = cursor
        self.error = error


@attrs.define
class Batches:
    """Runs tasks batch by batch for a ``TaskEngine``, sharing its state and its lock.

    Every change to a task happens under the engine's lock (``changed``), in this
    order: engine lock -> ``storage.atomic()`` -> task store.

    Attributes:
        storage: the item storage.
        task_store: where tasks live.
        clock: where timestamps come from.
        retention: how long finished tasks are kept.
        batch_size: items per batch (one scan page, one write, one checkpoint).
        max_retries: retries of a batch hit by a ``StorageError``.
        retry_delay: seconds before the first retry (doubled each time).
        task_types: the engine's registered types by name (the live mapping).
        changed: the engine lock, notified on every task change.
        stopping: set while the engine stops.
        cancels: ids of running tasks whose cancel was requested.
        running: the latest saved snapshot of each RUNNING task.
        after_save: the engine's bookkeeping after a task change was saved.
    """

    storage: Storage
    task_store: TaskStore
    clock: Clock
    retention: timedelta
    batch_size: int
    max_retries: int
    retry_delay: float
    task_types: Mapping[str, TaskType]
    changed: threading.Condition
    stopping: threading.Event
    cancels: set[str]
    running: dict[str, Task]
    after_save: Callable[[Task], None]
    _target_locks: dict[tuple[str, str], threading.Lock] = attrs.field(factory=dict, init=False)
    _shared: bool = attrs.field(init=False)
    _rolls_back: bool = attrs.field(init=False)
    _exact: bool = attrs.field(init=False)
    _private_store: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Capabilities are declared by the adapter (see the Storage protocol) and the
        # store; anything but ``True`` (an adapter older than the attribute) means no.
        self._shared = self.task_store.shares_transactions_with(self.storage)
        self._rolls_back = getattr(self.storage, "atomic_rolls_back", False) is True
        self._exact = getattr(self.storage, "scan_filters_exactly", False) is True
        # A task store other processes may write (SQLite) is re-read before each batch
        # commit, so a cancel requested elsewhere is never overwritten.
        self._private_store = getattr(self.task_store, "process_private", False) is True

    def run(self, task_id: str, *, sync: bool) -> None:
        """Run a task to its end (or until the engine stops); record how it ended.

        Raises:
            Exception: only with ``sync``, an unexpected error (a bug in an executor),
                after failing the task with ``WDE0054``.
        """
        task = self.task_store.get(task_id)
        if task is None or task.is_finished:
            return
        try:
            self._execute(task, sync=sync)
        except _Stopped:
            return
        except TaskFailure as failure:
            self.finish(task_id, Failure(failure.code, failure.description, failure.data))
        except (CollectionNotFound, SandboxNotEnabled) as exc:  # gone while the task ran
            code = (
                codes.COLLECTION_NOT_FOUND
                if isinstance(exc, CollectionNotFound)
                else codes.SANDBOX_NOT_ENABLED
            )
            self.finish(task_id, Failure(code, str(exc), {"collection": exc.collection}))
        except InvalidItem as exc:
            # The storage refused an item the task wrote (create-time validation keeps
            # option values storable, so this is a custom executor's doing): a clear
            # whole-task failure, never an exception escaping run_until_idle.
            _log.warning("task %s wrote an item the storage refused: %s", task_id, exc)
            data = {"itemId": exc.item_id} if exc.item_id is not None else None
            self.finish(task_id, Failure(codes.STORAGE, f"storage refused an item: {exc}", data))
        except StorageError as exc:
            _log.warning("task %s failed on storage errors: %s", task_id, exc)
            self.finish(task_id, Failure(codes.STORAGE, f"storage error: {exc}", None))
        except Exception as exc:
            _log.exception("task %s failed unexpectedly", task_id)
            description = f"unexpected error: {type(exc).__name__}: {exc}"
            self.finish(task_id, Failure(codes.STORAGE, description, None))
            if sync:
                raise

    def finish(self, task_id: str, failure: Failure) -> None:
        """End a task FAILED with ``failure`` (a NEW one is started first, unless cancelled)."""
        try:
            with self.changed:
                current = self.task_store.get(task_id)
                if current is None or current.is_finished:
                    return
                now = self.clock.now()
                if current.status is TaskStatus.NEW and failure.code != Failure.cancelled().code:
                    current = current.started(now, 0)
                updated = current.finished(TaskStatus.FAILED, now, self.retention, failure)
                self.task_store.save(updated)
                self.after_save(updated)
        except StorageError:
            # The store is down too: the task stays as last saved and resumes on restart.
            _log.exception("could not record the failure of task %s", task_id)

    def _execute(self, task: Task, *, sync: bool) -> None:
        task_type = self.task_types.get(task.type)
        if task_type is None:
            raise TaskFailure(codes.STORAGE, f"task type {task.type!r} is not registered")
        options = stored_options(task.options, task_type)
        executor = task_type.executor
        storage = self.storage
        plan: Plan = self._retry(lambda: executor.plan(options, storage), sync)
        if task.status is TaskStatus.NEW:
            # The items the task affects (ref): O(1) without a filter on the built-in
            # adapters; with one, a filtered pass (cheap in memory, a decode of every
            # row on SQLite). Re-estimated to the exact number processed on completion.
            estimate = self._retry(
                lambda: storage.count(plan.collection, plan.environment, plan.filter).value,
                sync,
            )
            with self.changed:
                current = self.task_store.get(task.id)
                if current is None or current.status is not TaskStatus.NEW:
                    return  # cancelled (or removed) while planning
                task = current.started(self.clock.now(), estimate)
                self.task_store.save(task)
                self.after_save(task)
        checkpoint = task.checkpoint
        batch_size = self.batch_size
        collection, environment, accept = plan.collection, plan.environment, plan.filter
        apply, committed = executor.apply, executor.committed
        cancels, stopping = self.cancels, self.stopping
        task_id = task.id

        # Tasks on the same item set take turns batch by batch, so one task's
        # read-apply-write of an item never interleaves with another's (no lost updates).
        target_lock = self._target_lock(collection, str(environment))

        # The protocol lets an adapter return items its filter rejects, so the engine
        # re-checks, except on adapters that declare exact scans (a second call per item).
        recheck = accept if accept is not None and not self._exact else None
        scan, commit = storage.scan, self._commit

        # The previous batch (its scanned copies) is let go right after the next page is
        # read, as a hand-written ``page = scan(...)`` loop does, so apply and the write
        # reuse its containers from CPython's free lists. Freed any earlier, the scan
        # takes them and apply/replace allocate fresh ones: the collector's allocation
        # count then swings past its threshold (700) every batch, and the young
        # collections promote the freshly stored items until full collections of the
        # whole heap follow (measured: one per 100k-item task, ~30% of its time).
        previous: list[BatchChanges] = []

        def step() -> tuple[str | None, BatchChanges, WriteResult | None, bool]:
            with target_lock:
                page = scan(
                    collection, environment, after=checkpoint, limit=batch_size, filter=accept
                )
                previous.clear()
                items = page.items
                if recheck is not None:
                    items = [item for item in items if recheck(item)]
                changes = apply(plan, items) if items else _NOTHING
                written, done = commit(task_id, plan, changes, page.cursor)
            return page.cursor, changes, written, done

        while True:
            if task_id in cancels:
                self.finish(task_id, Failure.cancelled())
                return
            if stopping.is_set() and not sync:
                raise _Stopped
            gave_up: StorageError | None = None
            try:
                cursor, changes, written, done = self._retry(step, sync)
            except _Unsettled as unsettled:
                cursor, changes = unsettled.cursor, unsettled.changes
                written, done, gave_up = self._settle(task_id, plan, unsettled, target_lock)
            if written is not None and (changes.deletes or changes.replaces):
                committed(plan, changes, written)  # after giving up too: what was written
            if gave_up is not None:
                raise gave_up
            if done:
                return
            previous.append(changes)
            del changes, written
            checkpoint = cursor

    def _target_lock(self, collection: str, environment: str) -> threading.Lock:
        with self.changed:
            lock = self._target_locks.get((collection, environment))
            if lock is None:
                lock = self._target_locks[(collection, environment)] = threading.Lock()
            return lock

    def _retry(self, action: Callable[[], _T], sync: bool) -> _T:
        attempt = 0
        while True:
            try:
                return action()
            except WHOLE_TASK:
                raise
            except StorageError as exc:
                if attempt >= self.max_retries:
                    raise
                delay = self.retry_delay * (2**attempt)
                attempt += 1
                _log.info("storage error, retry %d in %.3fs: %s", attempt, delay, exc)
                if self.stopping.wait(delay) and not sync:
                    raise _Stopped from exc

    def _commit(
        self, task_id: str, plan: Plan, changes: BatchChanges, cursor: str | None
    ) -> tuple[WriteResult | None, bool]:
        """Write one batch and its checkpoint; return (written, task finished)."""
        storage = self.storage
        with self.changed:
            with storage.atomic():
                current = self.running.get(task_id) if self._private_store else None
                if current is None:
                    current = self.task_store.get(task_id)
                if current is None or current.status is not TaskStatus.RUNNING:
                    return None, True
                try:
                    written = write_changes(self.storage, plan, changes)
                    updated = self._outcome(current, plan, changes, written, cursor)
                    if self._shared:
                        self.task_store.save(updated)
                except WHOLE_TASK:
                    raise
                except StorageError as exc:
                    if self._rolls_back:
                        raise  # the block undoes the batch: it is retried whole
                    raise _Unsettled(changes, cursor, exc) from exc
            if not self._shared:
                try:
                    self.task_store.save(updated)
                except StorageError as exc:  # the items are written, the task is not
                    raise _Unsettled(changes, cursor, exc) from exc
            self.after_save(updated)
            return written, updated.is_finished

    def _settle(
        self, task_id: str, plan: Plan, unsettled: _Unsettled, target_lock: threading.Lock
    ) -> tuple[WriteResult | None, bool, StorageError | None]:
        """Settle a batch whose write failed (:func:`settle_writes`), then record it.

        Returns ``(written, task finished, the error to fail the task with or None)``;
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

        def record() -> Task | None:
            with self.changed:
                current = self.task_store.get(task_id)
                if current is None or current.status is not TaskStatus.RUNNING:
                    return None
                if unknown:
                    updated = current.with_batch(
                        len(done), len(missing), _vanished(missing), current.checkpoint
                    )
                else:
                    updated = self._outcome(current, plan, changes, written, unsettled.cursor)
                self.task_store.save(updated)
                self.after_save(updated)
                return updated

        updated = self._retry(record, sync=True)
        if updated is None:
            return None, True, None
        if unknown:
            gave_up = StorageError(
                f"{error}; a batch could not be completed: {len(done) + len(missing)} of its "
                f"items are counted (proven written or gone), {unknown} left unwritten or "
                "unverified"
            )
            gave_up.__cause__ = error
            return written, True, gave_up
        return written, updated.is_finished, None

    def _outcome(
        self,
        task: Task,
        plan: Plan,
        changes: BatchChanges,
        written: WriteResult,
        cursor: str | None,
    ) -> Task:
        """The task after a batch whose writes did ``written``: counters, checkpoint, end."""
        done, missing = written.done, written.missing
        failures = [
            Failure(f.code, f.description, {"itemId": f.item_id}) for f in changes.failures
        ]
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
