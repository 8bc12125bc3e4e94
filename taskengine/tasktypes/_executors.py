"""The four task types: one :class:`~taskengine.tasktype.Executor` each.

* :class:`DeleteByQueryExecutor` — ``DELETE_BY_QUERY``
* :class:`CopyFieldDataExecutor` — ``COPY_FIELD_DATA``
* :class:`EditFieldDataExecutor` — ``EDIT_FIELD_DATA``
* :class:`UpdatePublishStatusExecutor` — ``UPDATE_PUBLISH_STATUS`` (with scheduling)

Every executor follows the registry contract: :meth:`plan` runs once when a task starts
(or resumes) and decides the collection, the resolved environment and the filter, or
fails the whole task with a :class:`~taskengine.errors.TaskFailure`
(``WDE0025`` unknown collection, ``WDE0179`` sandbox not enabled, ``WDE0119`` no publish
plugin); :meth:`apply` is pure and turns one batch of matching items into
:class:`~taskengine.tasktype.BatchChanges`; :meth:`committed` hears about writes.

:func:`install_default_task_types` registers all four on an engine, together with the
:class:`~taskengine.tasktypes._publish_schedule.PublishScheduler` service.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from taskengine import codes
from taskengine.errors import CollectionNotFound, InvalidFilter, TaskFailure
from taskengine.filters import compile_filter
from taskengine.storage.base import CollectionInfo, Environment
from taskengine.tasktype import BatchChanges, ItemFailure, Plan, TaskType
from taskengine.tasktypes._fieldops import EditRefused, compile_edit, identical
from taskengine.tasktypes._options import (
    CopyFieldDataOptions,
    DeleteByQueryOptions,
    EditFieldDataOptions,
    Operations,
    PublishOperation,
    TaskEnvironment,
    UpdatePublishStatusOptions,
    parse_copy_field_data_options,
    parse_delete_by_query_options,
    parse_edit_field_data_options,
    parse_update_publish_status_options,
)
from taskengine.tasktypes._publish_schedule import (
    DRAFT,
    DRAFT_DATE,
    PUBLISH_DATE,
    PUBLISH_STATUS,
    PUBLISHED,
    PublishScheduler,
)

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.errors import Violation
    from taskengine.filters import Filter
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.tasktype import TaskOptions

__all__ = [
    "CODE_COLLECTION_NOT_FOUND",
    "CODE_ITEM_VALIDATION",
    "CODE_NOT_SUPPORTED",
    "CODE_SANDBOX_NOT_ENABLED",
    "PUBLISHED_ONLY",
    "CopyFieldDataExecutor",
    "DeleteByQueryExecutor",
    "EditFieldDataExecutor",
    "UpdatePublishStatusExecutor",
    "default_task_types",
    "install_default_task_types",
    "resolve_target",
]

CODE_COLLECTION_NOT_FOUND: Final = codes.COLLECTION_NOT_FOUND
"""Whole-task failure: the collection does not exist."""
CODE_NOT_SUPPORTED: Final = codes.NOT_SUPPORTED
"""Whole-task failure: the collection does not support the operation (no publish plugin)."""
CODE_SANDBOX_NOT_ENABLED: Final = codes.SANDBOX_NOT_ENABLED
"""Whole-task failure: ``SANDBOX`` was asked for and the collection has none."""
CODE_ITEM_VALIDATION: Final = codes.ITEM_VALIDATION
"""Item failure: the operation cannot apply to the item's value."""

PUBLISHED_ONLY: Final[Mapping[str, Any]] = {
    "$or": [{PUBLISH_STATUS: None}, {PUBLISH_STATUS: {"$eq": PUBLISHED}}]
}
"""Wix filter for published items: ``_publishStatus`` missing, null or ``PUBLISHED``."""

_O = TypeVar("_O")


# --------------------------------------------------------------------------- shared steps


