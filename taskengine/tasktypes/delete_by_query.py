"""``DELETE_BY_QUERY``: delete every item a filter matches (see docs/task-types.md).

On a collection with the publish plugin, DRAFT items are spared unless
``publishPluginOptions.includeDraftItems`` is true (an item without ``_publishStatus`` is
PUBLISHED). ``appOptions`` are handed through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from taskengine.tasktype import BatchChanges, Plan, TaskType
from taskengine.tasktypes._changes import DELETE_MATCHED, DeleteMatched
from taskengine.tasktypes._common import (
    CollectionOptions,
    OptionsReader,
    TaskEnvironment,
    compile_task_filter,
    resolve_target,
    target_json,
    typed_options,
)
from taskengine.tasktypes._publish_schedule import PUBLISH_STATUS, PUBLISHED

if TYPE_CHECKING:
    from taskengine.errors import Violation
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.tasktype import TaskOptions

__all__ = [
    "DELETE_BY_QUERY",
    "PUBLISHED_ONLY",
    "DeleteByQueryExecutor",
    "DeleteByQueryOptions",
    "parse_delete_by_query_options",
]

PUBLISHED_ONLY: Final[Mapping[str, Any]] = {
    "$or": [{PUBLISH_STATUS: None}, {PUBLISH_STATUS: {"$eq": PUBLISHED}}]
}
"""Wix filter for published items: ``_publishStatus`` missing, null or ``PUBLISHED``."""


@attrs.frozen
class DeleteByQueryOptions(CollectionOptions):
    """Options of a ``DELETE_BY_QUERY`` task.

    Attributes:
        data_collection_id: the collection to delete from.
        environment: the requested environment.
        filter: the wix-dialect filter; ``None`` (or ``{}``) deletes every item.
        app_options: opaque options handed through unchanged (ref ``appOptions``).
        include_draft_items: on a collection with the publish plugin, also delete DRAFT
            items (by default only PUBLISHED ones, or ones without a status, are deleted).
    """

    TASK_TYPE: ClassVar[str] = "DELETE_BY_QUERY"
    OPTIONS_KEY: ClassVar[str] = "deleteByQueryOptions"

    data_collection_id: str
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None
    app_options: Mapping[str, Any] | None = None
    include_draft_items: bool = False

    def to_json(self) -> dict[str, Any]:
        """The reference ``deleteByQueryOptions`` object."""
        out = target_json(self.data_collection_id, self.environment, self.filter)
        if self.app_options is not None:
            out["appOptions"] = dict(self.app_options)
        out["publishPluginOptions"] = {"includeDraftItems": self.include_draft_items}
        return out


def parse_delete_by_query_options(
    value: Any, path: str
) -> tuple[DeleteByQueryOptions | None, list[Violation]]:
    """Validate and build ``deleteByQueryOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = OptionsReader(value, path, violations)
    if not r.ok:
        return None, violations
    collection, environment = r.common({"filter", "appOptions", "publishPluginOptions"})
    spec = r.filter()
    app_options = r.opaque_object("appOptions")
    include_drafts = False
    plugin = r.get("publishPluginOptions")
    if plugin is not None:
        p = OptionsReader(plugin, r.at("publishPluginOptions"), violations)
        p.reject_unknown(frozenset({"includeDraftItems"}))
        include_drafts = p.boolean("includeDraftItems")
    if violations or collection is None:
        return None, violations
    return (
        DeleteByQueryOptions(
            data_collection_id=collection,
            environment=environment,
            filter=spec,
            app_options=app_options,
            include_draft_items=include_drafts,
        ),
        [],
    )


class DeleteByQueryExecutor:
    """Deletes every matching item; DRAFT items are spared unless asked for."""

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target; add the published-only condition when drafts are spared.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = typed_options(options, DeleteByQueryOptions)
        info, env = resolve_target(opts.collection, opts.environment, storage)
        spec: Mapping[str, Any] | None = opts.filter
        if info.publish_plugin and not opts.include_draft_items:
            spec = {"$and": [dict(spec), PUBLISHED_ONLY]} if spec else PUBLISHED_ONLY
        compiled = compile_task_filter(spec, opts.collection)
        return Plan(opts.collection, env, compiled, opts.app_options)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Every matching item is deleted."""
        return BatchChanges(deletes=[item["_id"] for item in items])

    def item_change(self, plan: Plan) -> DeleteMatched:
        """Every matched item is deleted (a storage may do it in one statement)."""
        return DELETE_MATCHED

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after a delete batch."""


DELETE_BY_QUERY: Final = TaskType(
    DeleteByQueryOptions.TASK_TYPE,
    DeleteByQueryOptions.OPTIONS_KEY,
    parse_delete_by_query_options,
    DeleteByQueryExecutor(),
    running_message="Deleting items",
)
"""The ``DELETE_BY_QUERY`` task type (its executor keeps no state, so one serves all)."""
