"""The one reader of task JSON's options: which key holds them, and how they are read.

A task object carries its options under exactly one key ending in ``Options``
(``"deleteByQueryOptions"``, see docs/task-types.md). Every reader goes through here:

* :func:`read_create` reads what a client asks to create (``TaskEngine.create_task``);
* :func:`read_options` reads the options object of stored or served task JSON
  (``Task.from_json``);
* :func:`collection_of` finds the collection of a task file (the CLI's ``run``);
* :func:`stored_options` turns the :class:`RawOptions` a task store hands back into a
  type's typed options, once, when the task runs.

Stored options that no longer parse fail the task with ``WDE0075`` and
``{"dataCollectionId": name}`` (docs/lifecycle.md): the options cannot be used, which
is a validation failure of the task, not a storage error (``WDE0054``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from taskengine import codes

# The JSON-text check belongs with the value model; see pyproject's import contracts.
from taskengine._jsonio import TOO_DEEP, check_json
from taskengine.errors import InvalidTask, TaskFailure, Violation

if TYPE_CHECKING:
    from taskengine.tasktype import TaskOptions, TaskType

__all__ = [
    "OPTIONS_SUFFIX",
    "READ_ONLY",
    "RawOptions",
    "collection_of",
    "options_keys",
    "read_create",
    "read_options",
    "stored_options",
]

OPTIONS_SUFFIX = "Options"
"""Every key that holds a task's options ends with this (``"editFieldDataOptions"``)."""

READ_ONLY = frozenset(
    {
        "id",
        "status",
        "createdAt",
        "startedAt",
        "finishedAt",
        "expiresAt",
        "estimatedItemCount",
        "itemsSucceeded",
        "itemsFailed",
        "failures",
        "cancelRequested",
    }
)
"""Task JSON fields the engine sets; a create request may not."""


