"""An engine's side of task ownership: its leases, their heartbeat, and finding work.

Several engines (threads sharing a ``MemoryTaskStore``, processes sharing a SQLite file)
may use one task store. The store keeps who owns what (:mod:`taskengine._lease`, the
``TaskStore`` ownership contract); this module is what one engine does with it:

* **claim** a task before running it (:meth:`Ownership.claim`), and give it up when its
  run ends or the engine stops (:meth:`Ownership.release`), so another engine can go on
  at once instead of after the lease runs out;
* **fence** every batch (:meth:`Ownership.fence`, inside the batch's transaction): the
  lease is checked, and renewed once a third of it has passed, so a stale owner's batch
  is refused and rolled back;
* **heartbeat** (:meth:`Ownership.heartbeat`, from the engine's owner thread): renew the
  leases of long batches; a lease found lost marks its :class:`Hold`, and the task's
  runner stops at its next step;
* **find work** (:meth:`Ownership.candidates`): tasks no live engine owns, oldest first.
  A task whose owner is a process of this host that no longer exists is released at
  once (its lease would otherwise run for up to ``lease``): the owner id names host and
  pid (:func:`~taskengine._lease.new_owner_id`);
* **lead** a role (:meth:`Ownership.lead`): services such as the publish scheduler run in
  one engine at a time, the holder of the role's leader lease (a leader that is an exited
  process of this host is replaced at once, like a task's owner);
* **listen** (:class:`Watcher`, on a store that offers notifications): new tasks, cancel
  requests and finished tasks are heard as they commit, so the engine claims, stops or
  wakes its waiters at once; polling stays, for what a dropped connection missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from taskengine._lease import Lease, owner_is_gone
from taskengine.errors import LeaseLost, StorageError
from taskengine.taskstore import read_notice

if TYPE_CHECKING:
    from taskengine.taskstore import Notices, TaskStore

__all__ = ["Hold", "Ownership", "Watcher"]


_log = logging.getLogger("taskengine.engine")

_DEAD_CHECK_EVERY = 1.0  # real seconds between looks for leases of exited local processes
_RECONNECT_FIRST = 0.1  # real seconds before listening again after a lost connection ...
_RECONNECT_MAX = 10.0  # ... doubled on every failure up to this, reset once one lasts this
_SLICES_LOOKED_AT = 64  # a non-adopting engine looks this far for its tasks' slices
_GET_SLICE = 1.0  # the longest wait for a notice: bounds a stop even if close() cannot end it


class Hold:
    """One task an engine runs: its current lease (renewed as it runs) and whether it was lost.

    Attributes:
        lease: the latest lease (each renewal replaces it).
        lost: set once the lease was found lost (expired, released or taken over): the
            runner stops working on the task.
    """

    __slots__ = ("lease", "lost")

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = False


class Ownership:
    """The leases one engine holds on a task store, and how it finds and keeps work.

    Args:
        task_store: the shared task store.
        owner: this engine's id.
        duration: how long each lease (task or role) lasts without renewal.
        adopt: whether the engine runs tasks it did not create.
    """

    def __init__(self, task_store: TaskStore, owner: str, duration: timedelta, adopt: bool) -> None:
        self.task_store = task_store
        self.owner = owner
        self.duration = duration
        self.adopt = adopt
        self._renew_after = duration / 3
        self._lock = threading.Lock()
        self._held: dict[str, Hold] = {}
        self._mine: set[str] = set()
        # Tasks created here (kept only when not adopting): their slices are this
        # engine's too (docs/slices.md), also after the task's own run ended.
        self._created: set[str] = set()
        self._roles: dict[str, Lease] = {}
        self._next_dead_check = 0.0

    # -- tasks ------------------------------------------------------------------------

    def created(self, task_id: str) -> None:
        """Note a task this engine created (an engine that does not adopt runs only these)."""
        with self._lock:
            self._mine.add(task_id)
            if not self.adopt:
                self._created.add(task_id)

    def eligible(self, task_id: str) -> bool:
        """Whether this engine may run the task at all (it adopts, or created the task or
        the task the slice ``task_id`` is part of)."""
        if self.adopt:
            return True
        with self._lock:
            return task_id in self._mine or _sliced_from(task_id) in self._created

    def claim(self, task_id: str, now: datetime) -> Hold | None:
        """Take the task if no live engine owns it; ``None`` when someone does (or it ended)."""
        if not self.eligible(task_id):
            return None
        lease = self.task_store.claim(task_id, self.owner, now, self.duration)
        if lease is None:
            return None
        hold = Hold(lease)
        with self._lock:
            self._held[task_id] = hold
        return hold

    def release(self, hold: Hold) -> None:
        """The run of the task ended: give the task up (another engine may take it at once)."""
        task_id = hold.lease.task_id
        with self._lock:
            if self._held.get(task_id) is hold:
                del self._held[task_id]
            self._mine.discard(task_id)
        if hold.lost:
            return
        try:
            self.task_store.release(hold.lease)
        except StorageError:  # it runs out on its own
            _log.warning("could not release task %s; its lease runs out instead", task_id)

    def fence(self, hold: Hold, now: datetime) -> Lease:
        """The lease to fence a batch with, checked (and renewed once a third has passed).

        Called inside the batch's ``storage.atomic()`` block: on a store that shares the
        storage's transactions the check and the batch's writes commit together.

        Raises:
            LeaseLost: the lease is no longer current and unexpired (``hold.lost`` set).
        """
        lease = hold.lease
        try:
            if lease.expires_at - now < self.duration - self._renew_after:
                lease = hold.lease = self.task_store.renew(lease, now, self.duration)
            else:
                self.task_store.check_fence(lease, now)
        except LeaseLost:
            hold.lost = True
            raise
        return lease

    def heartbeat(self, now: datetime) -> None:
        """Renew every held lease that is a third through; mark the lost ones."""
        with self._lock:
            holds = list(self._held.values())
        for hold in holds:
            lease = hold.lease
            if hold.lost or lease.expires_at - now >= self.duration - self._renew_after:
                continue
            try:
                renewed = self.task_store.renew(lease, now, self.duration)
            except LeaseLost:
                hold.lost = True
                _log.warning(
                    "task %s: lease %d lost (taken over or expired); stopping work on it",
                    lease.task_id,
                    lease.token,
                )
            except StorageError as exc:
                _log.warning("task %s: could not renew its lease: %s", lease.task_id, exc)
            else:
                if hold.lease is lease:
                    hold.lease = renewed

    def holds(self, task_id: str) -> bool:
        """Whether this engine holds a lease on the task now."""
        with self._lock:
            return task_id in self._held

    def knows(self, task_id: str) -> bool:
        """Whether the task is this engine's already: held, or created here and not yet run
        to its end (it is queued)."""
        with self._lock:
            return task_id in self._held or task_id in self._mine

    def held(self) -> dict[str, Lease]:
        """The leases this engine holds now, by task id."""
        with self._lock:
            return {task_id: hold.lease for task_id, hold in self._held.items()}

    def candidates(self, now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` tasks this engine may claim now (oldest first), not held by it.

        Leases of processes of this host that exited are released first (at most every
        second: it reads every unfinished task's lease).
        """
        store = self.task_store
        if self.adopt and time.monotonic() >= self._next_dead_check:
            self._next_dead_check = time.monotonic() + _DEAD_CHECK_EVERY
            self.release_orphans()
        with self._lock:
            held = set(self._held)
            mine = None if self.adopt else set(self._mine)
            created = set(self._created)
        if mine is not None and not mine - held and not created:
            return []
        wanted = limit + len(held) if mine is None else len(mine) + limit + _SLICES_LOOKED_AT
        found = store.claimable(now, wanted)
        return [
            task_id
            for task_id in found
            if task_id not in held
            and (mine is None or task_id in mine or _sliced_from(task_id) in created)
        ][:limit]

    def release_orphans(self) -> int:
        """Release the leases of unfinished tasks whose owner process is gone; return how many."""
        store = self.task_store
        released = 0
        for task in store.unfinished():
            lease = store.lease_of(task.id)
            if lease is not None and lease.owner != self.owner and owner_is_gone(lease.owner):
                store.release(lease)
                released += 1
                _log.info(
                    "task %s: owner %s has exited; its lease is released", task.id, lease.owner
                )
        return released

    def release_all(self) -> None:
        """Give up every held task and role (the engine stops)."""
        with self._lock:
            holds = list(self._held.values())
            roles = list(self._roles.values())
            self._held.clear()
            self._roles.clear()
        for hold in holds:
            if not hold.lost:
                self._quietly(self.task_store.release, hold.lease)
        for lease in roles:
            self._quietly(self.task_store.resign, lease)

    # -- roles --------------------------------------------------------------------------

    def lead(self, role: str, now: datetime) -> tuple[bool, bool]:
        """Become or stay the leader of ``role``: ``(leading, just became leader)``."""
        with self._lock:
            previous = self._roles.get(role)
        lead = self.task_store.lead
        try:
            lease = lead(role, self.owner, now, self.duration)
            if lease is None and self._leader_is_gone(role):
                lease = lead(role, self.owner, now, self.duration)
        except StorageError as exc:
            _log.warning("could not renew the leadership of %s: %s", role, exc)
            lease = None
        with self._lock:
            if lease is None:
                self._roles.pop(role, None)
                return False, False
            self._roles[role] = lease
        return True, previous is None or previous.token != lease.token

    def _leader_is_gone(self, role: str) -> bool:
        """Resign the role for its leader if that is an exited process of this host."""
        store = self.task_store
        current = store.leader_of(role)
        if current is None or current.owner == self.owner or not owner_is_gone(current.owner):
            return False
        store.resign(current)
        _log.info("%s: leader %s has exited; its leadership is released", role, current.owner)
        return True

    @staticmethod
    def _quietly(action: Callable[[Lease], None], lease: Lease) -> None:
        try:
            action(lease)
        except StorageError:
            _log.warning("could not give up %s; its lease runs out instead", lease.task_id)


