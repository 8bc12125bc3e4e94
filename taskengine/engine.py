"""``TaskEngine``: the public API, task lifecycle, cancellation, retention.

The engine owns the tasks' state and one lock; its threads (workers, housekeeping, the
owner loop, the listener) and ``run_until_idle``'s loop are :mod:`taskengine._runner`,
how a task runs batch by batch (retries,
settling after failed writes) is :mod:`taskengine._batches`, how it shares a task store
with other engines (leases, heartbeat, takeover) is :mod:`taskengine._ownership`, and
reading task JSON is :mod:`taskengine._taskjson`. The engine imports no task type: with
``task_types=None`` it resolves the plug-in named by :attr:`TaskEngine.DEFAULT_TASK_TYPES`.

Every change to a task is one atomic ``TaskStore.update`` (fenced by the lease when the
engine runs the task), so engines sharing a store never lose each other's changes. The
engine lock guards only the engine's own bookkeeping and is never taken inside
``storage.atomic()``. Readers (``get_task``, ``list_tasks``, ``get_progress``) only
touch the task store, so they never wait for a batch's item writes (except on a shared
SQLite database, which serialises everything anyway).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from taskengine._batches import Batches
from taskengine._lease import new_owner_id
from taskengine._ownership import Ownership
from taskengine._paging import MAX_OFFSET, MAX_PAGE, TaskPage, check_paging
from taskengine._queue import WorkQueue
from taskengine._retention import live_task, sweep_expired
from taskengine._runner import Runner
from taskengine._services import Services, load_plugin
from taskengine._setstep import SetBatchSizing
from taskengine._settings import check_settings
from taskengine._slices import Slices
from taskengine._taskjson import read_create
from taskengine.clock import Clock, SystemClock
from taskengine.errors import InvalidRequest, TaskNotFound, Violation
from taskengine.progress import Progress
from taskengine.task import MAX_SLICES, Task
from taskengine.taskstore import MemoryTaskStore, TaskStore
from taskengine.tasktype import Service, TaskType

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = [
    "MAX_OFFSET",
    "MAX_PAGE",
    "TaskEngine",
    "TaskPage",
]


class TaskEngine:
    """Runs background tasks over an item storage.

    Args:
        storage: the item storage (``MemoryStorage``, ``SQLiteStorage``, an adapter).
        task_store: where tasks live; default a new :class:`MemoryTaskStore`. Use a
            ``SQLiteTaskStore`` for durability (built on the storage's database, each
            batch and its checkpoint commit in one transaction).
        workers: worker threads started by :meth:`start`.
        batch_size: items per batch (one scan page, one write, one checkpoint).
        set_batch_size: rows per batch that the storage runs itself (set-based batches,
            ``ChangingStorage``: one statement per batch on SQLite), every such batch;
            default ``None``: sized by time (see ``set_batch_seconds``). Such a batch
            costs a fraction of a scan-path batch per item, so a larger one keeps
            checkpoints about as frequent in time, with far fewer commits.
        set_batch_seconds: with ``set_batch_size=None``, on a storage that declares
            ``batches_by_time`` (SQLite, PostgreSQL; not memory, where every set-based
            batch covers ten times ``batch_size`` rows), the time a set-based batch aims
            at: the first covers ten times ``batch_size`` rows, and each next one as
            many as the one before would have covered in this time (at most twice as
            many, at least a quarter), between ``batch_size`` and a hundred times
            ``batch_size`` rows. A cancel, a stop or a lost lease takes effect between
            batches, so this is also about how long they wait. Default 0.1 s (measured
            at 1M items on PostgreSQL: a ``DELETE_BY_QUERY`` 1.9x a hand-written
            ``DELETE`` with batches of 5,000 rows, 1.5-1.6x with 50,000).
        retention: how long finished tasks are kept (their ``expiresAt``).
        clock: where timestamps come from; default the system clock.
        task_types: the task types to register; ``None`` registers the built-in ones
            and their services, from the plug-in named by :attr:`DEFAULT_TASK_TYPES`.
        max_retries: how many times a batch hit by a ``StorageError`` is retried before
            the task fails with ``WDE0054``.
        retry_delay: seconds before the first retry (doubled each time).
        tick_interval: real seconds between housekeeping rounds (the retention sweep and
            service ticks) while started.
        lease: how long the engine's claim on a task (and on a service's leadership)
            lasts without renewal. The engine renews it as it runs (with each batch, and
            from a timer during a long one), so it only runs out when the engine died,
            hung or lost the store; another engine then takes the task over from its last
            checkpoint. Must be longer than the longest batch.
        poll_interval: real seconds between looks at the task store for work other
            engines created or left (and between lease renewals checks). On a store
            that notifies (``PostgresTaskStore``) new tasks, cancels and finished tasks
            are heard at once, and the poll only covers what a lost connection missed.
        listen: whether a started engine listens to the task store's notifications when
            it offers them (:class:`~taskengine.taskstore.Notifying`); turn it off where
            the connection cannot ``LISTEN`` (a transaction-pooling PgBouncer), and the
            engine polls only.
        adopt: whether this engine runs tasks it did not create: unfinished tasks found
            in the store, tasks other engines create, and tasks whose owner died. The
            command line's ``run`` turns it off so that it runs only its own task.
        owner: this engine's id in the store's leases; default a fresh
            ``host:pid:random`` id (:func:`~taskengine.taskstore.new_owner_id`).

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
        set_batch_size: int | None = None,
        set_batch_seconds: float = 0.1,
        retention: timedelta = timedelta(days=30),
        clock: Clock | None = None,
        task_types: Iterable[TaskType] | None = None,
        max_retries: int = 3,
        retry_delay: float = 0.05,
        tick_interval: float = 1.0,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 0.5,
        adopt: bool = True,
        owner: str | None = None,
        listen: bool = True,
    ) -> None:
        check_settings(
            workers=workers,
            batch_size=batch_size,
            set_batch_size=set_batch_size,
            set_batch_seconds=set_batch_seconds,
            retention=retention,
            max_retries=max_retries,
            retry_delay=retry_delay,
            tick_interval=tick_interval,
            lease=lease,
            poll_interval=poll_interval,
            adopt=adopt,
            owner=owner,
            listen=listen,
        )
        self.storage: Storage = storage
        self.task_store: TaskStore = task_store if task_store is not None else MemoryTaskStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.workers = workers
        self.batch_size = batch_size
        self.set_batch_size = 10 * batch_size if set_batch_size is None else set_batch_size
        self.set_batch_seconds: float | None = (
            float(set_batch_seconds) if set_batch_size is None else None
        )
        self.retention = retention
        self.max_retries = max_retries
        self.retry_delay = float(retry_delay)
        self.tick_interval = float(tick_interval)
        self.lease = lease
        self.poll_interval = float(poll_interval)
        self.adopt = adopt
        self.listen = listen
        self.owner: str = owner if owner is not None else new_owner_id()
        self._ownership = Ownership(self.task_store, self.owner, lease, adopt)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queue = WorkQueue()
        self._cancels: set[str] = set()
        self._types: dict[str, TaskType] = {}
        self._services = Services(
            storage,
            resync=None if getattr(self.task_store, "process_private", False) else lease,
        )
        self._stopping = threading.Event()
        self._wake = threading.Event()

        self._slices = Slices(self.task_store, self.clock, retention, self._saved)
        self._batches = Batches(
            storage=self.storage,
            task_store=self.task_store,
            clock=self.clock,
            retention=retention,
            batch_size=batch_size,
            set_batch_sizing=SetBatchSizing(
                self.set_batch_size, batch_size, 100 * batch_size, self.set_batch_seconds
            ),
            max_retries=max_retries,
            retry_delay=self.retry_delay,
            task_types=self._types,
            changed=self._changed,
            stopping=self._stopping,
            cancels=self._cancels,
            ownership=self._ownership,
            after_save=self._after_save,
            slices=self._slices,
        )
        self._runner = Runner(
            task_store=self.task_store,
            clock=self.clock,
            workers=workers,
            lease=lease,
            poll_interval=self.poll_interval,
            tick_interval=self.tick_interval,
            adopt=adopt,
            listen=listen,
            changed=self._changed,
            stopping=self._stopping,
            wake=self._wake,
            cancels=self._cancels,
            queue=self._queue,
            ownership=self._ownership,
            services=self._services,
            slices=self._slices,
            batches=self._batches,
            sweep=self.sweep,
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
        return self._runner.running

    @property
    def listening(self) -> bool:
        """Whether the started engine hears the task store's notifications now: ``False``
        on a store that offers none, with ``listen=False``, and while a lost connection
        is being opened again (the engine polls meanwhile)."""
        return self._runner.listening

    def owned(self) -> tuple[str, ...]:
        """Ids of the tasks this engine holds a lease on now (the tasks it is running)."""
        return tuple(self._ownership.held())

    def start(self) -> None:
        """Start the worker threads, housekeeping, the owner thread and, on a store that
        notifies, the listener thread; resume tasks.

        Unfinished tasks no live engine owns (with ``adopt``) are claimed and run, oldest
        first, a RUNNING one from its checkpoint; tasks other engines create or leave
        behind are found within ``poll_interval`` (tasks created elsewhere at once, when
        the store notifies). Idempotent while running.
        """
        self._runner.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the workers after their current batch; RUNNING tasks stay resumable.

        The engine's leases (tasks and service leadership) are released, so another
        engine on the store goes on at once instead of after the lease runs out. The
        listener's connection is closed.

        Args:
            timeout: seconds to wait for each thread (``None`` = as long as it takes).
        """
        self._runner.stop(timeout)

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
        return self._runner.run_until_idle()

    # -- the API ------------------------------------------------------------------------

    def create_task(self, spec: Any, *, slices: int = 1) -> Task:
        """Validate and store a new task, queued to run; return it (NEW).

        Args:
            spec: the task JSON (``{"type": ..., "<x>Options": {...}}``, optionally
                wrapped as ``{"task": {...}}``) or typed options of a registered type
                (e.g. ``EditFieldDataOptions(...)``).
            slices: run the task as this many ``_id`` ranges (1..64), each a hidden
                slice any worker of the store may run, with one combined progress
                (docs/slices.md). ``1`` (the default) runs it as one task. On a task
                store or storage that cannot keep or split slices the task runs
                unsliced.

        Raises:
            InvalidRequest: ``slices`` is not an integer in 1..64 (field ``slices``);
                nothing is stored.
            InvalidTask: every violation by JSON path (``task.type: required``); nothing
                is stored.
        """
        if type(slices) is not int or not 1 <= slices <= MAX_SLICES:
            raise InvalidRequest(
                [Violation("slices", f"must be an integer in 1..{MAX_SLICES}, got {slices!r}")]
            )
        task_type, options = read_create(spec, self._types)
        task = Task(
            id=str(uuid.uuid4()),
            type=task_type.name,
            options_key=task_type.options_key,
            options=options,
            created_at=self.clock.now(),
            slices=slices if self._slices.enabled else 1,
        )
        self._ownership.created(task.id)
        with self._changed:
            self.task_store.insert(task)
            self._changed.notify_all()
        self._queue.put(task.id)
        return task

    def get_task(self, task_id: str) -> Task:
        """The task as it is now (a sliced task with its slices' progress).

        A slice's own id (``"<id>~<n>"``) gives the slice itself (``sliceOf`` names its
        task); lists never show slices.

        Raises:
            TaskNotFound: no such task, or it has expired.
        """
        return self._slices.view(self._get_live(task_id))

    def list_tasks(self, limit: int = 30, offset: int = 0) -> TaskPage:
        """A page of tasks, newest first, with the total number of tasks.

        Raises:
            InvalidRequest: ``limit`` not in ``1..100`` (field ``paging.limit``) or
                ``offset`` not in ``0..MAX_OFFSET`` (field ``paging.offset``), the same on
                every task store.
        """
        check_paging(limit, offset)
        self.sweep()
        tasks, total = self.task_store.page(limit, offset)
        return TaskPage(tuple(map(self._slices.view, tasks)), offset, total)

    def cancel_task(self, task_id: str) -> Task:
        """Cancel a task and return it as it is now.

        NEW ends FAILED with a ``CANCELLED`` failure at once; RUNNING shows
        ``cancelRequested`` at once and ends FAILED/``CANCELLED`` after its current
        batch (counters kept); a finished task is returned unchanged.

        A sliced task that started asks each unfinished slice to cancel too (a NEW
        one ends at once, a running one after its batch) and ends FAILED/``CANCELLED``
        when its last slice ended.

        Raises:
            TaskNotFound: no such task, or it has expired.
            InvalidRequest: ``task_id`` is a slice (field ``task_id``): cancel its task.
        """
        task = self._get_live(task_id)
        if task.parent is not None:
            raise InvalidRequest(
                [Violation("task_id", f"a slice of task {task.parent!r}: cancel that task")]
            )
        if task.is_finished or task.cancel_requested:
            return self._slices.view(task)
        now = self.clock.now()

        def change(current: Task) -> Task | None:
            # One atomic step in the store: a checkpoint or a start by the task's owner
            # (maybe another process) cannot come between the read and the write.
            return current.cancel_asked(now, self.retention)

        updated = self.task_store.update(task_id, change)
        if updated is None:
            raise TaskNotFound(task_id)
        with self._changed:
            self._after_save(updated)
        if updated.is_sliced and not updated.is_finished:
            updated = self._slices.cancel_slices(updated) or self._slices.view(updated)
        return updated

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until the task is finished or ``timeout`` seconds passed; return it.

        The returned task may still be unfinished when the timeout ran out (check
        ``task.is_finished``). Waiting uses real time, whatever the engine's clock. A
        task another engine runs is re-read from the store every ``poll_interval``, and
        at once when a started engine hears from the store that it finished.

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
                    return self._slices.view(task)
                period = self.poll_interval
                self._changed.wait(period if remaining is None else min(remaining, period))

    def get_progress(self, task_id: str) -> Progress:
        """The progress view of a task (see docs/progress.md).

        Raises:
            TaskNotFound: no such task, or it has expired.
        """
        task = self._slices.view(self._get_live(task_id))
        return Progress.of(task, self._types.get(task.type))

    def sweep(self, now: datetime | None = None) -> int:
        """Remove every finished task whose ``expiresAt`` has passed; return how many.

        Runs on its own while the engine is started (every ``tick_interval``), and
        before every list; reads of an expired task also remove it.
        """
        moment = self.clock.now() if now is None else now
        return sweep_expired(self.task_store, self._slices, moment)

    # -- internals: reads ---------------------------------------------------------------

    def _get_live(self, task_id: str) -> Task:
        return live_task(self.task_store, self.clock, task_id)

    # -- internals: bookkeeping -------------------------------------------------------

    def _saved(self, task: Task) -> None:
        """Bookkeeping after a change to a task was saved (takes the engine lock)."""
        with self._changed:
            self._after_save(task)

    def _after_save(self, task: Task) -> None:
        """Bookkeeping after a task change was saved (engine lock held)."""
        if task.is_finished:
            self._cancels.discard(task.id)
        elif task.cancel_requested:
            self._cancels.add(task.id)
        self._changed.notify_all()
