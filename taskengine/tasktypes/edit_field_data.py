"""``EDIT_FIELD_DATA``: array operations on one field of matching items (docs/task-types.md).

Order replace -> remove -> add -> dedupe (the rules are
:func:`~taskengine.tasktypes._fieldops.edit_value`). A value that cannot take the
operations (add/remove/dedupe on a non-array) is an item failure ``WDE0075`` and the item
is not written.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from taskengine import codes
from taskengine.tasktype import BatchChanges, Plan, TaskType
from taskengine.tasktypes._changes import EditField, batch_changes
from taskengine.tasktypes._common import (
    CollectionOptions,
    OptionsReader,
    TaskEnvironment,
    check_value,
    compile_task_filter,
    resolve_target,
    target_json,
    typed_options,
)
from taskengine.tasktypes._fieldops import Operations, ReplaceItem

if TYPE_CHECKING:
    from taskengine.errors import Violation
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.tasktype import TaskOptions

__all__ = [
    "EDIT_FIELD_DATA",
    "MAX_OPERATION_ENTRIES",
    "EditFieldDataExecutor",
    "EditFieldDataOptions",
    "parse_edit_field_data_options",
]

MAX_OPERATION_ENTRIES: Final = 64
"""Most entries in each of ``addItems``, ``removeItems`` and ``replaceItems`` (ref)."""


@attrs.frozen
class EditFieldDataOptions(CollectionOptions):
    """Options of an ``EDIT_FIELD_DATA`` task: edit the array in ``field_key`` of matching
    items."""

    TASK_TYPE: ClassVar[str] = "EDIT_FIELD_DATA"
    OPTIONS_KEY: ClassVar[str] = "editFieldDataOptions"

    data_collection_id: str
    field_key: str
    operations: Operations
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The reference ``editFieldDataOptions`` object."""
        out = target_json(self.data_collection_id, self.environment, self.filter)
        out["fieldKey"] = self.field_key
        out["operations"] = self.operations.to_json()
        return out


def _value_list(r: OptionsReader, key: str) -> list[Any]:
    value = r.get(key)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        r.fail(r.at(key), "must be an array")
        return []
    if len(value) > MAX_OPERATION_ENTRIES:
        r.fail(r.at(key), f"must have at most {MAX_OPERATION_ENTRIES} entries")
    if key != "replaceItems":
        for i, element in enumerate(value):
            check_value(element, f"{r.at(key)}.{i}", r.violations)
    return copy.deepcopy(list(value))


def _parse_operations(value: Any, path: str, violations: list[Violation]) -> Operations | None:
    r = OptionsReader(value, path, violations)
    if not r.ok:
        return None
    before = len(violations)
    r.reject_unknown(frozenset({"addItems", "removeItems", "replaceItems", "removeDuplicates"}))
    add = _value_list(r, "addItems")
    remove = _value_list(r, "removeItems")
    replace: list[ReplaceItem] = []
    for i, entry in enumerate(_value_list(r, "replaceItems")):
        e = OptionsReader(entry, f"{r.at('replaceItems')}.{i}", violations)
        if not e.ok:
            continue
        e.reject_unknown(frozenset({"from", "to"}))
        # A present JSON null is a legitimate value here (replace null elements), so
        # presence is tested by key, not by value.
        missing = [k for k in ("from", "to") if k not in e.obj]
        for k in missing:
            e.fail(e.at(k), "required")
        for k in ("from", "to"):
            if k in e.obj:
                check_value(e.obj[k], e.at(k), violations)
        if not missing:
            replace.append(ReplaceItem(from_=e.obj["from"], to=e.obj["to"]))
    dedupe = r.boolean("removeDuplicates")
    if len(violations) > before:
        return None
    ops = Operations(
        add_items=add, remove_items=remove, replace_items=replace, remove_duplicates=dedupe
    )
    if not (ops.needs_array or ops.replace_items):
        r.fail(
            path,
            "must request at least one of addItems, removeItems, replaceItems"
            " or removeDuplicates: true",
        )
        return None
    return ops


def parse_edit_field_data_options(
    value: Any, path: str
) -> tuple[EditFieldDataOptions | None, list[Violation]]:
    """Validate and build ``editFieldDataOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = OptionsReader(value, path, violations)
    if not r.ok:
        return None, violations
    collection, environment = r.common({"filter", "fieldKey", "operations"})
    spec = r.filter()
    field_key = r.field_key("fieldKey", written=True)
    operations = _parse_operations(r.get("operations"), r.at("operations"), violations)
    if violations or collection is None or field_key is None or operations is None:
        return None, violations
    return (
        EditFieldDataOptions(
            data_collection_id=collection,
            environment=environment,
            filter=spec,
            field_key=field_key,
            operations=operations,
        ),
        [],
    )


class EditFieldDataExecutor:
    """Applies the array operations to one field of every matching item."""

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target and compile the filter.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = typed_options(options, EditFieldDataOptions)
        _, env = resolve_target(opts.collection, opts.environment, storage)
        state = EditField.of(opts.field_key, opts.operations)
        compiled = compile_task_filter(opts.filter, opts.collection)
        return Plan(opts.collection, env, compiled, state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Edit each item; changed ones are replaced, refused ones are item failures."""
        return batch_changes(plan.state, items, codes.ITEM_VALIDATION)

    def item_change(self, plan: Plan) -> EditField:
        """The edit, for a storage that changes batches itself."""
        change: EditField = plan.state
        return change

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after an edit batch."""


EDIT_FIELD_DATA: Final = TaskType(
    EditFieldDataOptions.TASK_TYPE,
    EditFieldDataOptions.OPTIONS_KEY,
    parse_edit_field_data_options,
    EditFieldDataExecutor(),
    running_message="Editing field data",
)
"""The ``EDIT_FIELD_DATA`` task type (its executor keeps no state, so one serves all)."""
