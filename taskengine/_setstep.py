"""A set-based batch step: one batch of a task that the storage runs itself.

:func:`make_set_step` owns the choice and the shape of a set-based batch for the
engine's batch loop (:mod:`taskengine._batches`): when the task's executor states its
change as an :class:`~taskengine.storage.changes.ItemChange` and the storage offers
``ChangingStorage.change_matching``, a batch is one call of it (one SQL statement on
SQLite) instead of scan, apply and write, with the same fence and the same record of the
task (:class:`~taskengine._recorder.Recorder`) inside one ``atomic()`` block.

Lock order (as for the batch loop): target lock -> ``storage.atomic()`` -> task store.
"""

from __future__ import annotations

import inspect
import threading
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

__all__ = ["make_set_step"]

_NOTHING = BatchChanges()


def make_set_step(
    storage: Storage,
    set_batch_size: int,
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
    change_matching = unbound.__get__(storage)
    collection, environment, accept = plan.collection, plan.environment, plan.filter
    batch_size, atomic = set_batch_size, storage.atomic

    def set_step(
        checkpoint: str | None,
    ) -> tuple[str | None, BatchChanges, WriteResult | None, Task | None]:
        with target_lock:
            try:
                with atomic():
                    now = clock.now()
                    fence = ownership.fence(hold, now)
                    result = change_matching(
                        collection,
                        environment,
                        after=checkpoint,
                        limit=batch_size,
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
        return result.cursor, changes, written, updated

    return set_step