@attrs.frozen
class RawOptions:
    """Options kept as JSON, for a task whose type is not registered (yet).

    Task stores hand these back; the engine reads them with the task type's parser
    (:func:`stored_options`) when it runs the task.
    """

    collection: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A deep copy of the options JSON."""
        return copy.deepcopy(dict(self.data))


def options_keys(obj: Mapping[Any, Any]) -> list[str]:
    """The keys of a task object that hold options (those ending in ``Options``)."""
    return [key for key in obj if isinstance(key, str) and key.endswith(OPTIONS_SUFFIX)]


def collection_of(obj: Any) -> str | None:
    """The ``dataCollectionId`` of the first options object of a task object, if any."""
    if not isinstance(obj, Mapping):
        return None
    for key in options_keys(obj):
        value = obj[key]
        collection = value.get("dataCollectionId") if isinstance(value, Mapping) else None
        if isinstance(collection, str) and collection:
            return collection
    return None


def read_options(
    obj: Mapping[str, Any], task_type: TaskType | None, path: str, out: list[Violation]
) -> tuple[str, TaskOptions] | None:
    """Read the one options object of task JSON ``obj``: ``(its key, the options)``.

    With ``task_type`` the options are parsed by the type's parser; without, they stay
    :class:`RawOptions` (which need only a ``dataCollectionId``). Violations are added to
    ``out`` and ``None`` returned.
    """
    keys = options_keys(obj)
    if len(keys) != 1:
        where = f"{path}.{task_type.options_key}" if task_type is not None else path
        reason = "required" if not keys else "exactly one options object is allowed"
        out.append(Violation(where, reason))
        return None
    key = keys[0]
    where = f"{path}.{key}"
    if task_type is not None:
        if key != task_type.options_key:
            out.append(Violation(where, f"does not match type {task_type.name}"))
            return None
        parsed, problems = task_type.parse_options(obj[key], where)
        out.extend(problems)
        return (key, parsed) if parsed is not None and not problems else None
    value = obj[key]
    if not isinstance(value, Mapping):
        out.append(Violation(where, "must be an object"))
        return None
    collection = value.get("dataCollectionId")
    if not isinstance(collection, str) or not collection:
        out.append(Violation(f"{where}.dataCollectionId", "required: a non-empty string"))
        return None
    return key, RawOptions(collection, copy.deepcopy(dict(value)))


def stored_options(options: TaskOptions, task_type: TaskType) -> TaskOptions:
    """``options`` as ``task_type``'s typed options, parsing :class:`RawOptions` once.

    Raises:
        TaskFailure: ``WDE0075`` with ``{"dataCollectionId": name}``: the stored options
            no longer parse (only a task store edited by hand gets here).
    """
    if not isinstance(options, RawOptions):
        return options
    parsed, problems = task_type.parse_options(options.to_json(), f"task.{task_type.options_key}")
    if parsed is None or problems:
        listed = "; ".join(f"{v.field}: {v.description}" for v in problems) or "unreadable"
        raise TaskFailure(
            codes.ITEM_VALIDATION,
            f"Invalid task options: {listed}",
            {"dataCollectionId": options.collection},
        )
    return parsed


def read_create(spec: Any, task_types: Mapping[str, TaskType]) -> tuple[TaskType, TaskOptions]:
    """Read a create request: task JSON (maybe wrapped as ``{"task": ...}``) or typed options.

    Returns the task's type and its parsed options.

    Raises:
        InvalidTask: every violation by JSON path (``task.type: required``).
    """
    if not isinstance(spec, Mapping):
        if hasattr(spec, "to_json") and hasattr(spec, "collection"):
            return _read_typed(spec, task_types)
        raise InvalidTask([Violation("task", "must be an object or typed task options")])
    if set(spec) == {"task"}:
        spec = spec["task"]
        if not isinstance(spec, Mapping):
            raise InvalidTask([Violation("task", "must be an object")])
    unencodable = _unencodable(spec, "task")
    if any(v.description == TOO_DEEP for v in unencodable):
        raise InvalidTask(unencodable)  # parsing it could exhaust the stack
    problems: list[Violation] = []
    task_type: TaskType | None = None
    type_name = spec.get("type")
    if type_name is None:
        problems.append(Violation("task.type", "required"))
    elif not isinstance(type_name, str) or type_name not in task_types:
        known = ", ".join(sorted(task_types)) or "none registered"
        problems.append(Violation("task.type", f"must be one of {known}"))
    else:
        task_type = task_types[type_name]
    option_keys = {known.options_key for known in task_types.values()}
    options: TaskOptions | None = None
    for key in spec:
        where = f"task.{key}"
        if not isinstance(key, str):
            problems.append(Violation("task", f"unknown field {key!r}"))
        elif key == "type":
            continue
        elif key in READ_ONLY:
            problems.append(Violation(where, "read-only: set by the engine"))
        elif task_type is not None and key == task_type.options_key:
            parsed, found = task_type.parse_options(spec[key], where)
            problems.extend(found)
            options = parsed if not found else None
        elif key in option_keys or key.endswith(OPTIONS_SUFFIX):
            reason = f"not allowed with type {type_name}" if task_type else "unexpected"
            problems.append(Violation(where, reason))
        else:
            problems.append(Violation(where, "unknown field"))
    if task_type is not None and task_type.options_key not in spec:
        problems.append(Violation(f"task.{task_type.options_key}", "required"))
    if unencodable:
        problems = _merge_violations(unencodable, problems)
    if problems or task_type is None or options is None:
        raise InvalidTask(problems or [Violation("task", "invalid task")])
    return task_type, options


def _read_typed(spec: Any, task_types: Mapping[str, TaskType]) -> tuple[TaskType, TaskOptions]:
    try:
        data = spec.to_json()
    except Exception as exc:  # an arbitrary object: report, never crash
        raise InvalidTask([Violation("task", f"cannot serialise options: {exc}")]) from exc
    class_name = type(spec).__name__.lower()
    keys = [t.options_key for t in task_types.values() if t.options_key.lower() == class_name]
    deep = _unencodable(data, f"task.{keys[0]}" if keys else "task")
    if any(v.description == TOO_DEEP for v in deep):
        raise InvalidTask(deep)  # parsing it could exhaust the stack
    for task_type in task_types.values():
        where = f"task.{task_type.options_key}"
        parsed, problems = task_type.parse_options(data, where)
        named = task_type.options_key.lower() == class_name  # CopyFieldDataOptions
        if (parsed is not None and type(parsed) is type(spec)) or (named and problems):
            unencodable = _unencodable(data, where)
            if unencodable:
                problems = _merge_violations(unencodable, problems)
            if problems or parsed is None:
                raise InvalidTask(problems or [Violation(where, "invalid options")])
            return task_type, parsed
    raise InvalidTask(
        [Violation("task", f"{type(spec).__name__} is not the options of a registered type")]
    )


def _unencodable(spec: Any, path: str) -> list[Violation]:
    """Every part of a task spec that its JSON text could not carry (see ``check_json``)."""
    found: list[Violation] = []
    check_json(spec, path, found)  # bounded: it stops at the wire's nesting limit
    return found


def _merge_violations(first: list[Violation], more: list[Violation]) -> list[Violation]:
    """``first``, then those of ``more`` not at or under one of ``first``'s paths."""
    taken = {v.field for v in first}
    merged = list(first)
    for violation in more:
        field = violation.field
        if field in taken or any(field.startswith(f"{t}.") for t in taken):
            continue
        merged.append(violation)
    return merged
