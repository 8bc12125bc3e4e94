"""What several task types share: the environment, the option-reading rules, the target.

Every built-in type's options follow the same rules (docs/task-types.md): ``dataCollectionId``
is a required string of 1..255 characters; ``environment`` is ``LIVE`` (default),
``SANDBOX`` or ``SANDBOX_PREFERRED``; a ``filter`` must compile in the wix dialect;
unknown keys are violations; JSON ``null`` for an optional key means "absent". A parser
reports *every* broken rule at once, each under its JSON path
(``task.editFieldDataOptions.operations.replaceItems.3.to: required``), through one
:class:`OptionsReader`.

When a task starts, its executor resolves the target with :func:`resolve_target`
(``WDE0025`` unknown collection, ``WDE0179`` sandbox not enabled) and compiles its filter
with :func:`compile_task_filter`.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from taskengine import codes
from taskengine._values import check_storable, parse_date
from taskengine._values import format_utc as format_date
from taskengine.errors import CollectionNotFound, InvalidFilter, TaskFailure, Violation
from taskengine.filters import compile_filter
from taskengine.storage.base import CollectionInfo, Environment

if TYPE_CHECKING:
    from taskengine.filters import Filter
    from taskengine.storage.base import Storage
    from taskengine.tasktype import TaskOptions

__all__ = [
    "COMMON_KEYS",
    "MAX_COLLECTION_ID_LENGTH",
    "SYSTEM_FIELDS",
    "CollectionOptions",
    "OptionsReader",
    "TaskEnvironment",
    "check_value",
    "compile_task_filter",
    "format_date",
    "parse_date",
    "resolve_target",
    "target_json",
    "typed_options",
]

MAX_COLLECTION_ID_LENGTH: Final = 255
"""Longest accepted ``dataCollectionId``."""

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

COMMON_KEYS: Final = frozenset({"dataCollectionId", "environment"})
"""The options keys every built-in type accepts."""

_O = TypeVar("_O")


class CollectionOptions:
    """What every built-in options class has: its type's name and key, its collection.

    Subclasses are attrs classes with a ``data_collection_id`` field; this base adds no
    field, only the ``collection`` the engine's ``TaskOptions`` protocol asks for.
    """

    __slots__ = ()

    TASK_TYPE: ClassVar[str]
    """The task ``type`` these options belong to."""
    OPTIONS_KEY: ClassVar[str]
    """The JSON key of these options in a task object."""

    data_collection_id: str

    @property
    def collection(self) -> str:
        """The collection the task works on (``dataCollectionId``)."""
        return self.data_collection_id


class TaskEnvironment(str, enum.Enum):
    """The environment a task asks for; ``SANDBOX_PREFERRED`` is resolved at task start."""

    LIVE = "LIVE"
    SANDBOX = "SANDBOX"
    SANDBOX_PREFERRED = "SANDBOX_PREFERRED"


def target_json(
    collection: str, environment: TaskEnvironment, spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The keys an options object starts with: ``dataCollectionId``, ``environment`` and,
    when there is one, ``filter``."""
    out: dict[str, Any] = {"dataCollectionId": collection, "environment": environment.value}
    if spec is not None:
        out["filter"] = dict(spec)
    return out


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


class OptionsReader:
    """Reads one options object, recording every violation under its JSON path.

    Args:
        value: the JSON value found at ``path`` (a violation unless it is an object).
        path: where ``value`` sits in the request (``"task.copyFieldDataOptions"``).
        violations: the list every broken rule is appended to.

    Attributes:
        ok: ``value`` is an object (else the reader holds ``{}`` and recorded why).
        obj: the object being read.
    """

    def __init__(self, value: Any, path: str, violations: list[Violation]) -> None:
        self.path = path
        self.violations = violations
        self.ok = isinstance(value, Mapping)
        self.obj: Mapping[str, Any] = value if self.ok else {}
        if not self.ok:
            self.fail(path, "must be an object" if value is not None else "required")

    def at(self, key: str) -> str:
        """The JSON path of ``key`` inside this object."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, path: str, description: str) -> None:
        """Record a violation at ``path``."""
        self.violations.append(Violation(path, description))

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        """Record ``unknown field`` for every key not in ``allowed``."""
        for key in self.obj:
            if key not in allowed:
                self.fail(self.at(str(key)), "unknown field")

    def get(self, key: str) -> Any:
        """The raw value of ``key`` (``None`` when absent or JSON ``null``)."""
        return self.obj.get(key)

    def required_string(self, key: str, *, max_length: int | None = None) -> str | None:
        """A non-empty string of at most ``max_length`` characters, or ``None`` (recorded)."""
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
        """An optional boolean, ``False`` when absent."""
        value = self.obj.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(self.at(key), "must be a boolean")
            return False
        return value

    def enum(self, key: str, kind: type[enum.Enum], default: Any) -> Any:
        """A member of ``kind`` by value; absent gives ``default`` (required if ``None``)."""
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

    def common(self, keys: Iterable[str]) -> tuple[str | None, TaskEnvironment]:
        """Reject keys other than :data:`COMMON_KEYS` and ``keys``; read the common ones.

        Returns:
            the ``dataCollectionId`` (``None`` when it is broken) and the environment.
        """
        self.reject_unknown(COMMON_KEYS.union(keys))
        return self.collection(), self.environment()

    def collection(self) -> str | None:
        """The required ``dataCollectionId``."""
        return self.required_string("dataCollectionId", max_length=MAX_COLLECTION_ID_LENGTH)

    def environment(self) -> TaskEnvironment:
        """The optional ``environment`` (``LIVE`` when absent or invalid)."""
        env = self.enum("environment", TaskEnvironment, TaskEnvironment.LIVE)
        return env if env is not None else TaskEnvironment.LIVE

    def filter(self) -> Mapping[str, Any] | None:
        """A copy of the optional ``filter``, which must compile in the wix dialect."""
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
        """A copy of an optional object handed through unchanged."""
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(self.at(key), "must be an object")
            return None
        return copy.deepcopy(dict(value))

    def field_key(self, key: str, *, written: bool) -> str | None:
        """A required field name; a field the task writes must not be a system field."""
        value = self.required_string(key)
        if value is not None and written and value in SYSTEM_FIELDS:
            self.fail(self.at(key), f"must not be the system field {value!r}")
            return None
        return value


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
            codes.COLLECTION_NOT_FOUND,
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
            codes.SANDBOX_NOT_ENABLED,
            f"Collection {collection!r} has no sandbox environment enabled.",
            {"dataCollectionId": collection, "environment": "SANDBOX"},
        )
    return info, Environment.SANDBOX


def compile_task_filter(spec: Mapping[str, Any] | None, collection: str) -> Filter | None:
    """The compiled wix filter of a task (``None`` for no filter or ``{}``).

    Raises:
        TaskFailure: ``WDE0075`` when the spec no longer compiles (it was validated at
            create, so only a hand-built task store gets here).
    """
    if not spec:
        return None
    try:
        return compile_filter(spec, "wix")
    except InvalidFilter as exc:
        raise TaskFailure(
            codes.ITEM_VALIDATION, f"Invalid filter: {exc}", {"dataCollectionId": collection}
        ) from None


def typed_options(options: TaskOptions, kind: type[_O]) -> _O:
    """``options`` as ``kind``, the options an executor's own type parses.

    The engine parses a task's options once, with the type's parser, before any
    executor sees them (stored options that no longer parse fail the task there).

    Raises:
        TypeError: ``options`` are not ``kind`` (an executor called with another
            type's options).
    """
    if not isinstance(options, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(options).__name__}")
    return options
