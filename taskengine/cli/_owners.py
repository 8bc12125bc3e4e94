"""Who holds each unfinished task of a file: a live engine (host and pid), or nobody yet.

Several processes may run tasks from one file (``worker``, ``serve``, ``run``); each
claims a task with a lease in the task store before running it (docs/durability.md).
``tasks list`` shows the holder of each task, and the commands that open an engine say
which unfinished tasks they leave alone. A task is

* **owned** while a live engine holds its lease: the lease has not run out and its owner
  is not a process of this host that has exited;
* **waiting** otherwise: never claimed or released (``waiting``), its lease ran out
  (``waiting (lease ran out)``: the owner died on another host, or hung), or its owner
  process on this host has exited (``waiting (owner exited)``; an engine that adopts
  tasks releases such a lease at once). Any engine that adopts tasks takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.task import Task
    from taskengine.taskstore import TaskStore

__all__ = ["Census", "holder", "owner_label", "take_census"]

WAITING = "waiting"
LEASE_RAN_OUT = "waiting (lease ran out)"
OWNER_EXITED = "waiting (owner exited)"


def owner_label(owner: str) -> str:
    """An engine id ``host:pid:hex`` as people name a process: ``host/pid``."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return owner
    return f"{parts[0]}/{parts[1]}"


def holder(store: TaskStore, task: Task, now: datetime) -> str | None:
    """Who holds an unfinished task at ``now``: the owner's engine id (a live lease), or
    the reason it waits (:data:`WAITING`, :data:`LEASE_RAN_OUT`, :data:`OWNER_EXITED`).
    ``None`` for a finished task."""
    from taskengine._ownership import owner_is_gone

    if task.is_finished:
        return None
    lease = store.lease_of(task.id)
    if lease is None:
        return WAITING
    if not lease.is_live(now):
        return LEASE_RAN_OUT
    if owner_is_gone(lease.owner):
        return OWNER_EXITED
    return lease.owner


def is_waiting(held_by: str | None) -> bool:
    """Whether a :func:`holder` answer means that any adopting engine may take the task."""
    return held_by in (WAITING, LEASE_RAN_OUT, OWNER_EXITED)


@attrs.frozen
class Census:
    """The unfinished tasks of a file, by who holds them.

    Attributes:
        owned: ``(task, owner id)`` of the tasks live engines hold, oldest first.
        waiting: the tasks no live engine holds, oldest first.
    """

    owned: tuple[tuple[Task, str], ...]
    waiting: tuple[Task, ...]

    @property
    def owners(self) -> list[str]:
        """The distinct owners (``host/pid``), in the order their first task comes."""
        return list(dict.fromkeys(owner_label(owner) for _, owner in self.owned))

    def owned_by(self, owner: str) -> list[Task]:
        """The tasks engine ``owner`` holds."""
        return [task for task, held_by in self.owned if held_by == owner]

    def left_alone(self, *, hint: bool = True) -> str | None:
        """``N unfinished task(s) left alone: ...``, or ``None`` when there is none.

        Args:
            hint: name the commands that take the waiting tasks.
        """
        parts: list[str] = []
        if self.owned:
            parts.append(f"{len(self.owned)} owned by {self._engines()}")
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting for an owner")
        if not parts:
            return None
        total = len(self.owned) + len(self.waiting)
        text = f"{total} unfinished task(s) left alone: {', '.join(parts)}"
        if hint and self.waiting:
            text += "; resume them with 'taskengine run --resume' or a 'taskengine worker'"
        return text + "."

    def owned_note(self) -> str | None:
        """``N unfinished task(s) owned by live engines (...) are left alone.`` or ``None``."""
        if not self.owned:
            return None
        return f"{len(self.owned)} unfinished task(s) owned by {self._engines()} are left alone."

    def _engines(self) -> str:
        owners = self.owners
        noun = "a live engine" if len(owners) == 1 else "live engines"
        return f"{noun} ({_listed(owners)})"


def take_census(engine: TaskEngine) -> Census:
    """Who holds each unfinished task in the engine's task store, now.

    Reads every unfinished task and its lease (one query each): meant for a command's
    start and end, not a loop.
    """
    store = engine.task_store
    now = engine.clock.now()
    owned: list[tuple[Task, str]] = []
    waiting: list[Task] = []
    for task in store.unfinished():
        held_by = holder(store, task, now)
        if held_by is None:
            continue
        if is_waiting(held_by):
            waiting.append(task)
        else:
            owned.append((task, held_by))
    return Census(tuple(owned), tuple(waiting))


def _listed(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"
