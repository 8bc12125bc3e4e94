"""The task: its lifecycle, an immutable snapshot, and its JSON form.

Lifecycle (the only moves allowed; see :data:`TRANSITIONS`)::

    NEW ──> RUNNING ──> COMPLETED
     │         │
     └─────────┴──────> FAILED        (a whole-task error or a cancellation)

A :class:`Task` is a frozen snapshot; every change makes a new one through a method
that checks the move (:meth:`Task.started`, :meth:`Task.finished`, ...). Timestamps are
aware UTC datetimes truncated to milliseconds, so ``Task.from_json(t.to_json()) == t``.
The options object of task JSON is read by :mod:`taskengine._taskjson`, the one reader
of options (create requests, stored tasks and task files alike).
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs

from taskengine import codes
from taskengine._taskjson import RawOptions, options_keys, read_options
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

MAX_FAILURES = 100
"""At most this many entries in ``failures`` (ref); ``itemsFailed`` still counts all."""

CANCELLED = codes.CANCELLED
"""The failure code of a cancelled task (ref)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TaskStatus(str, enum.Enum):
    """Where a task is in its lifecycle."""

    NEW = "NEW"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_finished(self) -> bool:
        """``True`` for ``COMPLETED`` and ``FAILED``: the task will never change again."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.NEW: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
}
"""Every legal status change; anything else raises :class:`InvalidTransition`."""


def check_transition(task_id: str, current: TaskStatus, requested: TaskStatus) -> None:
    """Allow ``current -> requested`` or raise.

    Raises:
        InvalidTransition: the move is not in :data:`TRANSITIONS`; the error names the
            task and both states.
    """
    if requested not in TRANSITIONS[current]:
        raise InvalidTransition(task_id, current, requested)


@attrs.frozen
class Failure:
    """One entry of a task's ``failures``: a whole-task error or one item's failure.

    Attributes:
        code: ``"CANCELLED"``, ``"WDE0054"``, ...
        description: human text.
        data: what the failure is about (``{"itemId": ...}``); ``None`` = no ``data`` key,
            as for cancellation (ref).
    """

    code: str
    description: str
    data: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"code", "description", "data"?}``; ``data`` is absent when ``None``."""
        out: dict[str, Any] = {"code": self.code, "description": self.description}
        if self.data is not None:
            out["data"] = copy.deepcopy(dict(self.data))
        return out

    @classmethod
    def cancelled(cls, description: str = "The task was cancelled.") -> Failure:
        """The failure of a cancelled task: code ``CANCELLED`` and no ``data``."""
        return cls(CANCELLED, description)


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
        task = _parse_task(obj, task_types, path, checkpoint, violations)
        if violations or task is None:
            raise InvalidTask(violations or [Violation(path, "invalid task")])
        return task


_COUNTERS = {
    "estimatedItemCount": "estimated_item_count",
    "itemsSucceeded": "items_succeeded",
    "itemsFailed": "items_failed",
}
_TIMES = {
    "createdAt": "created_at",
    "startedAt": "started_at",
    "finishedAt": "finished_at",
    "expiresAt": "expires_at",
}
_KNOWN = {
    "id",
    "type",
    "status",
    "failures",
    "cancelRequested",
    "slices",
    "sliceOf",
    *_COUNTERS,
    *_TIMES,
}

MAX_SLICES = 64
"""The most slices a task may be split into."""


def slice_id(task_id: str, index: int) -> str:
    """The id of slice ``index`` of task ``task_id``: ``"<task_id>~<index>"``."""
    return f"{task_id}~{index}"


