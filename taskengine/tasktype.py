"""How a task type plugs into the engine: options parser, executor, services.

A task type is one :class:`TaskType` value: a name (``"DELETE_BY_QUERY"``), the JSON
key of its options object (``"deleteByQueryOptions"``), a parser from that JSON to typed
options, an :class:`Executor`, and the progress message of its running tasks. The
engine owns everything else: the batch loop, checkpoints, counters, cancellation,
retries and the atomic commit of each batch.

The engine's batch loop, for reference (``docs/architecture.md``)::

    plan = executor.plan(options, storage)             # once, when the task starts
    loop:
        page = storage.scan(plan.collection, plan.environment,
                            after=checkpoint, limit=batch_size, filter=plan.filter)
        matched = [item for item in page.items if plan.filter is None or plan.filter(item)]
        changes = executor.apply(plan, matched)        # pure
        with storage.atomic():                         # one transaction when shared
            delete_items(changes.deletes); replace_items(changes.replaces)
            counters += ...; checkpoint = page.cursor; task_store.save(task)
        executor.committed(plan, changes, written)

A :class:`Service` is background work that is not a task (the publish-status
scheduler): the engine starts it once and calls :meth:`Service.tick` when it is due.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs

from taskengine.errors import Violation

if TYPE_CHECKING:
    from taskengine.filters import Filter
    from taskengine.storage.base import Environment, Storage, WriteResult

__all__ = [
    "DEFAULT_RUNNING_MESSAGE",
    "BatchChanges",
    "Executor",
    "ItemFailure",
    "OptionsParser",
    "Plan",
    "Service",
    "TaskOptions",
    "TaskType",
]


DEFAULT_RUNNING_MESSAGE = "Processing items"
"""The progress ``Message`` of a running task whose type names none of its own."""


class TaskOptions(Protocol):
    """The typed options of one task type (``deleteByQueryOptions``, ...).

    Attributes:
        collection: the ``dataCollectionId`` the task works on.
    """

    @property
    def collection(self) -> str:
        """The ``dataCollectionId`` the task works on."""

    def to_json(self) -> dict[str, Any]:
        """The options object as the reference API shows it (camelCase keys)."""


OptionsParser: TypeAlias = Callable[[Any, str], tuple[TaskOptions | None, list[Violation]]]
"""``(json value, its JSON path) -> (options, [])`` or ``(None, [violations...])``.

A parser never raises on bad input: it returns every violation it finds, each with a
path that starts with the path it was given (``"task.editFieldDataOptions.fieldKey"``).
"""


@attrs.frozen
class Plan:
    """What a started task works on, decided once by :meth:`Executor.plan`.

    Attributes:
        collection: the collection to scan.
        environment: the resolved environment (``SANDBOX_PREFERRED`` already decided).
        filter: which items the task touches; the engine scans with it and re-checks
            every item against it, so ``apply`` only ever sees matching items.
        state: anything else the executor wants to carry from ``plan`` to ``apply``.
    """

    collection: str
    environment: Environment
    filter: Filter | None
    state: Any = None


@attrs.frozen
class ItemFailure:
    """One item the executor could not process; the task goes on.

    Attributes:
        item_id: the item's ``_id``.
        code: the failure code (``"WDE0075"`` validation, ``"WDE0073"`` vanished, ...).
        description: human text for the task's ``failures`` list.
    """

    item_id: str
    code: str
    description: str


@attrs.frozen
class BatchChanges:
    """The writes one batch asks for; the engine performs and counts them.

    Attributes:
        deletes: ids of items to delete.
        replaces: whole new items to write (each with its ``_id``).
        failures: items that failed; they are counted and listed, never written.
        unchanged: matched items that succeed without a write.
    """

    deletes: Sequence[str] = ()
    replaces: Sequence[dict[str, Any]] = ()
    failures: Sequence[ItemFailure] = ()
    unchanged: int = 0


class Executor(Protocol):
    """Runs one task type; the engine calls it from a worker thread.

    An executor may also define ``item_change(plan)``, returning its per-item change as
    a :class:`taskengine.storage.changes.ItemChange` (or ``None``): a storage that
    implements ``ChangingStorage`` then runs the task's batches itself (set-based
    batches; ``SQLiteStorage`` with one SQL statement per batch) instead of the engine
    calling :meth:`apply`. Both must give the same result. The built-in types define it.
    """

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Decide what the task works on, when it starts (and again when it resumes).

        Raises:
            TaskFailure: to fail the whole task with a code (``WDE0025`` unknown
                collection, ``WDE0179`` sandbox not enabled, ``WDE0119`` no publish
                plugin).
        """

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Turn one batch of matching items into changes; pure, never writes.

        The items are fresh copies, so the executor may mutate and return them.
        """

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Hear that a batch's writes committed (e.g. register new schedule dates).

        After a set-based batch (one the storage ran itself, through the change the
        executor's optional ``item_change(plan)`` returned), ``changes`` holds its
        failures and unchanged count but no items, and ``written.done`` lists the ids
        written only when that change ``needs_ids`` (else it may leave some out).
        """


class Service(Protocol):
    """Background work owned by a task type that is not a task (e.g. a scheduler).

    A service sees the engine's item storage only: it is handed the storage when its
    engine starts running it, and ``now`` (from the engine's clock) on every tick. Of the
    engines sharing a task store, only the one holding the service's leader lease runs it
    (docs/durability.md, "Ownership").
    """

    def start(self, storage: Storage) -> None:
        """Attach to the engine's item storage and rebuild what the service keeps in
        memory from it. Called when the engine becomes the service's leader, and again
        (every ``lease``) while it leads on a store other processes write, so it must be
        idempotent."""

    def tick(self, now: datetime) -> datetime | None:
        """Do the work that is due at ``now``; return when it is next due, or ``None``."""


@attrs.frozen
class TaskType:
    """One task type the engine can run.

    Attributes:
        name: the ``type`` value in task JSON (``"DELETE_BY_QUERY"``).
        options_key: the JSON key of its options object (``"deleteByQueryOptions"``).
        parse_options: validates the options JSON into typed options (see
            :data:`OptionsParser`).
        executor: runs tasks of this type.
        running_message: the progress ``Message`` while a task of this type runs
            (``"Deleting items"``; see docs/progress.md).
    """

    name: str
    options_key: str
    parse_options: OptionsParser
    executor: Executor
    running_message: str = attrs.field(default=DEFAULT_RUNNING_MESSAGE, kw_only=True)
