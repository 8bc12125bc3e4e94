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

A sliced task that started holds no lease: its slices do (docs/slices.md). It shows the
holder of its first slice that a live engine holds (else its first slice's waiting
reason), and the census counts it, not its slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from taskengine._lease import (
    LEASE_RAN_OUT,
    OWNER_EXITED,
    WAITING,
    holder,
    is_waiting,
    owner_label,
    task_holder,
)

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.task import Task

__all__ = [
    "LEASE_RAN_OUT",
    "OWNER_EXITED",
    "WAITING",
    "Census",
    "holder",
    "is_waiting",
    "owner_label",
    "take_census",
    "task_holder",
]


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
        if task.parent is not None:
            continue  # a slice: its task is counted
        held_by = task_holder(store, task, now)
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