def resolve_target(
    collection: str, environment: TaskEnvironment | str, storage: Storage
) -> tuple[CollectionInfo, Environment]:
    """Look the collection up and resolve the requested environment (at task start).

    ``SANDBOX_PREFERRED`` becomes ``SANDBOX`` when the collection has a sandbox enabled,
    else ``LIVE``.

    Raises:
        TaskFailure: ``WDE0025`` when the collection does not exist, ``WDE0179`` when
            ``SANDBOX`` is asked for and the collection has no sandbox.
    """
    try:
        info = storage.collection_info(collection)
    except CollectionNotFound:
        raise TaskFailure(
            CODE_COLLECTION_NOT_FOUND,
            f"Collection {collection!r} not found.",
            {"dataCollectionId": collection},
        ) from None
    wanted = TaskEnvironment(environment)
    if wanted is TaskEnvironment.LIVE:
        return info, Environment.LIVE
    if wanted is TaskEnvironment.SANDBOX_PREFERRED:
        return info, Environment.SANDBOX if info.sandbox_enabled else Environment.LIVE
    if not info.sandbox_enabled:
        raise TaskFailure(
            CODE_SANDBOX_NOT_ENABLED,
            f"Collection {collection!r} has no sandbox environment enabled.",
            {"dataCollectionId": collection, "environment": "SANDBOX"},
        )
    return info, Environment.SANDBOX


def _compile(spec: Mapping[str, Any] | None, collection: str) -> Filter | None:
    if not spec:
        return None
    try:
        return compile_filter(spec, "wix")
    except InvalidFilter as exc:  # validated at create; only a hand-built store gets here
        raise TaskFailure(
            CODE_ITEM_VALIDATION, f"Invalid filter: {exc}", {"dataCollectionId": collection}
        ) from None


def _typed(
    options: TaskOptions,
    kind: type[_O],
    parse: Callable[[Any, str], tuple[_O | None, list[Violation]]],
) -> _O:
    """``options`` as ``kind``; other option objects (raw JSON) are parsed again."""
    if isinstance(options, kind):
        return options
    key: str = getattr(kind, "OPTIONS_KEY", "options")
    parsed, problems = parse(options.to_json(), key)
    if parsed is None or problems:
        listed = "; ".join(f"{v.field}: {v.description}" for v in problems) or "unreadable"
        raise TaskFailure(
            CODE_ITEM_VALIDATION,
            f"Invalid task options: {listed}",
            {"dataCollectionId": options.collection},
        )
    return parsed


# --------------------------------------------------------------------------- DELETE_BY_QUERY


class DeleteByQueryExecutor:
    """``DELETE_BY_QUERY``: delete every item the filter matches.

    On a collection with the publish plugin, DRAFT items are spared unless
    ``includeDraftItems`` is true (an item without ``_publishStatus`` is PUBLISHED).
    ``appOptions`` are carried in the plan's state, untouched.
    """

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target; add the published-only condition when drafts are spared.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = _typed(options, DeleteByQueryOptions, parse_delete_by_query_options)
        info, env = resolve_target(opts.collection, opts.environment, storage)
        spec: Mapping[str, Any] | None = opts.filter
        if info.publish_plugin and not opts.include_draft_items:
            spec = {"$and": [dict(spec), PUBLISHED_ONLY]} if spec else PUBLISHED_ONLY
        return Plan(opts.collection, env, _compile(spec, opts.collection), opts.app_options)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Every matching item is deleted."""
        return BatchChanges(deletes=[item["_id"] for item in items])

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after a delete batch."""


# --------------------------------------------------------------------------- COPY_FIELD_DATA


@attrs.frozen
class _CopyState:
    source: str
    target: str


_SCALARS: Final = (str, int, float, bool, type(None), _dt.datetime)


