"""``UPDATE_PUBLISH_STATUS``: set, schedule or unschedule the publish status (docs/task-types.md).

``SET_*`` writes ``_publishStatus``; ``SCHEDULE_*`` writes ``_publishDate`` /
``_draftDate`` (a store with a schedule index indexes them with the write; otherwise,
once the batch committed, they go on the
:class:`~taskengine.tasktypes._publish_schedule.PublishScheduler`'s timeline);
``CANCEL_SCHEDULING`` removes both dates (and their timeline entries). Items already in
the requested state succeed without a write. The collection must have the publish plugin
(``WDE0119`` otherwise).
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from taskengine import codes
from taskengine.errors import TaskFailure
from taskengine.tasktype import BatchChanges, Plan, TaskType
from taskengine.tasktypes._changes import RemoveFields, SetField, batch_changes
from taskengine.tasktypes._common import (
    CollectionOptions,
    OptionsReader,
    TaskEnvironment,
    compile_task_filter,
    format_date,
    parse_date,
    resolve_target,
    target_json,
    typed_options,
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
    from taskengine.errors import Violation
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.tasktype import TaskOptions

__all__ = [
    "PublishOperation",
    "UpdatePublishStatusExecutor",
    "UpdatePublishStatusOptions",
    "parse_update_publish_status_options",
    "update_publish_status_type",
]


class PublishOperation(str, enum.Enum):
    """What an ``UPDATE_PUBLISH_STATUS`` task does to each matching item."""

    SET_PUBLISHED_STATUS = "SET_PUBLISHED_STATUS"
    SET_DRAFT_STATUS = "SET_DRAFT_STATUS"
    SCHEDULE_PUBLISHED_STATUS = "SCHEDULE_PUBLISHED_STATUS"
    SCHEDULE_DRAFT_STATUS = "SCHEDULE_DRAFT_STATUS"
    CANCEL_SCHEDULING = "CANCEL_SCHEDULING"

    @property
    def schedule_key(self) -> str | None:
        """The options key that carries this operation's date, or ``None`` if it takes none."""
        return _SCHEDULE_KEYS.get(self)


_SCHEDULE_KEYS: dict[PublishOperation, str] = {
    PublishOperation.SCHEDULE_PUBLISHED_STATUS: "schedulePublishedStatusOptions",
    PublishOperation.SCHEDULE_DRAFT_STATUS: "scheduleDraftStatusOptions",
}


