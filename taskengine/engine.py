"""``TaskEngine``: task lifecycle, worker threads, cancellation, checkpoints, retention.

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

Every change to a task happens under one engine lock, in this order: engine lock ->
``storage.atomic()`` -> task store. Readers (``get_task``, ``list_tasks``,
``get_progress``) only touch the task store, so they never wait for a batch's item
writes (except on a shared SQLite database, which serialises everything anyway).

Storage errors are retried a bounded number of times per batch, and a retry never applies
a change twice. On an adapter whose ``atomic()`` rolls back (``atomic_rolls_back``) a
failed batch left nothing behind, so the whole batch (scan, apply, write) is retried;
after the last retry the task ends FAILED with ``WDE0054`` and its counters as of the
last committed batch. On any other adapter, once a batch's write has failed, the batch
is *settled* instead (:meth:`TaskEngine._settle`): its items are read back, only those
proven unwritten are written again (the changes computed once, never re-applied), and
when the retries run out the task ends FAILED with the items proven written counted.
A batch whose items committed but whose task save failed (a task store that does not
share the storage's transactions) is settled the same way.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine import codes
from taskengine._jsonio import TOO_DEEP, check_json
from taskengine.clock import Clock, SystemClock
from taskengine.errors import (
    CollectionNotFound,
    DuplicateItem,
    InvalidItem,
    InvalidRequest,
    InvalidTask,
    SandboxNotEnabled,
    StorageError,
    TaskFailure,
    TaskNotFound,
    Violation,
)
from taskengine.progress import Progress
from taskengine.storage.base import WriteResult
from taskengine.task import Failure, RawOptions, Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore, TaskStore
from taskengine.tasktype import BatchChanges, Plan, Service, TaskOptions, TaskType
from taskengine.tasktypes._fieldops import identical

if TYPE_CHECKING:
    from taskengine.storage.base import Item, Storage

__all__ = [
    "CODE_COLLECTION_NOT_FOUND",
    "CODE_ITEM_VANISHED",
    "CODE_SANDBOX_NOT_ENABLED",
    "CODE_STORAGE",
    "MAX_PAGE",
    "TaskEngine",
    "TaskPage",
]

_log = logging.getLogger("taskengine.engine")

CODE_COLLECTION_NOT_FOUND = codes.COLLECTION_NOT_FOUND
"""Whole-task failure: the task's collection does not exist (any more)."""
CODE_SANDBOX_NOT_ENABLED = codes.SANDBOX_NOT_ENABLED
"""Whole-task failure: the task asked for a sandbox the collection does not have."""
CODE_STORAGE = codes.STORAGE
"""Whole-task failure (storage down after retries, unexpected error), or item failure."""
CODE_ITEM_VANISHED = codes.ITEM_VANISHED
"""Item failure: the item was deleted between the scan and the write."""

MAX_PAGE = 100
"""The largest ``limit`` :meth:`TaskEngine.list_tasks` accepts."""
MAX_OFFSET = 2**63 - 1
"""The largest ``offset`` :meth:`TaskEngine.list_tasks` accepts (SQLite's largest integer)."""

_READ_ONLY = frozenset(
    {
        "id",
        "status",
        "createdAt",
        "startedAt",
        "finishedAt",
        "expiresAt",
        "estimatedItemCount",
        "itemsSucceeded",
        "itemsFailed",
        "failures",
        "cancelRequested",
    }
)
_NOTHING = BatchChanges()
_T = TypeVar("_T")


@attrs.frozen
class TaskPage:
    """One page of :meth:`TaskEngine.list_tasks`: tasks newest first, and the total.

    Attributes:
        tasks: the tasks on this page.
        offset: how many newer tasks were skipped.
        total: how many tasks exist (not expired).
    """

    tasks: tuple[Task, ...]
    offset: int
    total: int

    def to_json(self) -> dict[str, Any]:
        """``{"tasks": [...], "metadata": {"count", "offset", "total"}}`` (ref)."""
        return {
            "tasks": [task.to_json() for task in self.tasks],
            "metadata": {"count": len(self.tasks), "offset": self.offset, "total": self.total},
        }


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
class _ServiceSlot:
    service: Service
    started: bool = False
    due: datetime | None = None


