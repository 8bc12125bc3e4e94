"""The batch loop: one task run to its end, batch by batch, with retries and settling.

How a task runs (one worker thread per task at a time)::

    plan = executor.plan(options, storage)          # TaskFailure -> FAILED with its code
    estimate = storage.estimate_count(...)          # NEW -> RUNNING, saved
    loop until the scan is finished, a cancel was requested, the engine stops, or the
    task's lease is lost:
        with storage.atomic():                      # one transaction on SQLite
            page = storage.scan(..., after=checkpoint, limit=batch_size, filter=plan.filter)
            changes = executor.apply(plan, matching items)
            lease checked (renewed once a third has passed)     # the fence
            delete/replace items
            task_store.update(counters += ..., checkpoint = page.cursor), fenced
        executor.committed(plan, changes, written)

The engine holds the task's lease (:mod:`taskengine._ownership`) for the whole run. The
batch reads its items inside the same transaction that writes them and records its
checkpoint, so a batch of another process (another task on the same items) cannot come
between the read and the write, and a stale owner's batch is refused whole: the fence is
checked, and the task updated, inside the block. A lost lease ends the run without
touching the task: its new owner goes on from the last committed checkpoint.

Storage errors are retried a bounded number of times per batch, and a retry never applies
a change twice. On an adapter whose ``atomic()`` rolls back (``atomic_rolls_back``) a
failed batch left nothing behind, so the whole batch (scan, apply, write) is retried;
after the last retry the task ends FAILED with ``WDE0054`` and its counters as of the
last committed batch. On any other adapter a batch whose write failed is *settled*
(:mod:`taskengine._writes`), and so is one whose items committed but whose task save
failed (a task store that does not share the storage's transactions). See
docs/durability.md.

Recording a batch in its task, settling and the retry policy are
:mod:`taskengine._recorder`; a batch the storage runs itself (set-based) is
:mod:`taskengine._setstep`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import attrs

from taskengine import codes
from taskengine._recorder import Gone, Recorder, Stopped, Unsettled, retry
from taskengine._setstep import SetBatchSizing, make_set_step
from taskengine._taskjson import stored_options
from taskengine.errors import (
    CollectionNotFound,
    InvalidItem,
    LeaseLost,
    SandboxNotEnabled,
    StorageError,
    TaskFailure,
)
from taskengine.storage.base import WriteResult
from taskengine.storage.changes import cut_at
from taskengine.task import Failure, Task, TaskStatus
from taskengine.tasktype import BatchChanges, Plan

if TYPE_CHECKING:
    from taskengine._ownership import Hold, Ownership
    from taskengine._slices import Slices
    from taskengine.clock import Clock
    from taskengine.storage.base import Storage
    from taskengine.taskstore import TaskStore
    from taskengine.tasktype import TaskType

__all__ = ["Batches"]

_log = logging.getLogger("taskengine.engine")

_NOTHING = BatchChanges()
_T = TypeVar("_T")


@attrs.define
class Batches:
    """Runs tasks batch by batch for a ``TaskEngine``, sharing its state and its lock.

    Every change to a task is one :meth:`TaskStore.update` (atomic, fenced by the run's
    lease); the engine's lock (``changed``) guards only its bookkeeping afterwards and is
    never taken inside ``storage.atomic()``. Lock order: target lock ->
    ``storage.atomic()`` -> task store; engine lock -> task store.

    Attributes:
        storage: the item storage.
        task_store: where tasks live.
        clock: where timestamps come from.
        retention: how long finished tasks are kept.
        batch_size: items per batch (one scan page, one write, one checkpoint).
        set_batch_sizing: the rows of a set-based batch (one the storage runs itself).
        max_retries: retries of a batch hit by a ``StorageError``.
        retry_delay: seconds before the first retry (doubled each time).
        task_types: the engine's registered types by name (the live mapping).
        changed: the engine lock, notified on every task change.
        stopping: set while the engine stops.
        cancels: ids of running tasks whose cancel was requested.
        ownership: the engine's leases (fences every batch).
        after_save: the engine's bookkeeping after a task change was saved.
        slices: the engine's handling of sliced tasks (:mod:`taskengine._slices`).
    """

    storage: Storage
    task_store: TaskStore
    clock: Clock
    retention: timedelta
    batch_size: int
    set_batch_sizing: SetBatchSizing
    max_retries: int
    retry_delay: float
    task_types: Mapping[str, TaskType]
    changed: threading.Condition
    stopping: threading.Event
    cancels: set[str]
    ownership: Ownership
    after_save: Callable[[Task], None]
    slices: Slices
    _target_locks: dict[tuple[str, str], threading.Lock] = attrs.field(factory=dict, init=False)
    _shared: bool = attrs.field(init=False)
    _rolls_back: bool = attrs.field(init=False)
    _exact: bool = attrs.field(init=False)
    _inside: bool = attrs.field(init=False)
    _recorder: Recorder = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Capabilities are declared by the adapter (see the Storage protocol) and the
        # store; anything but ``True`` (an adapter older than the attribute) means no.
        self._shared = self.task_store.shares_transactions_with(self.storage)
        self._rolls_back = getattr(self.storage, "atomic_rolls_back", False) is True
        self._exact = getattr(self.storage, "scan_filters_exactly", False) is True
        # The task is updated inside the batch's atomic() block when that makes the two
        # one: a shared transaction, or a block that rolls back (a refused fence or a
        # failed update undoes the batch's writes) with a store that never waits on
        # anything else (memory). A store with its own connection to the items' file
        # would wait inside the block for the write lock the block itself holds.
        self._inside = self._shared or (
            self._rolls_back and getattr(self.task_store, "process_private", False) is True
        )
        self._recorder = Recorder(
            storage=self.storage,
            task_store=self.task_store,
            clock=self.clock,
            retention=self.retention,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
            stopping=self.stopping,
            ownership=self.ownership,
            inside=self._inside,
            rolls_back=self._rolls_back,
        )

    def run(self, task_id: str, hold: Hold, *, sync: bool) -> None:
        """Run a task to its end (or until the engine stops or the lease is lost).

        The caller holds the task's lease (``hold``) and releases it afterwards.

        Raises:
            Exception: only with ``sync``, an unexpected error (a bug in an executor),
                after failing the task with ``WDE0054``.
        """
        task = self.task_store.get(task_id)
        if task is None or task.is_finished:
            return
        try:
            self._run(task, hold, sync=sync)
        finally:
            if task.parent is not None and not hold.lost:
                try:
                    self.slices.slice_ended(task)
                except StorageError as exc:  # the housekeeping settles it later
                    _log.warning("task %s: could not settle its task: %s", task_id, exc)

    def _run(self, task: Task, hold: Hold, *, sync: bool) -> None:
        task_id = task.id
        try:
            self._execute(task, hold, sync=sync)
        except (Stopped, Gone):
            return
        except LeaseLost:
            hold.lost = True
            _log.warning("task %s: lease lost (taken over or expired); stopped", task_id)
            return
        except TaskFailure as failure:
            self.finish(task_id, Failure(failure.code, failure.description, failure.data), hold)
        except (CollectionNotFound, SandboxNotEnabled) as exc:  # gone while the task ran
            code = (
                codes.COLLECTION_NOT_FOUND
                if isinstance(exc, CollectionNotFound)
                else codes.SANDBOX_NOT_ENABLED
            )
            self.finish(task_id, Failure(code, str(exc), {"collection": exc.collection}), hold)
        except InvalidItem as exc:
            # The storage refused an item the task wrote (create-time validation keeps
            # option values storable, so this is a custom executor's doing): a clear
            # whole-task failure, never an exception escaping run_until_idle.
            _log.warning("task %s wrote an item the storage refused: %s", task_id, exc)
            data = {"itemId": exc.item_id} if exc.item_id is not None else None
            refused = Failure(codes.STORAGE, f"storage refused an item: {exc}", data)
            self.finish(task_id, refused, hold)
        except StorageError as exc:
            _log.warning("task %s failed on storage errors: %s", task_id, exc)
            self.finish(task_id, Failure(codes.STORAGE, f"storage error: {exc}", None), hold)
        except Exception as exc:
            _log.exception("task %s failed unexpectedly", task_id)
            description = f"unexpected error: {type(exc).__name__}: {exc}"
            self.finish(task_id, Failure(codes.STORAGE, description, None), hold)
            if sync:
                raise

    def finish(self, task_id: str, failure: Failure, hold: Hold) -> None:
        """End a task FAILED with ``failure`` (a NEW one is started first, unless cancelled)."""
        now = self.clock.now()
        cancelled = failure.code == Failure.cancelled().code

        def change(current: Task) -> Task | None:
            if current.is_finished:
                return None
            if current.status is TaskStatus.NEW and not cancelled:
                current = current.started(now, 0)
            return current.finished(TaskStatus.FAILED, now, self.retention, failure)

        try:
            updated = self.task_store.update(task_id, change, hold.lease, now=now)
        except LeaseLost:
            hold.lost = True
            _log.warning("task %s: lease lost before its failure was recorded", task_id)
            return
        except StorageError:
            # The store is down too: the task stays as last saved and resumes on restart.
            _log.exception("could not record the failure of task %s", task_id)
            return
        if updated is not None:
            self._saved(updated)

    def _start(self, task: Task, hold: Hold, estimate: int | None) -> Task | None:
        """Move the held NEW task to RUNNING with ``estimate`` (``None``: the one it has);
        the started task, or ``None`` when it was cancelled or removed meanwhile."""
        now = self.clock.now()

        def change(current: Task) -> Task | None:
            if current.status is not TaskStatus.NEW:
                return None
            count = current.estimated_item_count if estimate is None else estimate
            return current.started(now, count)

        started = self.task_store.update(task.id, change, hold.lease, now=now)
        if started is None or started.status is not TaskStatus.RUNNING:
            return None
        self._saved(started)
        return started

    def _saved(self, task: Task) -> None:
        with self.changed:
            self.after_save(task)

    def _execute(self, task: Task, hold: Hold, *, sync: bool) -> None:
        task_type = self.task_types.get(task.type)
        if task_type is None:
            raise TaskFailure(codes.STORAGE, f"task type {task.type!r} is not registered")
        if task.is_sliced:
            # A started sliced task runs as its slices (it is claimed again only by a
            # store that does not know them): repair and settle, nothing else.
            self.slices.ensure(task)
            self.slices.settle(task.id)
            return
        options = stored_options(task.options, task_type)
        executor = task_type.executor
        storage = self.storage
        plan: Plan = self._retry(lambda: executor.plan(options, storage), sync)
        if task.status is TaskStatus.NEW and task.parent is not None:
            # A slice: its share of its task's estimate was set when it was inserted.
            started = self._start(task, hold, None)
            if started is None:
                return  # cancelled (or removed) while planning
            task = started
        if task.status is TaskStatus.NEW:
            # The items the task affects (ref), from the adapter's cheap count when it
            # has one (exact for small item sets, else sampled: no second pass over the
            # collection), else counted. Set to the exact number processed on completion.
            counter = getattr(storage, "estimate_count", storage.count)
            estimate = self._retry(
                lambda: counter(plan.collection, plan.environment, plan.filter).value,
                sync,
            )
            now = self.clock.now()
            if task.slices > 1:
                split = self._retry(
                    lambda: self.slices.start(
                        task, hold.lease, storage, plan.collection, plan.environment, estimate, now
                    ),
                    sync,
                )
                if split is None or split.is_sliced:
                    return  # cancelled meanwhile, or its slices run it
                task = split  # too few items (or no split points): it runs unsliced
            else:
                started = self._start(task, hold, estimate)
                if started is None:
                    return  # cancelled (or removed) while planning
                task = started
        checkpoint, until = task.checkpoint, task.until
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
        scan, commit, atomic = storage.scan, self._recorder.commit, storage.atomic
        set_step = None
        if self._inside and self._rolls_back:
            set_step = make_set_step(
                self.storage,
                self.set_batch_sizing,
                self.clock,
                self.ownership,
                self._recorder,
                hold,
                task_id,
                executor,
                plan,
                target_lock,
                until,
            )

        # The previous batch (its scanned copies) is let go right after the next page is
        # read, as a hand-written ``page = scan(...)`` loop does, so apply and the write
        # reuse its containers from CPython's free lists. Freed any earlier, the scan
        # takes them and apply/replace allocate fresh ones: the collector's allocation
        # count then swings past its threshold (700) every batch, and the young
        # collections promote the freshly stored items until full collections of the
        # whole heap follow (measured: one per 100k-item task, ~30% of its time).
        previous: list[BatchChanges] = []

        def step() -> tuple[str | None, BatchChanges, WriteResult | None, Task | None]:
            with target_lock:
                try:
                    with atomic():
                        page = scan(
                            collection,
                            environment,
                            after=checkpoint,
                            limit=batch_size,
                            filter=accept,
                        )
                        previous.clear()
                        items, cursor = page.items, page.cursor
                        if until is not None:  # a slice: its range ends at ``until``
                            items, cursor = cut_at(items, cursor, until)
                        if recheck is not None:
                            items = [item for item in items if recheck(item)]
                        changes = apply(plan, items) if items else _NOTHING
                        written, updated = commit(hold, task_id, plan, changes, cursor)
                    if updated is None:
                        updated = self._recorder.record_after(
                            hold, task_id, plan, changes, written, cursor
                        )
                except Gone:
                    return None, _NOTHING, None, None
            return cursor, changes, written, updated

        def set_batch() -> tuple[str | None, BatchChanges, WriteResult | None, Task | None]:
            assert set_step is not None
            return set_step(checkpoint)

        batch = step if set_step is None else set_batch
        while True:
            if hold.lost:
                raise LeaseLost(task_id, hold.lease.owner, hold.lease.token)
            if task_id in cancels:
                self.finish(task_id, Failure.cancelled(), hold)
                return
            if stopping.is_set() and not sync:
                raise Stopped
            gave_up: StorageError | None = None
            try:
                cursor, changes, written, updated = self._retry(batch, sync)
            except Unsettled as unsettled:
                cursor, changes = unsettled.cursor, unsettled.changes
                written, updated, gave_up = self._recorder.settle(
                    hold, task_id, plan, unsettled, target_lock
                )
            if written is not None and (
                changes.deletes or changes.replaces or set_step is not None
            ):
                committed(plan, changes, written)  # after giving up too: what was written
            if updated is not None:
                # Waiters hear of the batch after the executor did (``committed``).
                self._saved(updated)
            if gave_up is not None:
                raise gave_up
            if updated is None or updated.is_finished:
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
        return retry(action, self.max_retries, self.retry_delay, self.stopping, sync=sync)
