"""The progress view of a task (``/api/backgroundtask/{id}``; see docs/progress.md).

A :class:`Progress` is derived from a :class:`~taskengine.task.Task` snapshot::

    {"Id": ..., "Complete": false, "TotalElements": 10, "ProcessedElements": 5,
     "ProgressInPercent": 0.5, "StartedAt": "...", "Message": "Deleting items",
     "Self": "http://localhost/api/backgroundtask/<id>"}

``StartedAt`` is absent while the task is NEW and ``FinishedAt`` until it ends, like the
task's own timestamps.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from taskengine.task import Task, TaskStatus, format_timestamp
from taskengine.tasktype import DEFAULT_RUNNING_MESSAGE

if TYPE_CHECKING:
    from taskengine.tasktype import TaskType

__all__ = ["PROGRESS_PATH", "Progress", "progress_message"]

PROGRESS_PATH = "/api/backgroundtask/"
"""The path prefix of the progress resource; ``Self`` is ``base_url + PROGRESS_PATH + id``."""


def progress_message(task: Task, running_message: str = DEFAULT_RUNNING_MESSAGE) -> str:
    """The human ``Message`` for a task in its current state.

    Args:
        task: the task.
        running_message: what a RUNNING task is doing; its type's
            :attr:`~taskengine.tasktype.TaskType.running_message`.
    """
    if task.status is TaskStatus.NEW:
        return "Waiting to start"
    if task.status is TaskStatus.RUNNING:
        if task.cancel_requested:
            return "Cancelling"
        return running_message
    if task.status is TaskStatus.COMPLETED:
        return "Task Completed"
    if task.failures:
        return task.failures[0].description
    return "Task Failed"


@attrs.frozen
class Progress:
    """How far a task has got.

    Attributes:
        id: the task id.
        complete: the task is finished (COMPLETED or FAILED).
        total_elements: the item estimate counted when the task started.
        processed_elements: items processed so far (succeeded + failed).
        progress_in_percent: ``processed / total`` in ``0..1`` (1.0 once COMPLETED; 0.0
            for an empty total before that).
        started_at: when the task started, or ``None`` while NEW.
        finished_at: when it ended, or ``None``.
        message: human text (``"Deleting items"``, ``"Task Completed"``, the reason of a
            failure or cancellation).
    """

    id: str
    complete: bool
    total_elements: int
    processed_elements: int
    progress_in_percent: float
    started_at: datetime | None
    finished_at: datetime | None
    message: str

    @classmethod
    def of(cls, task: Task, task_type: TaskType | None = None) -> Progress:
        """The progress view of ``task``.

        Args:
            task: the task.
            task_type: its type, whose ``running_message`` is the ``Message`` while the
                task runs; ``None`` (a type this engine does not know) gives
                ``"Processing items"``.
        """
        processed = task.items_succeeded + task.items_failed
        total = task.estimated_item_count
        if task.status is TaskStatus.COMPLETED:
            percent = 1.0
        elif total > 0:
            percent = min(1.0, processed / total)
        else:
            percent = 0.0
        return cls(
            id=task.id,
            complete=task.is_finished,
            total_elements=total,
            processed_elements=processed,
            progress_in_percent=percent,
            started_at=task.started_at,
            finished_at=task.finished_at,
            message=progress_message(
                task,
                task_type.running_message if task_type is not None else DEFAULT_RUNNING_MESSAGE,
            ),
        )

    def self_url(self, base_url: str) -> str:
        """The resource URL: ``base_url`` + ``/api/backgroundtask/`` + the quoted id."""
        return base_url.rstrip("/") + PROGRESS_PATH + quote(self.id, safe="")

    def to_json(self, base_url: str = "http://localhost") -> dict[str, Any]:
        """The JSON of docs/progress.md (PascalCase keys), with ``Self`` under ``base_url``."""
        out: dict[str, Any] = {
            "Id": self.id,
            "Complete": self.complete,
            "TotalElements": self.total_elements,
            "ProcessedElements": self.processed_elements,
            "ProgressInPercent": self.progress_in_percent,
        }
        if self.started_at is not None:
            out["StartedAt"] = format_timestamp(self.started_at)
        if self.finished_at is not None:
            out["FinishedAt"] = format_timestamp(self.finished_at)
        out["Message"] = self.message
        out["Self"] = self.self_url(base_url)
        return out