class TaskEngine:
    """Runs background tasks over an item storage.

    Args:
        storage: the item storage (``MemoryStorage``, ``SQLiteStorage``, an adapter).
        task_store: where tasks live; default a new :class:`MemoryTaskStore`. Use a
            ``SQLiteTaskStore`` for durability (built on the storage's database, each
            batch and its checkpoint commit in one transaction).
        workers: worker threads started by :meth:`start`.
        batch_size: items per batch (one scan page, one write, one checkpoint).
        retention: how long finished tasks are kept (their ``expiresAt``).
        clock: where timestamps come from; default the system clock.
        task_types: the task types to register; ``None`` installs the four built-in
            ones (``taskengine.tasktypes.install_default_task_types``).
        max_retries: how many times a batch hit by a ``StorageError`` is retried before
            the task fails with ``WDE0054``.
        retry_delay: seconds before the first retry (doubled each time).
        tick_interval: real seconds between housekeeping rounds (the retention sweep and
            service ticks) while started.

    Raises:
        InvalidRequest: a setting out of range (named by its argument name).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        task_store: TaskStore | None = None,
        workers: int = 1,
        batch_size: int = 500,
        retention: timedelta = timedelta(days=30),
        clock: Clock | None = None,
        task_types: Iterable[TaskType] | None = None,
        max_retries: int = 3,
        retry_delay: float = 0.05,
        tick_interval: float = 1.0,
    ) -> None:
        problems: list[Violation] = []
        for name, value, low in (
            ("workers", workers, 1),
            ("batch_size", batch_size, 1),
            ("max_retries", max_retries, 0),
        ):
            if type(value) is not int or value < low:
                problems.append(Violation(name, f"must be an integer >= {low}, got {value!r}"))
        if not isinstance(retention, timedelta) or retention < timedelta(0):
            problems.append(Violation("retention", "must be a non-negative timedelta"))
        for name, number in (("retry_delay", retry_delay), ("tick_interval", tick_interval)):
            if not isinstance(number, (int, float)) or isinstance(number, bool) or number < 0:
                problems.append(Violation(name, "must be a non-negative number of seconds"))
        if problems:
            raise InvalidRequest(problems)
        self.storage: Storage = storage
        self.task_store: TaskStore = task_store if task_store is not None else MemoryTaskStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.workers = workers
        self.batch_size = batch_size
        self.retention = retention
        self.max_retries = max_retries
        self.retry_delay = float(retry_delay)
        self.tick_interval = float(tick_interval)
        self._shared = self.task_store.shares_transactions_with(storage)
        self._rolls_back = _rolls_back(storage)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._work = threading.Condition(threading.Lock())
        self._queue: collections.deque[str] = collections.deque()
        self._claimed: set[str] = set()
        self._cancels: set[str] = set()
        self._running: dict[str, Task] = {}  # latest saved snapshot of RUNNING tasks
        self._expiry = SortedList()
        self._expiry_loaded = False
        # A task store other processes may write (SQLite) is re-read before each batch
        # commit, so a cancel requested elsewhere is never overwritten.
        self._private_store = isinstance(self.task_store, MemoryTaskStore)
        self._types: dict[str, TaskType] = {}
        self._target_locks: dict[tuple[str, str], threading.Lock] = {}
        self._services: list[_ServiceSlot] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._recovered = False
        self._services_on = False

        if task_types is None:
            from taskengine.tasktypes import install_default_task_types

            install_default_task_types(self)
        else:
            for task_type in task_types:
                self.register_task_type(task_type)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TaskEngine {state}, {len(self._types)} task type(s)>"

    # -- registry ---------------------------------------------------------------------

    @property
    def task_types(self) -> Mapping[str, TaskType]:
        """The registered task types by name (a copy)."""
        return dict(self._types)

    def register_task_type(self, task_type: TaskType) -> None:
        """Make a task type available to :meth:`create_task`.

        Raises:
            InvalidRequest: a type with this name or options key is already registered.
        """
        with self._lock:
            for known in self._types.values():
                if task_type.name == known.name or task_type.options_key == known.options_key:
                    raise InvalidRequest(
                        [Violation("task_type", f"{task_type.name!r} is already registered")]
                    )
            self._types[task_type.name] = task_type

    def register_service(self, service: Service) -> None:
        """Add background work (e.g. a scheduler): started with the engine, ticked when due.

        A service registered after the engine started is started at once.
        """
        slot = _ServiceSlot(service)
        with self._lock:
            self._services.append(slot)
            started = self._services_on
        if started:
            slot.service.start(self)
            slot.started = True
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether worker threads are running (between :meth:`start` and :meth:`stop`)."""
        return bool(self._threads)

    def start(self) -> None:
        """Start the worker threads and housekeeping; resume unfinished tasks.

        Every RUNNING task in the task store resumes from its checkpoint and every NEW
        one is queued, oldest first. Idempotent while running.
        """
        if self._threads:
            return
        self._stopping.clear()
        self._recover()
        self._start_services(raise_errors=False)
        threads = [
            threading.Thread(target=self._worker, name=f"taskengine-worker-{n}", daemon=True)
            for n in range(self.workers)
        ]
        threads.append(
            threading.Thread(target=self._housekeeper, name="taskengine-housekeeper", daemon=True)
        )
        self._threads = threads
        for thread in threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the workers after their current batch; RUNNING tasks stay resumable.

        Args:
            timeout: seconds to wait for each thread (``None`` = as long as it takes).
        """
        self._stopping.set()
        self._wake.set()
        with self._work:
            self._work.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> TaskEngine:
        """Start the engine (see :meth:`start`)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the engine (see :meth:`stop`)."""
        self.stop()

    def run_until_idle(self) -> int:
        """Run every queued task to its end in the caller's thread; return how many ran.

        The test-friendly mode: no worker threads, the injected clock, services ticked
        and the retention sweep run in this thread. An unexpected exception (a bug in an
        executor, not a storage outage or a ``TaskFailure``) fails its task with
        ``WDE0054`` and is then raised here instead of being logged.

        Raises:
            InvalidRequest: the engine is started (worker threads own the queue).
        """
        if self._threads:
            raise InvalidRequest(
                [Violation("run_until_idle", "the engine is started; stop it first")]
            )
        self._stopping.clear()
        if not self._recovered:
            self._recover()
        self._start_services(raise_errors=True)
        ran = 0
        while True:
            self.sweep()
            self._tick_services(raise_errors=True)
            task_id = self._next_task()
            if task_id is None:
                return ran
            try:
                self._run_task(task_id, sync=True)
            finally:
                self._release(task_id)
            ran += 1

    # -- the API ------------------------------------------------------------------------

    def create_task(self, spec: Any) -> Task:
        """Validate and store a new task, queued to run; return it (NEW).

        Args:
            spec: the task JSON (``{"type": ..., "<x>Options": {...}}``, optionally
                wrapped as ``{"task": {...}}``) or typed options of a registered type
                (e.g. ``EditFieldDataOptions(...)``).

        Raises:
            InvalidTask: every violation by JSON path (``task.type: required``); nothing
                is stored.
        """
        task_type, options = self._parse_create(spec)
        task = Task(
            id=str(uuid.uuid4()),
            type=task_type.name,
            options_key=task_type.options_key,
            options=options,
            created_at=self.clock.now(),
        )
        with self._changed:
            self.task_store.insert(task)
            self._changed.notify_all()
        self._enqueue(task.id)
        return task

    def get_task(self, task_id: str) -> Task:
        """The task as it is now.

        Raises:
            TaskNotFound: no such task, or it has expired.
        """
        return self._get_live(task_id)

    def list_tasks(self, limit: int = 30, offset: int = 0) -> TaskPage:
        """A page of tasks, newest first, with the total number of tasks.

        Raises:
            InvalidRequest: ``limit`` not in ``1..100`` (field ``paging.limit``) or
                ``offset`` not in ``0..MAX_OFFSET`` (field ``paging.offset``), the same on
                every task store.
        """
        problems: list[Violation] = []
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            problems.append(Violation("paging.limit", f"must be an integer in 1..{MAX_PAGE}"))
        if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
            problems.append(Violation("paging.offset", f"must be an integer in 0..{MAX_OFFSET}"))
        if problems:
            raise InvalidRequest(problems)
        self.sweep()
        tasks, total = self.task_store.page(limit, offset)
        return TaskPage(tuple(tasks), offset, total)

    def cancel_task(self, task_id: str) -> Task:
        """Cancel a task and return it as it is now.

        NEW ends FAILED with a ``CANCELLED`` failure at once; RUNNING shows
        ``cancelRequested`` at once and ends FAILED/``CANCELLED`` after its current
        batch (counters kept); a finished task is returned unchanged.

        Raises:
            TaskNotFound: no such task, or it has expired.
        """
        with self._changed:
            task = self._get_live(task_id)
            if task.is_finished or task.cancel_requested:
                return task
            if task.status is TaskStatus.NEW:
                updated = task.finished(
                    TaskStatus.FAILED, self.clock.now(), self.retention, Failure.cancelled()
                )
            else:
                updated = task.cancel_was_requested()
            self.task_store.save(updated)
            self._after_save(updated)
            return updated

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until the task is finished or ``timeout`` seconds passed; return it.

        The returned task may still be unfinished when the timeout ran out (check
        ``task.is_finished``). Waiting uses real time, whatever the engine's clock.

        Raises:
            TaskNotFound: no such task, or it expired.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                task = self._get_live(task_id)
                if task.is_finished:
                    return task
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return task
                self._changed.wait(remaining)

    def get_progress(self, task_id: str) -> Progress:
        """The progress view of a task (see docs/progress.md).

        Raises:
            TaskNotFound: no such task, or it has expired.
        """
        return Progress.of(task := self._get_live(task_id), self._types.get(task.type))

    def sweep(self, now: datetime | None = None) -> int:
        """Remove every finished task whose ``expiresAt`` has passed; return how many.

        Runs on its own while the engine is started (every ``tick_interval``), and
        before every list; reads of an expired task also remove it.
        """
        moment = self.clock.now() if now is None else now
        with self._lock:
            if not self._expiry_loaded:
                # An engine that was never started has not loaded the expiry index yet.
                self._expiry = SortedList(self.task_store.expiring())
                self._expiry_loaded = True
            expired: list[str] = []
            for expires_at, task_id in self._expiry:
                if expires_at > moment:
                    break
                expired.append(task_id)
            if expired:
                del self._expiry[: len(expired)]
                self.task_store.delete(expired)
        return len(expired)

    # -- internals: reads ---------------------------------------------------------------

    def _get_live(self, task_id: str) -> Task:
        if not isinstance(task_id, str):
            raise TaskNotFound(repr(task_id))
        task = self.task_store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        if task.expires_at is not None and task.expires_at <= self.clock.now():
            with self._lock:
                self._expiry.discard((task.expires_at, task.id))
                self.task_store.delete([task.id])
            raise TaskNotFound(task_id)
        return task

    # -- internals: create ------------------------------------------------------------

    def _parse_create(self, spec: Any) -> tuple[TaskType, TaskOptions]:
        if not isinstance(spec, Mapping):
            if hasattr(spec, "to_json") and hasattr(spec, "collection"):
                return self._typed_spec(spec)
            raise InvalidTask([Violation("task", "must be an object or typed task options")])
        if set(spec) == {"task"}:
            spec = spec["task"]
            if not isinstance(spec, Mapping):
                raise InvalidTask([Violation("task", "must be an object")])
        unencodable = _unencodable(spec, "task")
        if any(v.description == TOO_DEEP for v in unencodable):
            raise InvalidTask(unencodable)  # parsing it could exhaust the stack
        problems: list[Violation] = []
        task_type: TaskType | None = None
        type_name = spec.get("type")
        if type_name is None:
            problems.append(Violation("task.type", "required"))
        elif not isinstance(type_name, str) or type_name not in self._types:
            known = ", ".join(sorted(self._types)) or "none registered"
            problems.append(Violation("task.type", f"must be one of {known}"))
        else:
            task_type = self._types[type_name]
        option_keys = {known.options_key for known in self._types.values()}
        options: TaskOptions | None = None
        for key in spec:
            where = f"task.{key}"
            if not isinstance(key, str):
                problems.append(Violation("task", f"unknown field {key!r}"))
            elif key == "type":
                continue
            elif key in _READ_ONLY:
                problems.append(Violation(where, "read-only: set by the engine"))
            elif task_type is not None and key == task_type.options_key:
                parsed, found = task_type.parse_options(spec[key], where)
                problems.extend(found)
                options = parsed if not found else None
            elif key in option_keys or key.endswith("Options"):
                reason = f"not allowed with type {type_name}" if task_type else "unexpected"
                problems.append(Violation(where, reason))
            else:
                problems.append(Violation(where, "unknown field"))
        if task_type is not None and task_type.options_key not in spec:
            problems.append(Violation(f"task.{task_type.options_key}", "required"))
        if unencodable:
            problems = _merge_violations(unencodable, problems)
        if problems or task_type is None or options is None:
            raise InvalidTask(problems or [Violation("task", "invalid task")])
        return task_type, options

    def _typed_spec(self, spec: Any) -> tuple[TaskType, TaskOptions]:
        try:
            data = spec.to_json()
        except Exception as exc:  # an arbitrary object: report, never crash
            raise InvalidTask([Violation("task", f"cannot serialise options: {exc}")]) from exc
        class_name = type(spec).__name__.lower()
        keys = [t.options_key for t in self._types.values() if t.options_key.lower() == class_name]
        deep = _unencodable(data, f"task.{keys[0]}" if keys else "task")
        if any(v.description == TOO_DEEP for v in deep):
            raise InvalidTask(deep)  # parsing it could exhaust the stack
        for task_type in self._types.values():
            where = f"task.{task_type.options_key}"
            parsed, problems = task_type.parse_options(data, where)
            named = task_type.options_key.lower() == class_name  # CopyFieldDataOptions
            if (parsed is not None and type(parsed) is type(spec)) or (named and problems):
                unencodable = _unencodable(data, where)
                if unencodable:
                    problems = _merge_violations(unencodable, problems)
                if problems or parsed is None:
                    raise InvalidTask(problems or [Violation(where, "invalid options")])
                return task_type, parsed
        raise InvalidTask(
            [Violation("task", f"{type(spec).__name__} is not the options of a registered type")]
        )

    # -- internals: queue ---------------------------------------------------------------

    def _recover(self) -> None:
        unfinished = self.task_store.unfinished()
        with self._lock:
            self._expiry = SortedList(self.task_store.expiring())
            self._expiry_loaded = True
            for task in unfinished:
                if task.cancel_requested:
                    self._cancels.add(task.id)
            self._recovered = True
        with self._work:
            queued = set(self._queue)
            for task in unfinished:
                if task.id not in queued:
                    self._queue.append(task.id)
            self._work.notify_all()

    def _enqueue(self, task_id: str) -> None:
        with self._work:
            self._queue.append(task_id)
            self._work.notify()

    def _next_task(self) -> str | None:
        with self._work:
            while self._queue:
                task_id = self._queue.popleft()
                if task_id not in self._claimed:
                    self._claimed.add(task_id)
                    return task_id
            return None

    def _release(self, task_id: str) -> None:
        with self._work:
            self._claimed.discard(task_id)

    def _worker(self) -> None:
        while not self._stopping.is_set():
            with self._work:
                while not self._queue and not self._stopping.is_set():
                    self._work.wait()
            if self._stopping.is_set():
                return
            task_id = self._next_task()
            if task_id is None:
                continue
            try:
                self._run_task(task_id, sync=False)
            except Exception:  # pragma: no cover - _run_task already records and logs
                _log.exception("worker failed on task %s", task_id)
            finally:
                self._release(task_id)

    def _housekeeper(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sweep()
                self._tick_services(raise_errors=False)
            except Exception:
                _log.exception("housekeeping failed")
            wait = self.tick_interval
            now = self.clock.now()
            for slot in self._services:
                if slot.due is not None:
                    wait = min(wait, max(0.0, (slot.due - now).total_seconds()))
            self._wake.wait(wait)
            self._wake.clear()

    def _start_services(self, *, raise_errors: bool) -> None:
        with self._lock:
            self._services_on = True
            slots = [slot for slot in self._services if not slot.started]
        for slot in slots:
            try:
                slot.service.start(self)
                slot.started = True
            except Exception:
                if raise_errors:
                    raise
                _log.exception("service %r failed to start", slot.service)

    def _tick_services(self, *, raise_errors: bool) -> None:
        for slot in list(self._services):
            if not slot.started:
                continue
            try:
                slot.due = slot.service.tick(self.clock.now())
            except Exception:
                if raise_errors:
                    raise
                _log.exception("service %r failed", slot.service)

    # -- internals: running a task --------------------------------------------------------

    def _run_task(self, task_id: str, *, sync: bool) -> None:
        task = self.task_store.get(task_id)
        if task is None or task.is_finished:
            return
        try:
            self._execute(task, sync=sync)
        except _Stopped:
            return
        except TaskFailure as failure:
            self._finish(task_id, Failure(failure.code, failure.description, failure.data))
        except CollectionNotFound as exc:
            self._finish(
                task_id,
                Failure(CODE_COLLECTION_NOT_FOUND, str(exc), {"collection": exc.collection}),
            )
        except SandboxNotEnabled as exc:
            self._finish(
                task_id,
                Failure(CODE_SANDBOX_NOT_ENABLED, str(exc), {"collection": exc.collection}),
            )
        except InvalidItem as exc:
            # The storage refused an item the task wrote (create-time validation keeps
            # option values storable, so this is a custom executor's doing): a clear
            # whole-task failure, never an exception escaping run_until_idle.
            _log.warning("task %s wrote an item the storage refused: %s", task_id, exc)
            data = {"itemId": exc.item_id} if exc.item_id is not None else None
            self._finish(task_id, Failure(CODE_STORAGE, f"storage refused an item: {exc}", data))
        except StorageError as exc:
            _log.warning("task %s failed on storage errors: %s", task_id, exc)
            self._finish(task_id, Failure(CODE_STORAGE, f"storage error: {exc}", None))
        except Exception as exc:
            _log.exception("task %s failed unexpectedly", task_id)
            description = f"unexpected error: {type(exc).__name__}: {exc}"
            self._finish(task_id, Failure(CODE_STORAGE, description, None))
            if sync:
                raise

    def _execute(self, task: Task, *, sync: bool) -> None:
        task_type = self._types.get(task.type)
        if task_type is None:
            raise TaskFailure(CODE_STORAGE, f"task type {task.type!r} is not registered")
        options = self._typed_options(task, task_type)
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
            with self._changed:
                current = self.task_store.get(task.id)
                if current is None or current.status is not TaskStatus.NEW:
                    return  # cancelled (or removed) while planning
                task = current.started(self.clock.now(), estimate)
                self.task_store.save(task)
                self._after_save(task)
        checkpoint = task.checkpoint
        batch_size = self.batch_size
        collection, environment, accept = plan.collection, plan.environment, plan.filter
        apply, committed = executor.apply, executor.committed
        cancels, stopping = self._cancels, self._stopping
        task_id = task.id

        # Tasks on the same item set take turns batch by batch, so one task's
        # read-apply-write of an item never interleaves with another's (no lost updates).
        target_lock = self._target_lock(collection, str(environment))

        # The protocol lets an adapter return items its filter rejects, so the engine
        # re-checks, except on adapters known to filter exactly (a second call per item).
        recheck = accept if accept is not None and not _filters_exactly(storage) else None
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
                self._finish(task_id, Failure.cancelled())
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
        with self._lock:
            lock = self._target_locks.get((collection, environment))
            if lock is None:
                lock = self._target_locks[(collection, environment)] = threading.Lock()
            return lock

    def _typed_options(self, task: Task, task_type: TaskType) -> TaskOptions:
        if not isinstance(task.options, RawOptions):
            return task.options
        where = f"task.{task_type.options_key}"
        parsed, problems = task_type.parse_options(task.options.to_json(), where)
        if parsed is None or problems:
            listed = "; ".join(f"{v.field}: {v.description}" for v in problems)
            raise TaskFailure(CODE_STORAGE, f"stored options no longer valid: {listed}")
        return parsed

    def _retry(self, action: Callable[[], _T], sync: bool) -> _T:
        attempt = 0
        while True:
            try:
                return action()
            except (CollectionNotFound, SandboxNotEnabled, DuplicateItem, InvalidItem):
                raise
            except StorageError as exc:
                if attempt >= self.max_retries:
                    raise
                delay = self.retry_delay * (2**attempt)
                attempt += 1
                _log.info("storage error, retry %d in %.3fs: %s", attempt, delay, exc)
                if self._stopping.wait(delay) and not sync:
                    raise _Stopped from exc

    def _commit(
        self, task_id: str, plan: Plan, changes: BatchChanges, cursor: str | None
    ) -> tuple[WriteResult | None, bool]:
        """Write one batch and its checkpoint; return (written, task finished)."""
        storage = self.storage
        with self._changed:
            with storage.atomic():
                current = self._running.get(task_id) if self._private_store else None
                if current is None:
                    current = self.task_store.get(task_id)
                if current is None or current.status is not TaskStatus.RUNNING:
                    return None, True
                try:
                    written = self._write(plan, changes)
                    updated = self._outcome(current, plan, changes, written, cursor)
                    if self._shared:
                        self.task_store.save(updated)
                except _WHOLE_TASK:
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
            self._after_save(updated)
            return written, updated.is_finished

    def _settle(
        self, task_id: str, plan: Plan, unsettled: _Unsettled, target_lock: threading.Lock
    ) -> tuple[WriteResult | None, bool, StorageError | None]:
        """Finish a batch whose write failed and may have written part of it.

        Each attempt reads the batch's items back and proves, item by item, what is
        already written (a deleted item is gone, a replaced one equals its new value);
        then it writes only the rest, with the changes computed once. Never rescans or
        re-applies, so no change lands twice. When the retries run out, the items proven
        written are counted and the error to fail the task with (``WDE0054``) is returned
        with them: ``(written, task finished, error or None)``.
        """
        storage = self.storage
        collection, env = plan.collection, plan.environment
        changes = unsettled.changes
        deletes = list(dict.fromkeys(changes.deletes))
        replaces = {item["_id"]: item for item in changes.replaces}  # the last one wins
        done: list[str] = []
        missing: list[str] = []
        error = unsettled.error
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries  # a last look: count what is proven, no write
            time.sleep(self.retry_delay * (2**attempt))
            _log.info("settling a failed batch (attempt %d): %s", attempt + 1, error)
            try:
                with target_lock:
                    gone, kept = _read_back(storage, collection, env, deletes, replaces)
                    done.extend(gone)
                    gone_ids = set(gone)
                    deletes = [item_id for item_id in deletes if item_id not in gone_ids]
                    done.extend(item_id for item_id, item in kept.items() if item is not None)
                    missing.extend(item_id for item_id, item in kept.items() if item is None)
                    replaces = {k: v for k, v in replaces.items() if k not in kept}
                    if last or not (deletes or replaces):
                        break
                    if deletes:
                        result = storage.delete_items(collection, env, deletes)
                        deletes = []
                        done.extend(result.done)
                        missing.extend(result.missing)
                    if replaces:
                        result = storage.replace_items(collection, env, list(replaces.values()))
                        replaces = {}
                        done.extend(result.done)
                        missing.extend(result.missing)
                    break
            except _WHOLE_TASK:
                raise
            except StorageError as exc:
                error = exc
        written = WriteResult(tuple(done), tuple(missing))
        unknown = len(deletes) + len(replaces)

        def record() -> Task | None:
            with self._changed:
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
                self._after_save(updated)
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

    def _write(self, plan: Plan, changes: BatchChanges) -> WriteResult:
        storage = self.storage
        plan_collection, plan_env = plan.collection, plan.environment
        deleted = (
            storage.delete_items(plan_collection, plan_env, changes.deletes)
            if changes.deletes
            else None
        )
        replaced = (
            storage.replace_items(plan_collection, plan_env, changes.replaces)
            if changes.replaces
            else None
        )
        done: tuple[str, ...] = ()
        missing: tuple[str, ...] = ()
        for result in (deleted, replaced):
            if result is not None:
                done += result.done
                missing += result.missing
        return WriteResult(done, missing)

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

    def _finish(self, task_id: str, failure: Failure) -> None:
        try:
            with self._changed:
                current = self.task_store.get(task_id)
                if current is None or current.is_finished:
                    return
                now = self.clock.now()
                if current.status is TaskStatus.NEW and failure.code != Failure.cancelled().code:
                    current = current.started(now, 0)
                updated = current.finished(TaskStatus.FAILED, now, self.retention, failure)
                self.task_store.save(updated)
                self._after_save(updated)
        except StorageError:
            # The store is down too: the task stays as last saved and resumes on restart.
            _log.exception("could not record the failure of task %s", task_id)

    def _after_save(self, task: Task) -> None:
        """Bookkeeping after a task change was saved (engine lock held)."""
        if task.status is TaskStatus.RUNNING:
            self._running[task.id] = task
        else:
            self._running.pop(task.id, None)
        if task.is_finished:
            self._cancels.discard(task.id)
            if task.expires_at is not None:
                self._expiry.add((task.expires_at, task.id))
        elif task.cancel_requested:
            self._cancels.add(task.id)
        self._changed.notify_all()


def _unencodable(spec: Any, path: str) -> list[Violation]:
    """Every part of a task spec that its JSON text could not carry (see ``check_json``)."""
    found: list[Violation] = []
    check_json(spec, path, found)  # bounded: it stops at the wire's nesting limit
    return found


def _merge_violations(first: list[Violation], more: list[Violation]) -> list[Violation]:
    """``first``, then those of ``more`` not at or under one of ``first``'s paths."""
    taken = {v.field for v in first}
    merged = list(first)
    for violation in more:
        field = violation.field
        if field in taken or any(field.startswith(f"{t}.") for t in taken):
            continue
        merged.append(violation)
    return merged


