"""Following an engine that adopts tasks: which ones it takes, how far they got, how they end.

``worker`` and ``run --resume`` start an engine that runs any task no live engine owns
(docs/cli.md); :class:`Watch` turns what the engine holds (``engine.owned()``) and what
waits in the store (``claimable``) into events for the terminal, and says when nothing is
left. SIGINT and SIGTERM ask these commands to stop (:func:`stop_signals`): the engine
stops after its current batches and releases its tasks, so another engine continues them
at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

import attrs

from taskengine.cli._owners import is_waiting, task_holder

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.task import Task

__all__ = ["Event", "Watch", "stop_signals"]

Kind = Literal["started", "running", "ended", "released", "taken"]


@attrs.frozen
class Event:
    """What :meth:`Watch.look` saw happen to one task.

    Attributes:
        kind: ``started`` (the engine took it), ``running`` (it holds it: its counters
            now), ``ended`` (finished), ``released`` (the engine held it and gave it up
            unfinished: it stopped, or lost the lease), ``taken`` (it was waiting, and
            another engine took it first).
        task: the task as it is now.
    """

    kind: Kind
    task: Task


class Watch:
    """Looks, on demand, at what an engine that adopts tasks holds, and at what waits.

    A task that ends between two looks, without the engine having been seen holding it,
    is reported ``ended`` too when it was waiting at the earlier look: the engine polls
    for work far more often than another engine could take it from under it, but the
    store does not record who ran a finished task, so this is the likely owner, not a
    certain one.

    Args:
        engine: an engine with ``adopt=True``, started or about to be.
        waiting: the tasks that wait for an owner now (from a census taken before the
            engine starts, so that a task it finishes before the first look is seen).
        limit: how many waiting tasks to keep track of (the oldest).
    """

    def __init__(
        self, engine: TaskEngine, *, waiting: Iterable[str] = (), limit: int = 1000
    ) -> None:
        self.engine = engine
        self.limit = limit
        self._order: dict[str, int] = {}  # the tasks followed, by when first seen
        self._held: set[str] = set()
        self._waiting = set(self._seen(waiting))

    def look(self) -> list[Event]:
        """What changed since the last look, and the counters of every task held now."""
        engine = self.engine
        store = engine.task_store
        # Waiting tasks first: a claim between the two reads then shows a task in both,
        # never in neither.
        waiting = set(self._seen(store.claimable(engine.clock.now(), self.limit)))
        held = set(self._seen(engine.owned()))
        events: list[Event] = []
        # A task the engine let go is reported whether or not it waits again now.
        for task_id in self._sorted((self._held - held) | (self._waiting - held - waiting)):
            task = store.get(task_id)
            if task is None:
                continue  # expired, or removed
            if task.is_finished:
                events.append(Event("ended", task))
                continue
            lease = store.lease_of(task_id)
            if lease is not None and lease.owner == engine.owner:
                held.add(task_id)  # claimed after owned() was read, or not yet recorded
            else:
                events.append(Event("released" if task_id in self._held else "taken", task))
        for task_id in self._sorted(held):
            task = store.get(task_id)
            if task is None:
                continue
            if task_id not in self._held:
                events.append(Event("started", task))
            events.append(Event("running", task))
        self._held, self._waiting = held, waiting
        followed = held | waiting
        self._order = {task_id: n for task_id, n in self._order.items() if task_id in followed}
        return events

    def _seen(self, task_ids: Iterable[str]) -> list[str]:
        order = self._order
        found = list(task_ids)
        for task_id in found:
            order.setdefault(task_id, len(order))
        return found

    def _sorted(self, task_ids: set[str]) -> list[str]:
        return sorted(task_ids, key=self._order.__getitem__)

    def idle(self) -> bool:
        """Whether, as of the last look and a fresh read of every unfinished task, the
        engine holds nothing and no task waits for an owner (a task whose owner process
        exited counts as waiting: the engine releases and takes it within seconds)."""
        if self._held or self._waiting:
            return False
        engine = self.engine
        store = engine.task_store
        now = engine.clock.now()
        for task in store.unfinished():
            held_by = task_holder(store, task, now)
            if held_by == engine.owner or is_waiting(held_by):
                return False
        return True


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """While active, a first SIGINT (Ctrl-C) or SIGTERM only sets the yielded event; a
    second one raises ``KeyboardInterrupt`` (give up waiting for a clean stop).

    The command's loop sees the event and stops the engine itself, so no signal lands in
    the middle of a read of the store. Outside the main thread (where handlers cannot be
    set) the event is never set by a signal.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)
