"""The task: its lifecycle, an immutable snapshot, and its JSON form.

Lifecycle (the only moves allowed; see :data:`TRANSITIONS`)::

    NEW ──> RUNNING ──> COMPLETED
     │         │
     └─────────┴──────> FAILED        (a whole-task error or a cancellation)

The statuses, the transition table and :class:`Failure` are :mod:`taskengine._lifecycle`,
reading a whole task object (:meth:`Task.from_json`) is :mod:`taskengine._taskreader`; their
public names are re-exported here. A :class:`Task` is a frozen snapshot; every change
makes a new one through a method that checks the move (:meth:`Task.started`,
:meth:`Task.finished`, ...). Timestamps are
aware UTC datetimes truncated to milliseconds, so ``Task.from_json(t.to_json()) == t``.
The options object of task JSON is read by :mod:`taskengine._taskjson`, the one reader
of options (create requests, stored tasks and task files alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from taskengine._lifecycle import (
    CANCELLED,
    MAX_FAILURES,
    TRANSITIONS,
    Failure,
    TaskStatus,
    check_transition,
)
from taskengine._taskjson import RawOptions
from taskengine._taskreader import MAX_SLICES, read_task_fields
from taskengine._values import format_timestamp, parse_timestamp, utc_ms
from taskengine.errors import InvalidTask, InvalidTransition, Violation

if TYPE_CHECKING:
    from taskengine.tasktype import TaskOptions, TaskType

__all__ = [
    "CANCELLED",
    "MAX_FAILURES",
    "MAX_SLICES",
    "TRANSITIONS",
    "Failure",
    "RawOptions",
    "Task",
    "TaskStatus",
    "check_transition",
    "format_timestamp",
    "parse_timestamp",
    "slice_id",
]


def _clip_failures(failures: Sequence[Failure]) -> tuple[Failure, ...]:
    return tuple(failures[:MAX_FAILURES])


@attrs.frozen
class Task:
    """An immutable snapshot of one task (see docs/lifecycle.md).

    Attributes:
        id: the task id.
        type: the task type name (``"DELETE_BY_QUERY"``).
        options_key: the JSON key of the options (``"deleteByQueryOptions"``).
        options: the typed options (or :class:`RawOptions`).
        created_at: when the task was created; lists are newest first by this.
        status: the lifecycle state.
        started_at: set when RUNNING starts; ``None`` while NEW (absent in JSON).
        finished_at: set when COMPLETED or FAILED, else ``None`` (absent in JSON).
        expires_at: ``finished_at + retention``; after it the task is gone.
        estimated_item_count: matching items counted at start.
        items_succeeded: items processed successfully so far (only grows).
        items_failed: items that failed so far (only grows; every one counted).
        failures: at most :data:`MAX_FAILURES` entries; for a FAILED task the first one
            is the whole-task failure (``CANCELLED``, ``WDE0054``, ...).
        cancel_requested: a cancel was asked for while RUNNING.
        checkpoint: the scan cursor after the last committed batch (not in JSON).
        slices: how many ``_id`` ranges the task runs in (docs/slices.md): asked for at
            create, and once RUNNING the number of its child tasks (``1`` = unsliced).
            In JSON as ``"slices"`` when above 1.
        split: a sliced task's split points once it started (``slices - 1`` ids, in
            ``_id`` order); empty for any other task (not in JSON).
        parent: on a slice (a hidden child task), the id of the task it is a slice of
            (JSON ``"sliceOf"``); ``None`` on every other task.
        until: on a slice, the last ``_id`` of its range (inclusive; ``None`` = to the
            end of the collection); the range starts after its first checkpoint.
    """

    id: str
    type: str
    options_key: str
    options: TaskOptions
    created_at: datetime
    status: TaskStatus = TaskStatus.NEW
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    estimated_item_count: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    failures: tuple[Failure, ...] = attrs.field(default=(), converter=_clip_failures)
    cancel_requested: bool = False
    checkpoint: str | None = None
    slices: int = 1
    split: tuple[str, ...] = ()
    parent: str | None = None
    until: str | None = None

    @property
    def is_sliced(self) -> bool:
        """``True`` for a task that runs as slices (it has split points): its counters
        are its slices' until it ends."""
        return bool(self.split)

    @property
    def slice_ids(self) -> tuple[str, ...]:
        """The ids of a sliced task's slices (``"<id>~0"``, ...); empty when not sliced."""
        if not self.split:
            return ()
        return tuple(slice_id(self.id, index) for index in range(len(self.split) + 1))

    @property
    def is_finished(self) -> bool:
        """``True`` once COMPLETED or FAILED."""
        return self.status.is_finished

    @property
    def collection(self) -> str:
        """The ``dataCollectionId`` of the task's options."""
        return self.options.collection

    def started(self, now: datetime, estimated_item_count: int) -> Task:
        """The task moved NEW -> RUNNING at ``now`` with its item estimate.

        Raises:
            InvalidTransition: the task is not NEW.
        """
        check_transition(self.id, self.status, TaskStatus.RUNNING)
        return attrs.evolve(
            self,
            status=TaskStatus.RUNNING,
            started_at=utc_ms(now),
            estimated_item_count=max(0, estimated_item_count),
        )

    def with_batch(
        self, succeeded: int, failed: int, failures: Sequence[Failure], checkpoint: str | None
    ) -> Task:
        """The task after one committed batch: counters added, failures appended (capped),
        checkpoint moved.

        Raises:
            InvalidTransition: the task is not RUNNING.
            ValueError: a negative count.
        """
        if self.status is not TaskStatus.RUNNING:
            raise InvalidTransition(self.id, self.status, TaskStatus.RUNNING)
        if succeeded < 0 or failed < 0:
            raise ValueError("batch counts cannot be negative")
        room = MAX_FAILURES - len(self.failures)
        return attrs.evolve(
            self,
            items_succeeded=self.items_succeeded + succeeded,
            items_failed=self.items_failed + failed,
            failures=self.failures + tuple(failures[: max(0, room)]),
            checkpoint=checkpoint,
        )

    def cancel_was_requested(self) -> Task:
        """The RUNNING task with ``cancel_requested`` set.

        Raises:
            InvalidTransition: the task is not RUNNING.
        """
        if self.status is not TaskStatus.RUNNING:
            raise InvalidTransition(self.id, self.status, TaskStatus.FAILED)
        return attrs.evolve(self, cancel_requested=True)

    def cancel_asked(self, now: datetime, retention: timedelta) -> Task | None:
        """The task once a cancel is asked at ``now``, or ``None`` when that changes
        nothing (finished, or asked before): a NEW task ends FAILED (``CANCELLED``) at
        once, a RUNNING one shows ``cancel_requested`` until its next batch ends it."""
        if self.is_finished or self.cancel_requested:
            return None
        if self.status is TaskStatus.NEW:
            return self.finished(TaskStatus.FAILED, now, retention, Failure.cancelled())
        return self.cancel_was_requested()

    def finished(
        self,
        status: TaskStatus,
        now: datetime,
        retention: timedelta,
        failure: Failure | None = None,
    ) -> Task:
        """The task ended at ``now`` with ``status``; ``failure`` (for FAILED) goes first.

        A pending ``cancel_requested`` is cleared: a finished task no longer shows it.
        A slice (``parent`` set) gets no ``expires_at``: it is removed with its task.

        Raises:
            InvalidTransition: the move is not allowed.
            ValueError: FAILED without a failure, or COMPLETED with one.
        """
        check_transition(self.id, self.status, status)
        if (status is TaskStatus.FAILED) != (failure is not None):
            raise ValueError("a task ends FAILED exactly when it has a whole-task failure")
        failures = self.failures if failure is None else (failure, *self.failures)
        end = utc_ms(now)
        return attrs.evolve(
            self,
            status=status,
            finished_at=end,
            # A slice never expires on its own: it is removed with its task.
            expires_at=utc_ms(end + retention) if self.parent is None else None,
            failures=failures,
            cancel_requested=False,  # shown until the task ends; then the failure says it
        )

    def to_json(self) -> dict[str, Any]:
        """The reference task JSON (camelCase, ISO timestamps, empty fields absent)."""
        out: dict[str, Any] = {"id": self.id, "type": self.type, "status": self.status.value}
        out["createdAt"] = format_timestamp(self.created_at)
        if self.started_at is not None:
            out["startedAt"] = format_timestamp(self.started_at)
        if self.finished_at is not None:
            out["finishedAt"] = format_timestamp(self.finished_at)
        out["estimatedItemCount"] = self.estimated_item_count
        out["itemsSucceeded"] = self.items_succeeded
        out["itemsFailed"] = self.items_failed
        out["failures"] = [failure.to_json() for failure in self.failures]
        out[self.options_key] = self.options.to_json()
        if self.expires_at is not None:
            out["expiresAt"] = format_timestamp(self.expires_at)
        if self.cancel_requested:
            out["cancelRequested"] = True
        if self.slices > 1:
            out["slices"] = self.slices
        if self.parent is not None:
            out["sliceOf"] = self.parent
        return out

    @classmethod
    def from_json(
        cls,
        obj: Any,
        task_types: Mapping[str, TaskType] | None = None,
        *,
        path: str = "task",
        checkpoint: str | None = None,
    ) -> Task:
        """Parse task JSON as :meth:`to_json` writes it, checking every field.

        Args:
            obj: the task object.
            task_types: registered types by name; when given, ``type`` must be one of
                them and the options are parsed into typed options. Without it the
                options stay :class:`RawOptions`.
            path: the JSON path of ``obj``, the prefix of every violation path.
            checkpoint: the internal scan cursor (it is not part of the JSON).

        Raises:
            InvalidTask: every violation found, each by JSON path.
        """
        violations: list[Violation] = []
        fields = read_task_fields(obj, task_types, path, checkpoint, violations)
        if violations or fields is None:
            raise InvalidTask(violations or [Violation(path, "invalid task")])
        return Task(**fields)


def slice_id(task_id: str, index: int) -> str:
    """The id of slice ``index`` of task ``task_id``: ``"<task_id>~<index>"``."""
    return f"{task_id}~{index}"
