"""Reading a whole task object: the fields of task JSON, each one checked.

Owns what :meth:`taskengine.task.Task.from_json` accepts: :func:`read_task_fields` checks
every field of a task object (id, type, status, timestamps, counters, failures, cancel,
slices) and their consistency with the status, reports every violation by JSON path,
and returns the fields of the ``Task`` to build. The options object is read by
:mod:`taskengine._taskjson`, the one reader of options.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from taskengine._lifecycle import MAX_FAILURES, Failure, TaskStatus
from taskengine._taskjson import options_keys, read_options
from taskengine._values import parse_timestamp
from taskengine.errors import Violation

if TYPE_CHECKING:
    from taskengine.tasktype import TaskType

__all__ = ["MAX_SLICES", "read_task_fields"]

MAX_SLICES = 64
"""The most slices a task may be split into."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

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


def read_task_fields(
    obj: Any,
    task_types: Mapping[str, TaskType] | None,
    path: str,
    checkpoint: str | None,
    out: list[Violation],
) -> dict[str, Any] | None:
    """The ``Task`` fields of task JSON as ``Task.to_json`` writes it, every field checked;
    ``None`` when a violation was found (each one appended to ``out``, by JSON path).

    Args:
        obj: the task object.
        task_types: registered types by name; when given, ``type`` must be one of them
            and the options are parsed into typed options, else they stay ``RawOptions``.
        path: the JSON path of ``obj``, the prefix of every violation path.
        checkpoint: the internal scan cursor (it is not part of the JSON).
        out: where violations are appended.
    """
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
    return fields


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
