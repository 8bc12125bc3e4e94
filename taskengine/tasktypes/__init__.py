"""The built-in task types: DELETE_BY_QUERY, COPY_FIELD_DATA, EDIT_FIELD_DATA and
UPDATE_PUBLISH_STATUS (see docs/task-types.md).

:func:`default_task_types` is the plug-in point ``TaskEngine`` resolves by name
(``TaskEngine.DEFAULT_TASK_TYPES``) when it is given no task types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskengine.tasktype import Service, TaskType

__all__ = ["default_task_types"]


def default_task_types() -> tuple[list[TaskType], list[Service]]:
    """The four built-in task types, and the services they need (the publish scheduler).

    Each call builds new ones, so two engines never share a scheduler.
    """
    from taskengine.tasktypes._executors import default_task_types as built_in
    from taskengine.tasktypes._publish_schedule import PublishScheduler

    scheduler = PublishScheduler()
    return built_in(scheduler), [scheduler]