def _parse_task(
    obj: Any,
    task_types: Mapping[str, TaskType] | None,
    path: str,
    checkpoint: str | None,
    out: list[Violation],
) -> Task | None:
    if not isinstance(obj, Mapping):
        out.append(Violation(path, "must be an object"))
        return None
    fields: dict[str, Any] = {"checkpoint": checkpoint}

    task_id = obj.get("id")
    if not isinstance(task_id, str) or not task_id:
        out.append(Violation(f"{path}.id", "required: a non-empty string"))
    fields["id"] = task_id

    type_name = obj.get("type")
    task_type = None
    if not isinstance(type_name, str) or not type_name:
        out.append(Violation(f"{path}.type", "required: a task type name"))
    elif task_types is not None:
        task_type = task_types.get(type_name)
        if task_type is None:
            known = ", ".join(sorted(task_types)) or "none registered"
            out.append(Violation(f"{path}.type", f"unknown task type (expected one of {known})"))
    fields["type"] = type_name

    status: TaskStatus | None = None
    try:
        status = TaskStatus(obj.get("status"))
    except ValueError:
        allowed = ", ".join(member.value for member in TaskStatus)
        out.append(Violation(f"{path}.status", f"required: one of {allowed}"))
    fields["status"] = status

    for key, attr in _TIMES.items():
        raw = obj.get(key)
        if raw is None:
            fields[attr] = None
            continue
        try:
            fields[attr] = parse_timestamp(raw)
        except ValueError as exc:
            out.append(Violation(f"{path}.{key}", str(exc)))
    for key, attr in _COUNTERS.items():
        raw = obj.get(key)
        if type(raw) is not int or raw < 0:
            out.append(Violation(f"{path}.{key}", "required: a non-negative integer"))
        fields[attr] = raw

    fields["failures"] = _parse_failures(obj.get("failures"), f"{path}.failures", out)

    cancel = obj.get("cancelRequested", False)
    if not isinstance(cancel, bool):
        out.append(Violation(f"{path}.cancelRequested", "must be a boolean"))
    fields["cancel_requested"] = cancel

    slices = obj.get("slices", 1)
    if type(slices) is not int or not 1 <= slices <= MAX_SLICES:
        out.append(Violation(f"{path}.slices", f"must be an integer in 1..{MAX_SLICES}"))
    fields["slices"] = slices
    parent = obj.get("sliceOf")
    if parent is not None and (not isinstance(parent, str) or not parent):
        out.append(Violation(f"{path}.sliceOf", "must be a non-empty task id"))
    fields["parent"] = parent

    option_keys = options_keys(obj)
    for key in obj:
        if key not in _KNOWN and key not in option_keys:
            out.append(Violation(f"{path}.{key}", "unknown field"))
    options = read_options(obj, task_type, path, out)
    if options is not None:
        fields["options_key"], fields["options"] = options

    if status is not None:
        _check_consistency(status, fields, path, out)
    if out:
        return None
    if fields["created_at"] is None:
        # Reference JSON has no createdAt; the start time is the best stand-in.
        fields["created_at"] = fields["started_at"] or _EPOCH
    return Task(**fields)


def _parse_failures(raw: Any, path: str, out: list[Violation]) -> tuple[Failure, ...]:
    if not isinstance(raw, list):
        out.append(Violation(path, "required: a list of failures"))
        return ()
    if len(raw) > MAX_FAILURES:
        out.append(Violation(path, f"at most {MAX_FAILURES} entries"))
    failures: list[Failure] = []
    for index, entry in enumerate(raw):
        where = f"{path}.{index}"
        if not isinstance(entry, Mapping):
            out.append(Violation(where, "must be an object"))
            continue
        code, description, data = entry.get("code"), entry.get("description"), entry.get("data")
        if not isinstance(code, str) or not code:
            out.append(Violation(f"{where}.code", "required: a non-empty string"))
        if not isinstance(description, str):
            out.append(Violation(f"{where}.description", "required: a string"))
        if data is not None and not isinstance(data, Mapping):
            out.append(Violation(f"{where}.data", "must be an object"))
        for key in entry:
            if key not in ("code", "description", "data"):
                out.append(Violation(f"{where}.{key}", "unknown field"))
        failures.append(Failure(str(code), str(description), data))
    return tuple(failures)


def _check_consistency(
    status: TaskStatus, fields: Mapping[str, Any], path: str, out: list[Violation]
) -> None:
    def forbid(key: str, reason: str) -> None:
        if fields.get(_TIMES[key]) is not None:
            out.append(Violation(f"{path}.{key}", reason))

    def need(key: str, reason: str) -> None:
        if fields.get(_TIMES[key]) is None and not any(v.field == f"{path}.{key}" for v in out):
            out.append(Violation(f"{path}.{key}", reason))

    if status is TaskStatus.NEW:
        forbid("startedAt", "must be absent while the task is NEW")
    if status is TaskStatus.RUNNING:
        need("startedAt", "required once the task is RUNNING")
    if status.is_finished:
        need("finishedAt", "required once the task is COMPLETED or FAILED")
        if fields.get("parent") is None:  # a slice never expires on its own
            need("expiresAt", "required once the task is COMPLETED or FAILED")
    else:
        forbid("finishedAt", "must be absent until the task is COMPLETED or FAILED")
        forbid("expiresAt", "must be absent until the task is COMPLETED or FAILED")
    if status is TaskStatus.FAILED and not fields.get("failures"):
        out.append(Violation(f"{path}.failures", "a FAILED task has at least one failure"))
    failures = fields.get("failures") or ()
    failed = fields.get("items_failed")
    item_failures = len(failures) - (1 if status is TaskStatus.FAILED else 0)
    if type(failed) is int and failed < item_failures and len(failures) < MAX_FAILURES:
        out.append(Violation(f"{path}.itemsFailed", "smaller than the item failures listed"))
