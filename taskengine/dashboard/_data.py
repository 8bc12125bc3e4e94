"""The JSON the dashboard reads besides the task API: a task page with owners, a dry run
of a create request, and the collections with their item counts.

Each is one call on the engine, its task store or its storage; the WSGI side (routes,
the token, the error envelopes) is :mod:`taskengine.dashboard`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskengine._lease import WAITING, owner_label, shown_holder, task_holder
from taskengine._taskjson import read_create
from taskengine.storage.base import Environment

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.task import Task
    from taskengine.taskstore import TaskStore

__all__ = [
    "WAITING",
    "collections_json",
    "holder_label",
    "owner_label",
    "task_json",
    "tasks_json",
    "validate",
]


def holder_label(store: TaskStore, task: Task, now: datetime) -> str | None:
    """Who holds an unfinished task at ``now``, as ``tasks list`` shows it (``host/pid``,
    ``waiting``, ``waiting (lease ran out)``, ``waiting (owner exited)``); ``None`` for a
    finished task: :func:`taskengine._lease.task_holder` (for a sliced task that started,
    its slices'), the command line's OWNER rule, with an owner shown as ``host/pid``.
    """
    return shown_holder(task_holder(store, task, now))


def tasks_json(engine: TaskEngine, limit: int, offset: int) -> dict[str, Any]:
    """A page of ``engine.list_tasks`` (the API's JSON), each unfinished task with its
    ``owner`` (:func:`holder_label`): all a refresh of the list needs, in one answer.

    Raises:
        InvalidRequest: paging out of range (as ``list_tasks``).
    """
    page = engine.list_tasks(limit=limit, offset=offset)
    out = page.to_json()
    now = engine.clock.now()
    for task, shown in zip(page.tasks, out["tasks"], strict=True):
        held_by = holder_label(engine.task_store, task, now)
        if held_by is not None:
            shown["owner"] = held_by
    return out


def task_json(engine: TaskEngine, task_id: str) -> dict[str, Any]:
    """``{"task": ...}`` as the API's get answers it, with the ``owner`` of an unfinished task.

    Raises:
        TaskNotFound: no such task, or it expired.
    """
    task = engine.get_task(task_id)
    shown = task.to_json()
    held_by = holder_label(engine.task_store, task, engine.clock.now())
    if held_by is not None:
        shown["owner"] = held_by
    return {"task": shown}


def validate(engine: TaskEngine, spec: dict[str, Any]) -> dict[str, Any]:
    """Check a create request as ``engine.create_task`` would, storing nothing.

    Returns ``{"valid": true, "type": ..., "options": {...}}`` (the options as they would
    be stored, defaults filled in).

    Raises:
        InvalidTask: every violation by JSON path, exactly as a create would.
    """
    task_type, options = read_create({"task": spec}, engine.task_types)
    return {"valid": True, "type": task_type.name, "options": options.to_json()}


def collections_json(engine: TaskEngine) -> dict[str, Any]:
    """Every collection of the engine's storage, by name: its flags and item counts per
    environment (``SANDBOX`` is ``null`` when the collection has no sandbox).

    Raises:
        StorageError: the storage failed.
    """
    storage = engine.storage
    shown = []
    for info in sorted(storage.list_collections(), key=lambda info: info.name):
        counts: dict[str, int | None] = {}
        exact = True
        for environment in Environment:
            if environment is Environment.SANDBOX and not info.sandbox_enabled:
                counts[environment.value] = None
                continue
            count = storage.count(info.name, environment)
            counts[environment.value] = count.value
            exact = exact and count.exact
        shown.append(
            {
                "name": info.name,
                "sandboxEnabled": info.sandbox_enabled,
                "publishPlugin": info.publish_plugin,
                "counts": counts,
                "exact": exact,
            }
        )
    return {"collections": shown}
