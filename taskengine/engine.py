"""``TaskEngine``: the public API, task lifecycle, the queue, worker threads, retention.

The engine owns the tasks' state and one lock; how a task runs batch by batch (retries,
settling after failed writes) is :mod:`taskengine._batches`, and reading task JSON is
:mod:`taskengine._taskjson`. The engine imports no task type: with ``task_types=None``
it resolves the plug-in named by :attr:`TaskEngine.DEFAULT_TASK_TYPES`.

Every change to a task happens under one engine lock, in this order: engine lock ->
``storage.atomic()`` -> task store. Readers (``get_task``, ``list_tasks``,
``get_progress``) only touch the task store, so they never wait for a batch's item
writes (except on a shared SQLite database, which serialises everything anyway).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine._batches import Batches
from taskengine._queue import WorkQueue
from taskengine._services import Services, load_plugin
from taskengine._taskjson import read_create
from taskengine._values import INT64_MAX
from taskengine.clock import Clock, SystemClock
from taskengine.errors import InvalidRequest, TaskNotFound, Violation
from taskengine.progress import Progress
from taskengine.task import Failure, Task, TaskStatus
from taskengine.taskstore import MemoryTaskStore, TaskStore
from taskengine.tasktype import Service, TaskType

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = [
    "MAX_PAGE",
    "TaskEngine",
    "TaskPage",
]

_log = logging.getLogger("taskengine.engine")

MAX_PAGE = 100
"""The largest ``limit`` :meth:`TaskEngine.list_tasks` accepts."""
MAX_OFFSET = INT64_MAX
"""The largest ``offset`` :meth:`TaskEngine.list_tasks` accepts (SQLite's largest integer)."""


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
        task_types: the task types to register; ``None`` registers the built-in ones
            and their services, from the plug-in named by :attr:`DEFAULT_TASK_TYPES`.
        max_retries: how many times a batch hit by a ``StorageError`` is retried before
            the task fails with ``WDE0054``.
        retry_delay: seconds before the first retry (doubled each time).
        tick_interval: real seconds between housekeeping rounds (the retention sweep and
            service ticks) while started.

    Raises:
        InvalidRequest: a setting out of range (named by its argument name).
    """

    DEFAULT_TASK_TYPES: ClassVar[str] = "taskengine.tasktypes:default_task_types"
    """Where the built-in task types come from, as ``"module:function"``.

    The function takes no arguments and returns an object with ``task_types`` (the
    :class:`~taskengine.tasktype.TaskType` s) and ``services`` (the
    :class:`~taskengine.tasktype.Service` s they need), such as
    :class:`taskengine.tasktypes.BuiltinTypes`. Resolved by name, like an entry
    point, only when an engine is made with ``task_types=None``.
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

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queue = WorkQueue()
        self._cancels: set[str] = set()
        self._running: dict[str, Task] = {}  # latest saved snapshot of RUNNING tasks
        self._expiry = SortedList()
        self._expiry_loaded = False
        self._types: dict[str, TaskType] = {}
        self._services = Services(storage)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._recovered = False

        self._batches = Batches(
            storage=self.storage,
            task_store=self.task_store,
            clock=self.clock,
            retention=retention,
            batch_size=batch_size,
            max_retries=max_retries,
            retry_delay=self.retry_delay,
            task_types=self._types,
            changed=self._changed,
            stopping=self._stopping,
            cancels=self._cancels,
            running=self._running,
            after_save=self._after_save,
        )
        if task_types is None:
            task_types, services = load_plugin(self.DEFAULT_TASK_TYPES)
            for service in services:
                self.register_service(service)
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
        if self._services.add(service):
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
        self._services.start(raise_errors=False)
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
        self._queue.wake_all()
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
        self._services.start(raise_errors=True)
        ran = 0
        while True:
            self.sweep()
            self._services.tick(self.clock.now(), raise_errors=True)
            task_id = self._queue.claim()
            if task_id is None:
                return ran
            try:
                self._batches.run(task_id, sync=True)
            finally:
                self._queue.release(task_id)
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
        task_type, options = read_create(spec, self._types)
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
        self._queue.put(task.id)
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
        task = self._get_live(task_id)
        return Progress.of(task, self._types.get(task.type))

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

    # -- internals: workers -------------------------------------------------------------

    def _recover(self) -> None:
        unfinished = self.task_store.unfinished()
        with self._lock:
            self._expiry = SortedList(self.task_store.expiring())
            self._expiry_loaded = True
            for task in unfinished:
                if task.cancel_requested:
                    self._cancels.add(task.id)
            self._recovered = True
        self._queue.put_missing(task.id for task in unfinished)

    def _worker(self) -> None:
        while not self._stopping.is_set():
            self._queue.wait(self._stopping)
            if self._stopping.is_set():
                return
            task_id = self._queue.claim()
            if task_id is None:
                continue
            try:
                self._batches.run(task_id, sync=False)
            except Exception:  # pragma: no cover - run() already records and logs
                _log.exception("worker failed on task %s", task_id)
            finally:
                self._queue.release(task_id)

    def _housekeeper(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sweep()
                self._services.tick(self.clock.now(), raise_errors=False)
            except Exception:
                _log.exception("housekeeping failed")
            self._wake.wait(self._services.seconds_until_due(self.clock.now(), self.tick_interval))
            self._wake.clear()

    # -- internals: bookkeeping -------------------------------------------------------

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

