"""``COPY_FIELD_DATA``: on every item, target := a deep copy of source (see docs/task-types.md).

No conversion happens. An item without the source field, or whose target already holds
an identical value, succeeds without a write. The per-item rule is
:func:`~taskengine.tasktypes._fieldops.copy_item`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from taskengine import codes
from taskengine.tasktype import BatchChanges, Plan, TaskType
from taskengine.tasktypes._changes import CopyField, batch_changes
from taskengine.tasktypes._common import (
    CollectionOptions,
    OptionsReader,
    TaskEnvironment,
    resolve_target,
    target_json,
    typed_options,
)

if TYPE_CHECKING:
    from taskengine.errors import Violation
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.tasktype import TaskOptions

__all__ = [
    "COPY_FIELD_DATA",
    "CopyFieldDataExecutor",
    "CopyFieldDataOptions",
    "parse_copy_field_data_options",
]


@attrs.frozen
class CopyFieldDataOptions(CollectionOptions):
    """Options of a ``COPY_FIELD_DATA`` task: every item's target := copy of its source."""

    TASK_TYPE: ClassVar[str] = "COPY_FIELD_DATA"
    OPTIONS_KEY: ClassVar[str] = "copyFieldDataOptions"

    data_collection_id: str
    source_field_key: str
    target_field_key: str
    environment: TaskEnvironment = TaskEnvironment.LIVE

    def to_json(self) -> dict[str, Any]:
        """The reference ``copyFieldDataOptions`` object."""
        out = target_json(self.data_collection_id, self.environment)
        out["sourceFieldKey"] = self.source_field_key
        out["targetFieldKey"] = self.target_field_key
        return out


def parse_copy_field_data_options(
    value: Any, path: str
) -> tuple[CopyFieldDataOptions | None, list[Violation]]:
    """Validate and build ``copyFieldDataOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = OptionsReader(value, path, violations)
    if not r.ok:
        return None, violations
    collection, environment = r.common({"sourceFieldKey", "targetFieldKey"})
    source = r.field_key("sourceFieldKey", written=False)
    target = r.field_key("targetFieldKey", written=True)
    if source is not None and source == target:
        r.fail(r.at("targetFieldKey"), "must differ from sourceFieldKey")
    if violations or collection is None or source is None or target is None:
        return None, violations
    return (
        CopyFieldDataOptions(
            data_collection_id=collection,
            environment=environment,
            source_field_key=source,
            target_field_key=target,
        ),
        [],
    )


class CopyFieldDataExecutor:
    """Copies the source field into the target field of every item of the collection."""

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target; every item of the collection is touched.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = typed_options(options, CopyFieldDataOptions)
        _, env = resolve_target(opts.collection, opts.environment, storage)
        state = CopyField(opts.source_field_key, opts.target_field_key)
        return Plan(opts.collection, env, None, state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Copy the source value into the target field of each item that has a source."""
        return batch_changes(plan.state, items, codes.ITEM_VALIDATION)

    def item_change(self, plan: Plan) -> CopyField:
        """The copy, for a storage that changes batches itself."""
        change: CopyField = plan.state
        return change

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after a copy batch."""


COPY_FIELD_DATA: Final = TaskType(
    CopyFieldDataOptions.TASK_TYPE,
    CopyFieldDataOptions.OPTIONS_KEY,
    parse_copy_field_data_options,
    CopyFieldDataExecutor(),
    running_message="Copying field data",
)
"""The ``COPY_FIELD_DATA`` task type (its executor keeps no state, so one serves all)."""