class Watcher:
    """An engine's ear on its task store's notifications (the optional ``Notifying``
    capability of :mod:`taskengine.taskstore`), run by a thread of its own (:meth:`run`).

    Each notice goes to ``heard(task id, kind)``. After every connection (the first one
    too) ``connected()`` runs before :attr:`listening` turns true, so the engine catches up
    on what was committed while it was not listening (it polls at once). A lost
    connection is logged and opened again after a pause of 0.1 s, doubled on each failure
    up to 10 s; the engine's polling covers the gap. :meth:`close` ends the thread
    promptly (its listener is closed from the calling thread), and no connection outlives
    it.

    Args:
        listen: the store's ``listen`` method.
        heard: called with ``(task id, kind)`` for every notice (kinds as
            :func:`~taskengine.taskstore.read_notice` returns them).
        connected: called after every (re)connection, before notices are handed on.
    """

    def __init__(
        self,
        listen: Callable[[], Notices],
        heard: Callable[[str, str], None],
        connected: Callable[[], None],
    ) -> None:
        self._listen = listen
        self._heard = heard
        self._connected = connected
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._current: Notices | None = None
        self._listening = False

    @property
    def listening(self) -> bool:
        """Whether notices are being received now (connected and caught up)."""
        return self._listening

    def close(self) -> None:
        """Stop: close the listener (ending its wait) and let :meth:`run` return. Idempotent."""
        with self._lock:
            self._closed.set()
            current, self._current = self._current, None
        if current is not None:
            _quietly_close(current)

    def run(self) -> None:
        """Listen until :meth:`close`, reconnecting with backoff (the thread's target)."""
        delay = _RECONNECT_FIRST
        while not self._closed.is_set():
            try:
                notices = self._listen()
            except Exception as exc:
                _log.warning(
                    "cannot listen to the task store's notifications (%s); polling, trying "
                    "again in %.1f s",
                    exc,
                    delay,
                )
            else:
                since = time.monotonic()
                reason = self._receive(notices)
                if reason is None:
                    return
                if time.monotonic() - since >= _RECONNECT_MAX:
                    delay = _RECONNECT_FIRST
                _log.warning(
                    "lost the task store's notifications (%s); polling, listening again in %.1f s",
                    reason,
                    delay,
                )
            if self._closed.wait(delay):
                return
            delay = min(delay * 2, _RECONNECT_MAX)

    def _receive(self, notices: Notices) -> str | None:
        """Hand on notices until closed (``None``) or the connection fails (why)."""
        with self._lock:
            if self._closed.is_set():
                adopted = False
            else:
                self._current, adopted = notices, True
        if not adopted:
            _quietly_close(notices)
            return None
        try:
            try:
                self._connected()
            except Exception:
                _log.exception("catching up after connecting to the notifications failed")
            self._listening = True
            while not self._closed.is_set():
                notice = notices.get(_GET_SLICE)
                if notice is None:
                    continue
                task_id, kind = read_notice(notice.payload)
                try:
                    self._heard(task_id, kind)
                except Exception:
                    _log.exception("acting on a notice of task %s (%s) failed", task_id, kind)
            return None
        except Exception as exc:
            return None if self._closed.is_set() else str(exc) or type(exc).__name__
        finally:
            self._listening = False
            with self._lock:
                if self._current is notices:
                    self._current = None
            _quietly_close(notices)


def _sliced_from(task_id: str) -> str:
    """The id of the task whose slice ``task_id`` would be (``"<id>~<n>"``), else ``""``."""
    parent, tilde, index = task_id.rpartition("~")
    return parent if tilde and index.isdigit() else ""


def _quietly_close(notices: Notices) -> None:
    try:
        notices.close()
    except Exception as exc:  # the connection is gone either way
        _log.debug("closing the notification listener failed: %s", exc)