_WHOLE_TASK = (CollectionNotFound, SandboxNotEnabled, DuplicateItem, InvalidItem)
"""Errors that end the task at once: never retried, never settled."""


def _vanished(missing: Iterable[str]) -> list[Failure]:
    return [
        Failure(CODE_ITEM_VANISHED, f"item {item_id!r} no longer exists", {"itemId": item_id})
        for item_id in missing
    ]


def _read_back(
    storage: Storage,
    collection: str,
    environment: Any,
    deletes: list[str],
    replaces: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[str, Item | None]]:
    """What a failed write left: the deletes proven done, and the replaces proven settled.

    Returns the ids of ``deletes`` no longer stored, and for each id of ``replaces`` that
    is no longer stored (``None``: the item vanished) or already holds its new value,
    that stored item. Everything else is proven unwritten (it still differs).
    """
    gone = [i for i in deletes if storage.get_item(collection, environment, i) is None]
    kept: dict[str, Item | None] = {}
    for item_id, item in replaces.items():
        stored = storage.get_item(collection, environment, item_id)
        if stored is None or identical(stored, dict(item)):
            kept[item_id] = stored
    return gone, kept


def _rolls_back(storage: Storage) -> bool:
    """Whether the adapter declares that ``atomic()`` undoes a failed block's writes.

    Read from the ``atomic_rolls_back`` attribute of the Storage protocol; anything but
    ``True`` (an adapter written before the attribute existed) counts as no rollback.
    """
    return getattr(storage, "atomic_rolls_back", False) is True


_EXACT_SCANS: dict[type, bool] = {}


def _filters_exactly(storage: Storage) -> bool:
    """Whether ``storage.scan(filter=f)`` returns only items ``f`` accepts.

    True for an adapter that says so with a true ``scan_filters_exactly`` attribute, and
    for ``MemoryStorage`` / ``SQLiteStorage`` (and subclasses that keep their ``scan``),
    which apply the filter to every item they return.
    """
    declared = getattr(storage, "scan_filters_exactly", None)
    if isinstance(declared, bool):
        return declared
    kind = type(storage)
    known = _EXACT_SCANS.get(kind)
    if known is None:
        from taskengine.storage.memory import MemoryStorage
        from taskengine.storage.sqlite import SQLiteStorage

        scan = getattr(kind, "scan", None)
        known = _EXACT_SCANS[kind] = scan is MemoryStorage.scan or scan is SQLiteStorage.scan
    return known
