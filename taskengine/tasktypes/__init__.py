"""The built-in task types, one module each (see docs/task-types.md).

* :mod:`~taskengine.tasktypes.delete_by_query` — ``DELETE_BY_QUERY``
* :mod:`~taskengine.tasktypes.copy_field_data` — ``COPY_FIELD_DATA``
* :mod:`~taskengine.tasktypes.edit_field_data` — ``EDIT_FIELD_DATA``
* :mod:`~taskengine.tasktypes.update_publish_status` — ``UPDATE_PUBLISH_STATUS``, whose
  scheduled dates happen through the
  :class:`~taskengine.tasktypes._publish_schedule.PublishScheduler` service

Each module holds its type whole: the options class, its parser, its executor and its
:class:`~taskengine.tasktype.TaskType` (name, options key and progress message). What
several types share (the option-reading rules, the environment, resolving the target)
is in ``_common``; the per-item field rules are in ``_fieldops``.

:func:`default_task_types` gathers the four with the service they need. A type of your
own is one module like these and one ``engine.register_task_type(...)`` (README, "Your
own task type").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from taskengine.tasktypes._publish_schedule import PublishScheduler
from taskengine.tasktypes.copy_field_data import COPY_FIELD_DATA
from taskengine.tasktypes.delete_by_query import DELETE_BY_QUERY
from taskengine.tasktypes.edit_field_data import EDIT_FIELD_DATA
from taskengine.tasktypes.update_publish_status import update_publish_status_type

if TYPE_CHECKING:
    from taskengine.tasktype import Service, TaskType

__all__ = ["BuiltinTypes", "default_task_types"]


@attrs.frozen
class BuiltinTypes:
    """The four built-in task types and the service they need, ready for one engine.

    Register every one of :attr:`task_types` and every one of :attr:`services` on the
    same engine (the publish type tells :attr:`scheduler` about the dates it writes).

    Attributes:
        task_types: ``DELETE_BY_QUERY``, ``COPY_FIELD_DATA``, ``EDIT_FIELD_DATA`` and
            ``UPDATE_PUBLISH_STATUS``, in that order.
        scheduler: the publish-status timeline that makes scheduled dates happen.
    """

    task_types: tuple[TaskType, ...]
    scheduler: PublishScheduler

    @property
    def services(self) -> tuple[Service, ...]:
        """The services to register beside the types: the publish scheduler."""
        return (self.scheduler,)


def default_task_types() -> BuiltinTypes:
    """The built-in task types with a new publish scheduler, for one engine.

    Each call makes a new scheduler (a service holds one engine's timeline), so call it
    once per engine.
    """
    scheduler = PublishScheduler()
    return BuiltinTypes(
        task_types=(
            DELETE_BY_QUERY,
            COPY_FIELD_DATA,
            EDIT_FIELD_DATA,
            update_publish_status_type(scheduler),
        ),
        scheduler=scheduler,
    )
