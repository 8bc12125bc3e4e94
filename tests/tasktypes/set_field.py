"""``SET_FIELD``: a fifth task type, written as a user would, against the public API only.

It sets one field to one value on every item a wix filter matches. Like a built-in type
module it holds the options, their parser, the executor and the ``TaskType``; adding it
to an engine is one ``register_task_type`` call (README, "Your own task type").
"""

from __future__ import annotations

from typing import Any, NamedTuple

from taskengine import (
    BatchChanges,
    Environment,
    InvalidFilter,
    Plan,
    Storage,
    TaskOptions,
    TaskType,
    Violation,
    WriteResult,
    compile_filter,
)

_KEYS = ("dataCollectionId", "fieldKey", "value", "filter")


class SetFieldOptions(NamedTuple):
    """Options of ``SET_FIELD``: the collection, the field, its new value, a filter."""

    collection: str
    field_key: str
    value: Any
    filter: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``setFieldOptions`` object."""
        out = {"dataCollectionId": self.collection, "fieldKey": self.field_key}
        out["value"] = self.value
        if self.filter is not None:
            out["filter"] = self.filter
        return out


def parse_set_field_options(
    value: Any, path: str
) -> tuple[SetFieldOptions | None, list[Violation]]:
    """Validate ``setFieldOptions`` at ``path``, reporting every problem by its path."""
    if not isinstance(value, dict):
        return None, [Violation(path, "must be an object")]
    problems = [Violation(f"{path}.{key}", "unknown field") for key in value if key not in _KEYS]
    for key in ("dataCollectionId", "fieldKey"):
        if not isinstance(value.get(key), str) or not value[key]:
            problems.append(Violation(f"{path}.{key}", "required: a non-empty string"))
    if "value" not in value:
        problems.append(Violation(f"{path}.value", "required"))
    spec = value.get("filter")
    if spec is not None:
        try:
            compile_filter(spec, "wix")
        except InvalidFilter as exc:
            problems.append(Violation(f"{path}.filter", exc.reason))
    if problems:
        return None, problems
    return SetFieldOptions(value["dataCollectionId"], value["fieldKey"], value["value"], spec), []


class SetFieldExecutor:
    """Sets the field on every matching item that does not already hold the value."""

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """The collection (which must exist), LIVE, the compiled filter."""
        assert isinstance(options, SetFieldOptions)
        storage.collection_info(options.collection)
        spec = options.filter
        compiled = compile_filter(spec, "wix") if spec else None
        return Plan(options.collection, Environment.LIVE, compiled, options)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Replace the items whose field differs from the value."""
        field, value = plan.state.field_key, plan.state.value
        changed = []
        for item in items:
            if field in item and type(item[field]) is type(value) and item[field] == value:
                continue
            item[field] = value
            changed.append(item)
        return BatchChanges(replaces=changed, unchanged=len(items) - len(changed))

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after a batch."""


SET_FIELD = TaskType(
    "SET_FIELD",
    "setFieldOptions",
    parse_set_field_options,
    SetFieldExecutor(),
    running_message="Setting a field",
)
"""The ``SET_FIELD`` task type."""
