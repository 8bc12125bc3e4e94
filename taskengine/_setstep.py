"""A set-based batch step: one batch of a task that the storage runs itself.

:func:`make_set_step` owns the choice and the shape of a set-based batch for the
engine's batch loop (:mod:`taskengine._batches`): when the task's executor states its
change as an :class:`~taskengine.storage.changes.ItemChange` and the storage offers
``ChangingStorage.change_matching``, a batch is one call of it (one SQL statement on
SQLite) instead of scan, apply and write, with the same fence and the same record of the
task (:class:`~taskengine._recorder.Recorder`) inside one ``atomic()`` block.

A set-based batch's size is a :class:`SetBatchSizing`: a fixed number of rows, or (the
default) a number adapted batch by batch so that a batch takes about a given time, as
pt-online-schema-change's ``--chunk-time`` does: a batch's cost per row differs by orders
of magnitude between adapters, filters and changes, while what the size is there for
(how soon a cancel, a stop or a progress reader is served, how long the storage is held)
is a matter of time.

Lock order (as for the batch loop): target lock -> ``storage.atomic()`` -> task store.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from taskengine import codes
from taskengine._recorder import Gone
from taskengine.storage.base import WriteResult
from taskengine.tasktype import BatchChanges, ItemFailure

if TYPE_CHECKING:
    from taskengine._ownership import Hold, Ownership
    from taskengine._recorder import Recorder
    from taskengine.clock import Clock
    from taskengine.storage.base import Storage
    from taskengine.task import Task
    from taskengine.tasktype import Executor, Plan

__all__ = ["SetBatchSizing", "make_set_step"]

_NOTHING = BatchChanges()
_timer = time.perf_counter  # a batch's time (a module name, so a test can stand in a clock)


@attrs.frozen
class SetBatchSizing:
    """How many rows a set-based batch covers (the ``limit`` of ``change_matching``).

    Attributes:
        start: the first batch's rows.
        low: the fewest rows a batch is given.
        high: the most rows a batch is given.
        seconds: the time a batch aims at; ``None`` keeps every batch at ``start`` rows.
    """

    start: int
    low: int
    high: int
    seconds: float | None

    @classmethod
    def fixed(cls, rows: int) -> SetBatchSizing:
        """Every batch ``rows`` rows."""
        return cls(rows, rows, rows, None)

    def next(self, rows: int, elapsed: float) -> int:
        """The rows of the batch after one of ``rows`` rows that took ``elapsed`` seconds.

        The rows scale by ``seconds / elapsed``, by a factor of at most 2 up and at most 4
        down a batch (one slow or fast batch does not swing the size), within
        ``[low, high]``.
        """
        if self.seconds is None:
            return self.start
        factor = 2.0 if elapsed * 2.0 <= self.seconds else max(0.25, self.seconds / elapsed)
        return min(self.high, max(self.low, int(rows * factor)))


def make_set_step(
    storage: Storage,
    sizing: SetBatchSizing,
    clock: Clock,
    ownership: Ownership,
    recorder: Recorder,
    hold: Hold,
    task_id: str,
    executor: Executor,
    plan: Plan,
    target_lock: threading.Lock,
    until: str | None,
) -> (
    Callable[[str | None], tuple[str | None, BatchChanges, WriteResult | None, Task | None]] | None
):
    """The batch step done by the storage itself (a set-based batch), when it can be.

    It can when the executor states its change as an ``ItemChange``
    (``executor.item_change(plan)``) and the storage implements ``change_matching``
    (with the ``until`` bound, for a slice). The caller makes one only when the
    batch's writes and its checkpoint are one block that rolls back (a failed batch is
    retried whole, as on the scan path).

    The step runs one batch from a checkpoint: under the target lock, in one
    ``atomic()`` block, the fence, ``change_matching`` and the task's record; it
    returns ``(cursor, changes, written, the task recorded)``, or no task when the
    task is no longer RUNNING.
    """
    make = getattr(executor, "item_change", None)
    # Looked up on the class: a wrapping adapter that delegates unknown attributes to
    # another one (``__getattr__``) must not have its own writes bypassed.
    unbound = getattr(type(storage), "change_matching", None)
    if make is None or unbound is None:
        return None
    change = make(plan)
    if change is None:
        return None
    bounded: dict[str, str] = {}
    if until is not None:
        # A slice needs the ``until`` bound; an adapter without it scans instead.
        if "until" not in inspect.signature(unbound).parameters:
            return None
        bounded["until"] = until
    if getattr(storage, "batches_by_time", False) is not True:
        sizing = SetBatchSizing.fixed(sizing.start)
    change_matching = unbound.__get__(storage)
    collection, environment, accept = plan.collection, plan.environment, plan.filter
    atomic, sized, clock_time = storage.atomic, sizing.next, _timer
    rows = sizing.start

    def set_step(
        checkpoint: str | None,
    ) -> tuple[str | None, BatchChanges, WriteResult | None, Task | None]:
        nonlocal rows
        with target_lock:
            began = clock_time()
            try:
                with atomic():
                    now = clock.now()
                    fence = ownership.fence(hold, now)
                    result = change_matching(
                        collection,
                        environment,
                        after=checkpoint,
                        limit=rows,
                        filter=accept,
                        change=change,
                        **bounded,
                    )
                    changes = BatchChanges(
                        failures=[
                            ItemFailure(item_id, codes.ITEM_VALIDATION, reason)
                            for item_id, reason in result.refused
                        ],
                        unchanged=result.unchanged,
                    )
                    written = WriteResult(result.done, result.missing)
                    # Items written without their ids reported (the change did not
                    # ask for them) count as succeeded all the same.
                    counted = attrs.evolve(
                        changes, unchanged=result.unchanged + result.written - len(result.done)
                    )
                    updated = recorder.record(
                        fence, task_id, plan, counted, written, result.cursor, now
                    )
            except Gone:
                return None, _NOTHING, None, None
            rows = sized(rows, clock_time() - began)
        return result.cursor, changes, written, updated

    return set_step