def _aware(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value


@attrs.frozen
class UpdatePublishStatusOptions(CollectionOptions):
    """Options of an ``UPDATE_PUBLISH_STATUS`` task.

    Attributes:
        date: when a ``SCHEDULE_*`` operation takes effect (timezone-aware); ``None`` for
            the other operations.
    """

    TASK_TYPE: ClassVar[str] = "UPDATE_PUBLISH_STATUS"
    OPTIONS_KEY: ClassVar[str] = "updatePublishStatusOptions"

    data_collection_id: str
    operation: PublishOperation
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None
    date: _dt.datetime | None = attrs.field(default=None, converter=_aware)

    def to_json(self) -> dict[str, Any]:
        """The reference ``updatePublishStatusOptions`` object."""
        out = target_json(self.data_collection_id, self.environment, self.filter)
        out["operation"] = self.operation.value
        key = self.operation.schedule_key
        if key is not None and self.date is not None:
            out[key] = {"date": format_date(self.date)}
        return out


def _in_utc_range(value: _dt.datetime) -> bool:
    """Whether ``value`` has a UTC form (``9999-12-31T23:00-05:00`` has none)."""
    try:
        value.astimezone(_dt.timezone.utc)
    except (OverflowError, ValueError):
        return False
    return True


def parse_update_publish_status_options(
    value: Any, path: str
) -> tuple[UpdatePublishStatusOptions | None, list[Violation]]:
    """Validate and build ``updatePublishStatusOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = OptionsReader(value, path, violations)
    if not r.ok:
        return None, violations
    schedule_keys = frozenset(_SCHEDULE_KEYS.values())
    collection, environment = r.common({"filter", "operation"} | schedule_keys)
    spec = r.filter()
    operation: PublishOperation | None = r.enum("operation", PublishOperation, None)
    wanted = operation.schedule_key if operation is not None else None
    date: _dt.datetime | None = None
    for key in sorted(schedule_keys):
        if r.get(key) is None:
            continue
        if operation is not None and key != wanted:
            r.fail(r.at(key), f"not allowed with operation {operation.value}")
            continue
        s = OptionsReader(r.get(key), r.at(key), violations)
        if not s.ok:
            continue
        s.reject_unknown(frozenset({"date"}))
        raw = s.get("date")
        if raw is None:
            s.fail(s.at("date"), "required")
            continue
        date = parse_date(raw)
        if date is None:
            s.fail(s.at("date"), "must be an ISO-8601 date-time")
        elif not _in_utc_range(date):
            s.fail(s.at("date"), "must fall within years 1..9999 in UTC")
            date = None
    if wanted is not None and r.get(wanted) is None:
        r.fail(f"{r.at(wanted)}.date", "required")
    if violations or collection is None or operation is None:
        return None, violations
    return (
        UpdatePublishStatusOptions(
            data_collection_id=collection,
            environment=environment,
            filter=spec,
            operation=operation,
            date=date,
        ),
        [],
    )


@attrs.frozen
class _PublishState:
    operation: PublishOperation
    date: _dt.datetime | None
    change: SetField | RemoveFields = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        op = self.operation
        change: SetField | RemoveFields
        if op is PublishOperation.SET_PUBLISHED_STATUS:
            change = SetField(PUBLISH_STATUS, PUBLISHED)
        elif op is PublishOperation.SET_DRAFT_STATUS:
            change = SetField(PUBLISH_STATUS, DRAFT)
        elif op is PublishOperation.CANCEL_SCHEDULING:
            change = RemoveFields((PUBLISH_DATE, DRAFT_DATE), needs_ids=True)
        else:
            assert self.date is not None
            change = SetField(_date_field(op), self.date, needs_ids=True)
        object.__setattr__(self, "change", change)


class UpdatePublishStatusExecutor:
    """Sets, schedules or unschedules the publish status of every matching item.

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
        opts = typed_options(options, UpdatePublishStatusOptions)
        info, env = resolve_target(opts.collection, opts.environment, storage)
        if not info.publish_plugin:
            raise TaskFailure(
                codes.NOT_SUPPORTED,
                f"Collection {opts.collection!r} does not have the publish plugin:"
                " UPDATE_PUBLISH_STATUS is not supported.",
                {"dataCollectionId": opts.collection},
            )
        if opts.operation.schedule_key is not None and opts.date is None:
            raise TaskFailure(
                codes.ITEM_VALIDATION,
                f"{opts.operation.value} needs a date.",
                {"dataCollectionId": opts.collection},
            )
        state = _PublishState(opts.operation, opts.date)
        compiled = compile_task_filter(opts.filter, opts.collection)
        return Plan(opts.collection, env, compiled, state)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """Change each item as the operation says; unchanged items are not written."""
        state: _PublishState = plan.state
        return batch_changes(state.change, items, codes.ITEM_VALIDATION)

    def item_change(self, plan: Plan) -> SetField | RemoveFields:
        """The operation's change, for a storage that changes batches itself."""
        state: _PublishState = plan.state
        return state.change

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Put newly stored dates on the timeline; take cancelled ones off (nothing to do
        when the store keeps the schedule itself)."""
        scheduler = self.scheduler
        if scheduler is None or scheduler.uses_store_index:
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


def update_publish_status_type(scheduler: PublishScheduler | None = None) -> TaskType:
    """The ``UPDATE_PUBLISH_STATUS`` task type, telling ``scheduler`` about its dates.

    Without a scheduler the dates are still stored, and a scheduler finds them when it
    rebuilds its timeline on start.
    """
    return TaskType(
        UpdatePublishStatusOptions.TASK_TYPE,
        UpdatePublishStatusOptions.OPTIONS_KEY,
        parse_update_publish_status_options,
        UpdatePublishStatusExecutor(scheduler),
        running_message="Updating publish status",
    )
