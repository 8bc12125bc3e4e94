"""Typed options for the four task types, and their create-time validation.

Each task type has one options class (``DeleteByQueryOptions``, ``CopyFieldDataOptions``,
``EditFieldDataOptions``, ``UpdatePublishStatusOptions``) that:

* exposes ``collection`` (the ``dataCollectionId``), as the engine's ``TaskOptions``
  protocol asks;
* serialises with ``to_json()`` to the camelCase options object of the reference API;
* is built from JSON by a ``parse_*`` function ``(json_value, path) -> (options | None,
  violations)`` that reports *every* broken rule at once, each under its JSON path
  (``task.editFieldDataOptions.operations.replaceItems.3.to: required``).

``parse(to_json(options))`` gives back equal options, so typed options can be validated
by the same code as JSON ones.

Rules shared by every type: ``dataCollectionId`` is a required string of 1..255
characters; ``environment`` is ``LIVE`` (default), ``SANDBOX`` or ``SANDBOX_PREFERRED``;
a ``filter`` must compile in the wix dialect; unknown keys are violations; JSON ``null``
for an optional key means "absent".
"""

from __future__ import annotations

import copy
import datetime as _dt
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from taskengine._jsonio import MAX_DEPTH
from taskengine._values import parse_iso_datetime
from taskengine.errors import InvalidFilter, Violation
from taskengine.filters import compile_filter
from taskengine.storage.codec import check_storable

__all__ = [
    "MAX_COLLECTION_ID_LENGTH",
    "MAX_OPERATION_ENTRIES",
    "SYSTEM_FIELDS",
    "TOO_DEEP",
    "CopyFieldDataOptions",
    "DeleteByQueryOptions",
    "EditFieldDataOptions",
    "Operations",
    "PublishOperation",
    "ReplaceItem",
    "TaskEnvironment",
    "UpdatePublishStatusOptions",
    "check_json",
    "check_value",
    "format_date",
    "parse_copy_field_data_options",
    "parse_date",
    "parse_delete_by_query_options",
    "parse_edit_field_data_options",
    "parse_update_publish_status_options",
]

MAX_COLLECTION_ID_LENGTH = 255
"""Longest accepted ``dataCollectionId``."""

MAX_OPERATION_ENTRIES = 64
"""Most entries in each of ``addItems``, ``removeItems`` and ``replaceItems`` (ref)."""

SYSTEM_FIELDS: frozenset[str] = frozenset(
    {
        "_id",
        "_createdDate",
        "_updatedDate",
        "_owner",
        "_publishStatus",
        "_publishDate",
        "_draftDate",
    }
)
"""Fields the CMS maintains itself; a task may read them but never write them."""


class TaskEnvironment(str, enum.Enum):
    """The environment a task asks for; ``SANDBOX_PREFERRED`` is resolved at task start."""

    LIVE = "LIVE"
    SANDBOX = "SANDBOX"
    SANDBOX_PREFERRED = "SANDBOX_PREFERRED"


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