class CopyFieldDataExecutor:
    """``COPY_FIELD_DATA``: on every item, target := deep copy of source (no conversion).

    An item without the source field, or whose target already holds an identical value,
    succeeds without a write.
    """

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target; every item of the collection is touched.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = _typed(options, CopyFieldDataOptions, parse_copy_field_data_options)
        _, env = resolve_target(opts.collection, opts.environment, storage)
        state = _CopyState(opts.source_field_key, opts.target_field_key)
        return Plan(opts.collection, env, None, state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Copy the source value into the target field of each item that has a source."""
        state: _CopyState = plan.state
        source, target = state.source, state.target
        scalars = _SCALARS
        replaces: list[dict[str, Any]] = []
        unchanged = 0
        for item in items:
            if source not in item:
                unchanged += 1
                continue
            value = item[source]
            if target in item and identical(item[target], value):
                unchanged += 1
                continue
            if not isinstance(value, scalars):
                value = _deepcopy(value)
            item[target] = value
            replaces.append(item)
        return BatchChanges(replaces=replaces, unchanged=unchanged)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after a copy batch."""


def _deepcopy(value: Any) -> Any:
    # JSON-like values only: faster than copy.deepcopy and keeps datetimes shared
    # (they are immutable).
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- EDIT_FIELD_DATA


@attrs.frozen
class _EditState:
    field_key: str
    operations: Operations
    edit: Callable[[dict[str, Any]], bool | EditRefused] = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "edit", compile_edit(self.field_key, self.operations))


class EditFieldDataExecutor:
    """``EDIT_FIELD_DATA``: apply the array operations to one field of matching items.

    Order replace -> remove -> add -> dedupe (see :func:`~._fieldops.edit_value`).
    A value that cannot take the operations (add/remove/dedupe on a non-array) is an item
    failure ``WDE0075`` and the item is not written.
    """

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target and compile the filter.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179``.
        """
        opts = _typed(options, EditFieldDataOptions, parse_edit_field_data_options)
        _, env = resolve_target(opts.collection, opts.environment, storage)
        state = _EditState(opts.field_key, opts.operations)
        return Plan(opts.collection, env, _compile(opts.filter, opts.collection), state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Edit each item; changed ones are replaced, refused ones are item failures."""
        state: _EditState = plan.state
        key, edit = state.field_key, state.edit
        replaces: list[dict[str, Any]] = []
        append = replaces.append
        failures: list[ItemFailure] = []
        unchanged = 0
        for item in items:
            outcome = edit(item)
            if outcome is True:
                append(item)
            elif outcome is False:
                unchanged += 1
            else:
                assert isinstance(outcome, EditRefused)
                failures.append(
                    ItemFailure(item["_id"], CODE_ITEM_VALIDATION, f"{key}: {outcome.reason}")
                )
        return BatchChanges(replaces=replaces, failures=failures, unchanged=unchanged)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Nothing to do after an edit batch."""


# --------------------------------------------------------------------------- UPDATE_PUBLISH_STATUS


@attrs.frozen
class _PublishState:
    operation: PublishOperation
    date: _dt.datetime | None


class UpdatePublishStatusExecutor:
    """``UPDATE_PUBLISH_STATUS``: set, schedule or unschedule the publish status.

    ``SET_*`` writes ``_publishStatus``; ``SCHEDULE_*`` writes ``_publishDate`` /
    ``_draftDate`` and, once the batch committed, puts the dates on the scheduler's
    timeline; ``CANCEL_SCHEDULING`` removes both dates (and their timeline entries).
    Items already in the requested state succeed without a write.

    Args:
        scheduler: the timeline to tell about new and cancelled dates (optional: without
            one the dates are still stored, and a scheduler finds them on its rebuild).
    """

    def __init__(self, scheduler: PublishScheduler | None = None) -> None:
        self.scheduler = scheduler

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """Resolve the target; the collection must have the publish plugin.

        Raises:
            TaskFailure: ``WDE0025`` / ``WDE0179`` / ``WDE0119``.
        """
        opts = _typed(options, UpdatePublishStatusOptions, parse_update_publish_status_options)
        info, env = resolve_target(opts.collection, opts.environment, storage)
        if not info.publish_plugin:
            raise TaskFailure(
                CODE_NOT_SUPPORTED,
                f"Collection {opts.collection!r} does not have the publish plugin:"
                " UPDATE_PUBLISH_STATUS is not supported.",
                {"dataCollectionId": opts.collection},
            )
        if opts.operation.schedule_key is not None and opts.date is None:
            raise TaskFailure(
                CODE_ITEM_VALIDATION,
                f"{opts.operation.value} needs a date.",
                {"dataCollectionId": opts.collection},
            )
        state = _PublishState(opts.operation, opts.date)
        return Plan(opts.collection, env, _compile(opts.filter, opts.collection), state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Change each item as the operation says; unchanged items are not written."""
        state: _PublishState = plan.state
        op = state.operation
        replaces: list[dict[str, Any]] = []
        unchanged = 0
        if op is PublishOperation.SET_PUBLISHED_STATUS or op is PublishOperation.SET_DRAFT_STATUS:
            status = PUBLISHED if op is PublishOperation.SET_PUBLISHED_STATUS else DRAFT
            for item in items:
                if item.get(PUBLISH_STATUS) == status:
                    unchanged += 1
                else:
                    item[PUBLISH_STATUS] = status
                    replaces.append(item)
        elif op is PublishOperation.CANCEL_SCHEDULING:
            for item in items:
                if PUBLISH_DATE in item or DRAFT_DATE in item:
                    item.pop(PUBLISH_DATE, None)
                    item.pop(DRAFT_DATE, None)
                    replaces.append(item)
                else:
                    unchanged += 1
        else:
            field = _date_field(op)
            date = state.date
            for item in items:
                if field in item and identical(item[field], date):
                    unchanged += 1
                else:
                    item[field] = date
                    replaces.append(item)
        return BatchChanges(replaces=replaces, unchanged=unchanged)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Put newly stored dates on the timeline; take cancelled ones off."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        state: _PublishState = plan.state
        op = state.operation
        done = written.done
        if op is PublishOperation.CANCEL_SCHEDULING:
            scheduler.unschedule(plan.collection, plan.environment, done)
        elif op.schedule_key is not None and state.date is not None:
            date = state.date
            field = _date_field(op)
            scheduler.schedule(plan.collection, plan.environment, field, ((i, date) for i in done))


