"""A task's lifecycle: its statuses, the one table of legal moves, and its failures.

Owns :class:`TaskStatus`, :data:`TRANSITIONS` with :func:`check_transition` (the only
moves allowed; anything else raises :class:`~taskengine.errors.InvalidTransition`), and
:class:`Failure`, an entry of a task's ``failures`` with the cap :data:`MAX_FAILURES`.
All are re-exported by :mod:`taskengine.task` and the package::

    NEW ──> RUNNING ──> COMPLETED
     │         │
     └─────────┴──────> FAILED        (a whole-task error or a cancellation)
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from typing import Any

import attrs

from taskengine import codes
from taskengine.errors import InvalidTransition

__all__ = [
    "CANCELLED",
    "MAX_FAILURES",
    "TRANSITIONS",
    "Failure",
    "TaskStatus",
    "check_transition",
]

MAX_FAILURES = 100
"""At most this many entries in ``failures`` (ref); ``itemsFailed`` still counts all."""

CANCELLED = codes.CANCELLED
"""The failure code of a cancelled task (ref)."""


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