def _json_filter(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(spec) if spec is not None else None


@attrs.frozen
class DeleteByQueryOptions:
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
    """The task ``type`` these options belong to."""
    OPTIONS_KEY: ClassVar[str] = "deleteByQueryOptions"
    """The JSON key of these options in a task object."""

    data_collection_id: str
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None
    app_options: Mapping[str, Any] | None = None
    include_draft_items: bool = False

    @property
    def collection(self) -> str:
        """The collection the task works on (``dataCollectionId``)."""
        return self.data_collection_id

    def to_json(self) -> dict[str, Any]:
        """The reference ``deleteByQueryOptions`` object."""
        out: dict[str, Any] = {
            "dataCollectionId": self.data_collection_id,
            "environment": self.environment.value,
        }
        if self.filter is not None:
            out["filter"] = _json_filter(self.filter)
        if self.app_options is not None:
            out["appOptions"] = dict(self.app_options)
        out["publishPluginOptions"] = {"includeDraftItems": self.include_draft_items}
        return out


@attrs.frozen
class CopyFieldDataOptions:
    """Options of a ``COPY_FIELD_DATA`` task: every item's target := copy of its source."""

    TASK_TYPE: ClassVar[str] = "COPY_FIELD_DATA"
    """The task ``type`` these options belong to."""
    OPTIONS_KEY: ClassVar[str] = "copyFieldDataOptions"
    """The JSON key of these options in a task object."""

    data_collection_id: str
    source_field_key: str
    target_field_key: str
    environment: TaskEnvironment = TaskEnvironment.LIVE

    @property
    def collection(self) -> str:
        """The collection the task works on (``dataCollectionId``)."""
        return self.data_collection_id

    def to_json(self) -> dict[str, Any]:
        """The reference ``copyFieldDataOptions`` object."""
        return {
            "dataCollectionId": self.data_collection_id,
            "environment": self.environment.value,
            "sourceFieldKey": self.source_field_key,
            "targetFieldKey": self.target_field_key,
        }


@attrs.frozen
class ReplaceItem:
    """One ``replaceItems`` entry: values equal to ``from_`` become ``to``."""

    from_: Any
    to: Any

    def to_json(self) -> dict[str, Any]:
        """The reference ``{"from", "to"}`` object."""
        return {"from": self.from_, "to": self.to}


def _tuple(value: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _replace_tuple(value: Sequence[ReplaceItem]) -> tuple[ReplaceItem, ...]:
    return tuple(value)


@attrs.frozen
class Operations:
    """The array operations of an ``EDIT_FIELD_DATA`` task, applied replace -> remove ->
    add -> dedupe."""

    add_items: tuple[Any, ...] = attrs.field(default=(), converter=_tuple)
    remove_items: tuple[Any, ...] = attrs.field(default=(), converter=_tuple)
    replace_items: tuple[ReplaceItem, ...] = attrs.field(default=(), converter=_replace_tuple)
    remove_duplicates: bool = False
    # Fast paths when every value involved is a string (the common case: tags): string
    # equality is plain ``==`` there, so sets and dicts replace the pairwise scans.
    str_removals: frozenset[str] | None = attrs.field(
        init=False, eq=False, repr=False, default=None
    )
    str_replacements: Mapping[str, Any] | None = attrs.field(
        init=False, eq=False, repr=False, default=None
    )

    def __attrs_post_init__(self) -> None:
        """Precompute the all-string fast paths."""
        if self.remove_items and all(type(v) is str for v in self.remove_items):
            object.__setattr__(self, "str_removals", frozenset(self.remove_items))
        if self.replace_items and all(type(r.from_) is str for r in self.replace_items):
            table: dict[str, Any] = {}
            for rule in self.replace_items:
                table.setdefault(rule.from_, rule.to)  # the first matching rule wins
            object.__setattr__(self, "str_replacements", table)

    @property
    def needs_array(self) -> bool:
        """Whether any operation other than ``replaceItems`` is requested (those need an array)."""
        return bool(self.add_items or self.remove_items or self.remove_duplicates)

    def to_json(self) -> dict[str, Any]:
        """The reference ``operations`` object."""
        out: dict[str, Any] = {}
        if self.add_items:
            out["addItems"] = list(self.add_items)
        if self.remove_items:
            out["removeItems"] = list(self.remove_items)
        if self.replace_items:
            out["replaceItems"] = [r.to_json() for r in self.replace_items]
        out["removeDuplicates"] = self.remove_duplicates
        return out


@attrs.frozen
class EditFieldDataOptions:
    """Options of an ``EDIT_FIELD_DATA`` task: edit the array in ``field_key`` of matching
    items."""

    TASK_TYPE: ClassVar[str] = "EDIT_FIELD_DATA"
    """The task ``type`` these options belong to."""
    OPTIONS_KEY: ClassVar[str] = "editFieldDataOptions"
    """The JSON key of these options in a task object."""

    data_collection_id: str
    field_key: str
    operations: Operations
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None

    @property
    def collection(self) -> str:
        """The collection the task works on (``dataCollectionId``)."""
        return self.data_collection_id

    def to_json(self) -> dict[str, Any]:
        """The reference ``editFieldDataOptions`` object."""
        out: dict[str, Any] = {
            "dataCollectionId": self.data_collection_id,
            "environment": self.environment.value,
        }
        if self.filter is not None:
            out["filter"] = _json_filter(self.filter)
        out["fieldKey"] = self.field_key
        out["operations"] = self.operations.to_json()
        return out


def _aware(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value


@attrs.frozen
class UpdatePublishStatusOptions:
    """Options of an ``UPDATE_PUBLISH_STATUS`` task.

    Attributes:
        date: when a ``SCHEDULE_*`` operation takes effect (timezone-aware); ``None`` for
            the other operations.
    """

    TASK_TYPE: ClassVar[str] = "UPDATE_PUBLISH_STATUS"
    """The task ``type`` these options belong to."""
    OPTIONS_KEY: ClassVar[str] = "updatePublishStatusOptions"
    """The JSON key of these options in a task object."""

    data_collection_id: str
    operation: PublishOperation
    environment: TaskEnvironment = TaskEnvironment.LIVE
    filter: Mapping[str, Any] | None = None
    date: _dt.datetime | None = attrs.field(default=None, converter=_aware)

    @property
    def collection(self) -> str:
        """The collection the task works on (``dataCollectionId``)."""
        return self.data_collection_id

    def to_json(self) -> dict[str, Any]:
        """The reference ``updatePublishStatusOptions`` object."""
        out: dict[str, Any] = {
            "dataCollectionId": self.data_collection_id,
            "environment": self.environment.value,
        }
        if self.filter is not None:
            out["filter"] = _json_filter(self.filter)
        out["operation"] = self.operation.value
        key = self.operation.schedule_key
        if key is not None and self.date is not None:
            out[key] = {"date": format_date(self.date)}
        return out


def format_date(value: _dt.datetime) -> str:
    """An ISO-8601 UTC string with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    text = value.astimezone(_dt.timezone.utc).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def parse_date(value: Any) -> _dt.datetime | None:
    """An aware datetime from an ISO-8601 string, ``{"$date": ISO}`` or a datetime.

    A value without an offset is taken as UTC. Returns ``None`` when ``value`` is not a
    date (never raises).
    """
    if isinstance(value, Mapping) and len(value) == 1 and "$date" in value:
        value = value["$date"]
    if isinstance(value, _dt.datetime):
        parsed: _dt.datetime | None = value
    elif isinstance(value, str):
        parsed = parse_iso_datetime(value.strip())
    else:
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


def check_value(value: Any, path: str, violations: list[Violation]) -> None:
    """Record a violation at ``path`` unless ``value`` is storable as an item's value.

    The storage's own rule (both adapters apply it to every item they store), so a value
    accepted here can always be written: ``str`` (valid Unicode, no lone surrogates),
    ``int`` in the signed 64-bit range, finite ``float``, ``bool``, ``None``,
    ``datetime``, ``{"$date": "<ISO-8601>"}``, lists of those and objects with string
    keys (see docs/task-types.md).
    """
    refused = check_storable(value)
    if refused is not None:
        inner, reason = refused
        violations.append(Violation(f"{path}.{inner}" if inner else path, reason))


def _in_utc_range(value: _dt.datetime) -> bool:
    """Whether ``value`` has a UTC form (``9999-12-31T23:00-05:00`` has none)."""
    try:
        value.astimezone(_dt.timezone.utc)
    except (OverflowError, ValueError):
        return False
    return True


TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
"""The :func:`check_json` violation for a value nested deeper than the wire allows."""


def check_json(
    value: Any, path: str, violations: list[Violation], depth: int = MAX_DEPTH
) -> None:
    """Record a violation under ``path`` for each part of ``value`` JSON text cannot carry.

    A task is stored and served as JSON text, so every string and object key in its spec
    must be valid Unicode (no lone surrogates), every number finite, and every object key
    a string; ``datetime`` is allowed (its JSON form is ``{"$date": ISO}``). Containers may
    nest ``depth`` levels (the wire's limit, so no later walk can exhaust the stack); past
    that the violation is :data:`TOO_DEEP`. Checking this once at create time makes every
    task store (memory or SQLite) accept the same specs.
    """
    if isinstance(value, Mapping | list | tuple):
        if depth <= 0:
            violations.append(Violation(path, TOO_DEEP))
            return
        depth -= 1
    if isinstance(value, str):
        if not (value.isascii() or _encodable(value)):
            violations.append(Violation(path, "string is not valid Unicode (lone surrogate)"))
    elif isinstance(value, bool | int | _dt.datetime) or value is None:
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            violations.append(Violation(path, f"{value!r} is not a finite number"))
    elif isinstance(value, Mapping):
        for key, element in value.items():
            if not isinstance(key, str):
                violations.append(Violation(path, f"object key {key!r} is not a string"))
                continue
            where = f"{path}.{key}" if path else key
            if not (key.isascii() or _encodable(key)):
                violations.append(Violation(where, "key is not valid Unicode (lone surrogate)"))
                continue
            check_json(element, where, violations, depth)
    elif isinstance(value, list | tuple):
        for index, element in enumerate(value):
            check_json(element, f"{path}.{index}", violations, depth)
    else:
        violations.append(Violation(path, f"not a JSON value ({type(value).__name__})"))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Reads one JSON object, recording every violation under its path."""

    def __init__(self, value: Any, path: str, violations: list[Violation]) -> None:
        self.path = path
        self.violations = violations
        self.ok = isinstance(value, Mapping)
        self.obj: Mapping[str, Any] = value if self.ok else {}
        if not self.ok:
            self.fail(path, "must be an object" if value is not None else "required")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, path: str, description: str) -> None:
        self.violations.append(Violation(path, description))

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for key in self.obj:
            if key not in allowed:
                self.fail(self.at(str(key)), "unknown field")

    def get(self, key: str) -> Any:
        return self.obj.get(key)

    def required_string(self, key: str, *, max_length: int | None = None) -> str | None:
        value = self.obj.get(key)
        if value is None:
            self.fail(self.at(key), "required")
            return None
        if not isinstance(value, str):
            self.fail(self.at(key), "must be a string")
            return None
        if not value or (max_length is not None and len(value) > max_length):
            limit = f"1..{max_length}" if max_length is not None else "at least 1"
            self.fail(self.at(key), f"must be {limit} characters long")
            return None
        return value

    def boolean(self, key: str) -> bool:
        value = self.obj.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(self.at(key), "must be a boolean")
            return False
        return value

    def enum(self, key: str, kind: type[enum.Enum], default: Any) -> Any:
        value = self.obj.get(key)
        if value is None:
            if default is None:
                self.fail(self.at(key), "required")
            return default
        names = [m.value for m in kind]
        if isinstance(value, kind):
            return value
        if not isinstance(value, str) or value not in names:
            self.fail(self.at(key), f"must be one of {', '.join(names)}")
            return None
        return kind(value)

    def collection(self) -> str | None:
        return self.required_string("dataCollectionId", max_length=MAX_COLLECTION_ID_LENGTH)

    def environment(self) -> TaskEnvironment:
        env = self.enum("environment", TaskEnvironment, TaskEnvironment.LIVE)
        return env if env is not None else TaskEnvironment.LIVE

    def filter(self) -> Mapping[str, Any] | None:
        value = self.obj.get("filter")
        if value is None:
            return None
        where = self.at("filter")
        if not isinstance(value, Mapping):
            self.fail(where, "must be an object")
            return None
        try:
            compile_filter(value, dialect="wix")
        except InvalidFilter as exc:
            self.fail(f"{where}.{exc.path}" if exc.path else where, exc.reason)
            return None
        return copy.deepcopy(dict(value))

    def opaque_object(self, key: str) -> Mapping[str, Any] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(self.at(key), "must be an object")
            return None
        return copy.deepcopy(dict(value))

    def field_key(self, key: str, *, written: bool) -> str | None:
        value = self.required_string(key)
        if value is not None and written and value in SYSTEM_FIELDS:
            self.fail(self.at(key), f"must not be the system field {value!r}")
            return None
        return value


_COMMON = frozenset({"dataCollectionId", "environment"})


def parse_delete_by_query_options(
    value: Any, path: str
) -> tuple[DeleteByQueryOptions | None, list[Violation]]:
    """Validate and build ``deleteByQueryOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = _Reader(value, path, violations)
    if not r.ok:
        return None, violations
    r.reject_unknown(_COMMON | {"filter", "appOptions", "publishPluginOptions"})
    collection = r.collection()
    environment = r.environment()
    spec = r.filter()
    app_options = r.opaque_object("appOptions")
    include_drafts = False
    plugin = r.get("publishPluginOptions")
    if plugin is not None:
        p = _Reader(plugin, r.at("publishPluginOptions"), violations)
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


def parse_copy_field_data_options(
    value: Any, path: str
) -> tuple[CopyFieldDataOptions | None, list[Violation]]:
    """Validate and build ``copyFieldDataOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = _Reader(value, path, violations)
    if not r.ok:
        return None, violations
    r.reject_unknown(_COMMON | {"sourceFieldKey", "targetFieldKey"})
    collection = r.collection()
    environment = r.environment()
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


def _value_list(r: _Reader, key: str) -> list[Any]:
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
    r = _Reader(value, path, violations)
    if not r.ok:
        return None
    before = len(violations)
    r.reject_unknown(frozenset({"addItems", "removeItems", "replaceItems", "removeDuplicates"}))
    add = _value_list(r, "addItems")
    remove = _value_list(r, "removeItems")
    replace: list[ReplaceItem] = []
    for i, entry in enumerate(_value_list(r, "replaceItems")):
        e = _Reader(entry, f"{r.at('replaceItems')}.{i}", violations)
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
    r = _Reader(value, path, violations)
    if not r.ok:
        return None, violations
    r.reject_unknown(_COMMON | {"filter", "fieldKey", "operations"})
    collection = r.collection()
    environment = r.environment()
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


def parse_update_publish_status_options(
    value: Any, path: str
) -> tuple[UpdatePublishStatusOptions | None, list[Violation]]:
    """Validate and build ``updatePublishStatusOptions`` found at JSON ``path``."""
    violations: list[Violation] = []
    r = _Reader(value, path, violations)
    if not r.ok:
        return None, violations
    schedule_keys = frozenset(_SCHEDULE_KEYS.values())
    r.reject_unknown(_COMMON | {"filter", "operation"} | schedule_keys)
    collection = r.collection()
    environment = r.environment()
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
        s = _Reader(r.get(key), r.at(key), violations)
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

