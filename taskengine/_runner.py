"""The engine's threads: workers, housekeeper, owner loop and listener; and the same work
done in the caller's thread by ``run_until_idle``.

A :class:`Runner` owns *when* tasks run, never *how* (that is :mod:`taskengine._batches`):
it starts and stops the threads of a ``TaskEngine``, resumes unfinished tasks (once, on
the first start or ``run_until_idle``), takes a task from the work queue, claims its lease
(:mod:`taskengine._ownership`), runs it and releases the lease. Threads:

- ``workers`` worker threads, each running one claimed task at a time;
- the housekeeper: the retention sweep, slice housekeeping and service ticks, woken when
  a service is due (or every ``tick_interval``);
- the owner thread: renews the engine's leases and looks for work other engines created
  or left, every ``poll_interval`` (at most a sixth of the lease);
- the listener, on a task store that notifies (``listen``): new tasks, cancels and
  finished tasks heard at once (:class:`~taskengine._ownership.Watcher`).

Locks: the engine's lock (``changed``) guards only its bookkeeping (``cancels``) and is
taken after, never inside, a task store call; a runner holds no lock of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from taskengine._ownership import Watcher
from taskengine.errors import InvalidRequest, Violation
from taskengine.taskstore import NOTICE_CANCEL, NOTICE_DONE, Notices

if TYPE_CHECKING:
    from taskengine._batches import Batches
    from taskengine._ownership import Ownership
    from taskengine._queue import WorkQueue
    from taskengine._services import Services
    from taskengine._slices import Slices
    from taskengine.clock import Clock
    from taskengine.taskstore import TaskStore

__all__ = ["Runner"]

_log = logging.getLogger("taskengine.engine")


@attrs.define(eq=False)
class Runner:
    """Runs a ``TaskEngine``'s tasks, in its threads or in the caller's, sharing its state.

    Attributes:
        task_store: where tasks live.
        clock: where timestamps come from.
        workers: worker threads started by :meth:`start`.
        lease: how long a lease lasts without renewal (the heartbeat runs at a sixth).
        poll_interval: real seconds between looks at the store for work.
        tick_interval: real seconds between housekeeping rounds at most.
        adopt: whether tasks this engine did not create are run too.
        listen: whether the store's notifications are listened to when it offers them.
        changed: the engine lock, notified on every task change.
        stopping: set while the engine stops (shared with the batch loop).
        wake: set to wake the housekeeper early (a service was registered).
        cancels: ids of running tasks whose cancel was requested.
        queue: the engine's work queue.
        ownership: the engine's leases.
        services: the engine's services (ticked by their leader).
        slices: the engine's handling of sliced tasks.
        batches: the batch loop that runs one claimed task.
        sweep: the engine's retention sweep (``TaskEngine.sweep``).
    """

    task_store: TaskStore
    clock: Clock
    workers: int
    lease: timedelta
    poll_interval: float
    tick_interval: float
    adopt: bool
    listen: bool
    changed: threading.Condition
    stopping: threading.Event
    wake: threading.Event
    cancels: set[str]
    queue: WorkQueue
    ownership: Ownership
    services: Services
    slices: Slices
    batches: Batches
    sweep: Callable[[], int]
    _threads: list[threading.Thread] = attrs.field(factory=list, init=False)
    _watcher: Watcher | None = attrs.field(default=None, init=False)
    _recovered: bool = attrs.field(default=False, init=False)

    @property
    def running(self) -> bool:
        """Whether threads are running (between :meth:`start` and :meth:`stop`)."""
        return bool(self._threads)

    @property
    def listening(self) -> bool:
        """Whether the listener hears the store's notifications now."""
        watcher = self._watcher
        return watcher is not None and watcher.listening

    def start(self) -> None:
        """Resume tasks, activate services and start every thread (see
        ``TaskEngine.start``); nothing while running."""
        if self._threads:
            return
        self.stopping.clear()
        self._recover()
        self.services.activate()
        threads = [
            threading.Thread(target=self._worker, name=f"taskengine-worker-{n}", daemon=True)
            for n in range(self.workers)
        ]
        threads.append(
            threading.Thread(target=self._housekeeper, name="taskengine-housekeeper", daemon=True)
        )
        threads.append(
            threading.Thread(target=self._owner_loop, name="taskengine-owner", daemon=True)
        )
        opener: Callable[[], Notices] | None = (
            getattr(self.task_store, "listen", None) if self.listen else None
        )
        if opener is not None:
            self._watcher = Watcher(opener, self._heard, self._caught_up)
            threads.append(
                threading.Thread(target=self._watcher.run, name="taskengine-listener", daemon=True)
            )
        self._threads = threads
        for thread in threads:
            thread.start()

    def stop(self, timeout: float | None) -> None:
        """Stop every thread after its current batch, close the listener and release the
        leases once every thread ended (see ``TaskEngine.stop``)."""
        self.stopping.set()
        self.wake.set()
        self.queue.wake_all()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
        if not any(thread.is_alive() for thread in threads):
            self.ownership.release_all()
        with self.changed:
            self.changed.notify_all()

    def run_until_idle(self) -> int:
        """Run every queued task to its end in the caller's thread; return how many ran
        (see ``TaskEngine.run_until_idle``).

        Raises:
            InvalidRequest: the threads are running (they own the queue).
        """
        if self._threads:
            raise InvalidRequest(
                [Violation("run_until_idle", "the engine is started; stop it first")]
            )
        self.stopping.clear()
        if not self._recovered:
            self._recover()
        self.services.activate()
        ran = 0
        tried: set[str] = set()
        while True:
            self.sweep()
            self.services.tick(self.clock.now(), self.ownership.lead, raise_errors=True)
            task_id = self.queue.claim()
            if task_id is None:
                found = [
                    found_id
                    for found_id in self.ownership.candidates(self.clock.now(), self.workers + 8)
                    if found_id not in tried
                ]
                if not found:
                    if self.adopt and self.slices.housekeeping():
                        continue
                    return ran
                self.queue.put_missing(found)
                continue
            tried.add(task_id)
            try:
                if self._run_claimed(task_id, sync=True):
                    ran += 1
            finally:
                self.queue.release(task_id)

    # -- running one task ---------------------------------------------------------------

    def _recover(self) -> None:
        with self.changed:
            self._recovered = True
        if self.adopt:
            self.ownership.release_orphans()
            self.slices.housekeeping()
            found = self.ownership.candidates(self.clock.now(), max(64, self.workers * 4))
            self.queue.put_missing(found)

    def _run_claimed(self, task_id: str, *, sync: bool) -> bool:
        """Claim the task and run it (see :meth:`Batches.run`); ``False`` only when it is
        unfinished and could not be claimed (another engine owns it)."""
        hold = self.ownership.claim(task_id, self.clock.now())
        if hold is None:
            task = self.task_store.get(task_id)
            return task is None or task.is_finished
        try:
            task = self.task_store.get(task_id)
            if task is not None and task.cancel_requested and not task.is_finished:
                with self.changed:
                    self.cancels.add(task_id)
            with self._heartbeat_unless_started():
                self.batches.run(task_id, hold, sync=sync)
        finally:
            self.ownership.release(hold)
        return True

    @contextlib.contextmanager
    def _heartbeat_unless_started(self) -> Iterator[None]:
        """Renew the engine's leases while a task runs in ``run_until_idle``.

        A started engine's owner thread renews them; ``run_until_idle`` has no such
        thread, so without this a count or a batch longer than the lease would lose the
        task to another engine (and leave it NEW, or stop it mid-way, until then).
        """
        if self._threads:
            yield
            return
        done = threading.Event()
        period = min(self.poll_interval, self.lease.total_seconds() / 6)

        def beat() -> None:
            while not done.wait(period):
                try:
                    self.ownership.heartbeat(self.clock.now())
                except Exception:
                    _log.exception("renewing leases failed")

        thread = threading.Thread(target=beat, name="taskengine-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # -- the threads --------------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stopping.is_set():
            self.queue.wait(self.stopping)
            if self.stopping.is_set():
                return
            task_id = self.queue.claim()
            if task_id is None:
                continue
            try:
                self._run_claimed(task_id, sync=False)
            except Exception:
                _log.exception("worker failed on task %s", task_id)
            finally:
                self.queue.release(task_id)

    def _owner_loop(self) -> None:
        """Renew leases, and look for work other engines created or left behind."""
        period = min(self.poll_interval, self.lease.total_seconds() / 6)
        while not self.stopping.is_set():
            try:
                now = self.clock.now()
                self.ownership.heartbeat(now)
                self._look_for_work(now)
            except Exception:
                _log.exception("looking for work failed")
            self.stopping.wait(period)

    def _look_for_work(self, now: datetime) -> None:
        found = self.ownership.candidates(now, self.workers * 2)
        if found:
            self.queue.put_missing(found)

    def _housekeeper(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sweep()
                if self.adopt:
                    self.slices.housekeeping()
                self.services.tick(self.clock.now(), self.ownership.lead, raise_errors=False)
            except Exception:
                _log.exception("housekeeping failed")
            self.wake.wait(self.services.seconds_until_due(self.clock.now(), self.tick_interval))
            self.wake.clear()

    # -- notifications (the listener thread) --------------------------------------------

    def _heard(self, task_id: str, kind: str) -> None:
        """Act on a store notice: claim a new task, stop a cancelled one, wake waiters.

        A notice is a hint: a claim decides whether the task is ours, and a cancel is
        read back from the store before the runner is told.
        """
        if kind != NOTICE_DONE:
            if self.ownership.holds(task_id):
                # A held task cannot be new: a bare id is a cancel from a store that
                # named no kinds.
                self._check_cancel(task_id)
            elif (
                kind != NOTICE_CANCEL
                and self.ownership.eligible(task_id)
                and not self.ownership.knows(task_id)
            ):
                self.queue.put_missing((task_id,))
        with self.changed:
            self.changed.notify_all()

    def _check_cancel(self, task_id: str) -> None:
        """Read a held task; a cancel requested stops its runner before its next batch."""
        task = self.task_store.get(task_id)
        if task is not None and task.cancel_requested and not task.is_finished:
            with self.changed:
                self.cancels.add(task_id)
            _log.debug("task %s: a cancel was requested elsewhere; stopping it", task_id)

    def _caught_up(self) -> None:
        """After (re)connecting the listener: what it may have missed, looked up now."""
        self._look_for_work(self.clock.now())
        for task_id in self.ownership.held():
            self._check_cancel(task_id)
        with self.changed:
            self.changed.notify_all()