def _date_field(op: PublishOperation) -> str:
    return PUBLISH_DATE if op is PublishOperation.SCHEDULE_PUBLISHED_STATUS else DRAFT_DATE


# --------------------------------------------------------------------------- registration


def default_task_types(scheduler: PublishScheduler | None = None) -> list[TaskType]:
    """The four task types, the publish one wired to ``scheduler``."""
    return [
        TaskType(
            "DELETE_BY_QUERY",
            DeleteByQueryOptions.OPTIONS_KEY,
            parse_delete_by_query_options,
            DeleteByQueryExecutor(),
        ),
        TaskType(
            "COPY_FIELD_DATA",
            CopyFieldDataOptions.OPTIONS_KEY,
            parse_copy_field_data_options,
            CopyFieldDataExecutor(),
        ),
        TaskType(
            "EDIT_FIELD_DATA",
            EditFieldDataOptions.OPTIONS_KEY,
            parse_edit_field_data_options,
            EditFieldDataExecutor(),
        ),
        TaskType(
            "UPDATE_PUBLISH_STATUS",
            UpdatePublishStatusOptions.OPTIONS_KEY,
            parse_update_publish_status_options,
            UpdatePublishStatusExecutor(scheduler),
        ),
    ]


def install_default_task_types(engine: TaskEngine) -> PublishScheduler:
    """Register the four task types and the publish scheduler on ``engine``.

    Returns the scheduler (also reachable as a registered service of the engine).
    """
    scheduler = PublishScheduler()
    engine.register_service(scheduler)
    for task_type in default_task_types(scheduler):
        engine.register_task_type(task_type)
    return scheduler
