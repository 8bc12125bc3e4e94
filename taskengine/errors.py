"""Every error taskengine raises on purpose.

One root, :class:`TaskEngineError`; each subclass also inherits the builtin whose
meaning it shares, so ``except ValueError`` and ``except LookupError`` keep working::

    TaskEngineError
    ├── InvalidFilter(ValueError)        a filter spec that cannot be compiled
    ├── InvalidRequest(ValueError)       a request with one or more violations by path
    │   └── InvalidTask                  a task spec with one or more violations
    ├── InvalidItem(ValueError)          an item that cannot be stored
    ├── InvalidEnvironment(ValueError)   an unknown environment name
    ├── InvalidTransition(RuntimeError)  an illegal task status change
    ├── LeaseLost(RuntimeError)          a task lease expired, was released or taken over
    ├── TaskNotFound(LookupError)        an unknown or expired task id
    ├── TaskFailure                      a whole-task failure raised by an executor
    └── StorageError                     the storage failed (driver errors end here)
        ├── CollectionNotFound(LookupError)
        ├── CollectionExists(ValueError)
        ├── SandboxNotEnabled(LookupError)
        └── DuplicateItem(ValueError)

Errors carry structured fields (path, code, task id, ...); the message is built
from them, so logs and API responses agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "DuplicateItem",
    "InvalidEnvironment",
    "InvalidFilter",
    "InvalidItem",
    "InvalidRequest",
    "InvalidTask",
    "InvalidTransition",
    "LeaseLost",
    "SandboxNotEnabled",
    "StorageError",
    "TaskEngineError",
    "TaskFailure",
    "TaskNotFound",
    "Violation",
    "printable",
]


class TaskEngineError(Exception):
    """The root of every error raised on purpose by taskengine."""


class InvalidFilter(TaskEngineError, ValueError):
    """A filter spec that cannot be compiled.

    Attributes:
        path: where in the spec the problem is, dotted (``"$and.1.age.$gt"``);
            ``""`` for the spec as a whole.
        reason: the rule that was broken, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = path if path else "<filter>"
        super().__init__(f"invalid filter at {where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


@attrs.frozen
class Violation:
    """One broken rule in a task spec: the JSON path and what is wrong there."""

    field: str
    description: str

    def to_json(self) -> dict[str, str]:
        """The reference ``fieldViolations`` entry: ``{"field", "description"}``."""
        return {"field": self.field, "description": self.description}


class InvalidRequest(TaskEngineError, ValueError):
    """A request (paging, arguments) with one or more violations; nothing changed.

    Attributes:
        violations: every broken rule, by JSON path (``paging.limit: must be 1..100``).
    """

    kind = "request"

    def __init__(self, violations: Iterable[Violation]) -> None:
        # A path may hold a key with a lone surrogate (the very thing being refused); the
        # escaped form keeps the error printable, JSON-encodable and storable.
        self.violations: tuple[Violation, ...] = tuple(
            Violation(printable(v.field), printable(v.description)) for v in violations
        )
        if not self.violations:
            raise ValueError("InvalidTask needs at least one violation")
        listed = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid {self.kind} ({len(self.violations)} violation(s)): {listed}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.violations,))


class InvalidTask(InvalidRequest):
    """A task spec with one or more violations; nothing was stored.

    Attributes:
        violations: every broken rule, by JSON path
            (``task.editFieldDataOptions.fieldKey: required``).
    """

    kind = "task"


class InvalidItem(TaskEngineError, ValueError):
    """An item that cannot be stored (no string ``_id``, a non-JSON value, ...).

    Attributes:
        item_id: the item's ``_id`` when it has a usable one, else ``None``.
        path: dotted path to the offending value inside the item (``""`` = the item).
        reason: the rule that was broken.
    """

    def __init__(self, reason: str, *, item_id: str | None = None, path: str = "") -> None:
        self.item_id = item_id
        self.path = path
        self.reason = reason
        parts = ["invalid item"]
        if item_id is not None:
            parts.append(f"{item_id!r}")
        if path:
            parts.append(f"at {printable(path)}")
        super().__init__(f"{' '.join(parts)}: {printable(reason)}")

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {"item_id": self.item_id, "path": self.path}
        return (_rebuild, (type(self), (self.reason,), kwargs))


class InvalidEnvironment(TaskEngineError, ValueError):
    """An environment name that is not one of the allowed values."""

    def __init__(self, value: object, allowed: Sequence[str]) -> None:
        self.value = value
        self.allowed = tuple(allowed)
        super().__init__(f"unknown environment {value!r}: expected one of {', '.join(allowed)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value, self.allowed))


class InvalidTransition(TaskEngineError, RuntimeError):
    """A task status change that the lifecycle does not allow."""

    def __init__(self, task_id: str, current: object, requested: object) -> None:
        self.task_id = task_id
        self.current = current
        self.requested = requested
        super().__init__(
            f"task {task_id!r} cannot move from {_name(current)} to {_name(requested)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.current, self.requested))


class LeaseLost(TaskEngineError, RuntimeError):
    """A task lease is no longer current: it expired, was released, or the task was
    claimed again (by another engine, or by the same one under a newer token).

    Raised by the task store's ownership operations (``renew``, ``check_fence``, a fenced
    ``save``); whatever the stale holder meant to write was not written.

    Attributes:
        task_id: the leased task.
        owner: the engine id the lease was granted to.
        token: the lease's fencing token.
    """

    def __init__(self, task_id: str, owner: str, token: int) -> None:
        self.task_id = task_id
        self.owner = owner
        self.token = token
        super().__init__(
            f"task {task_id!r}: lease {token} of {owner!r} is no longer current "
            "(expired, released or taken over)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.owner, self.token))


class TaskNotFound(TaskEngineError, LookupError):
    """No task with this id exists (never created, or expired and flushed)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} not found")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id,))

    def __str__(self) -> str:
        # LookupError subclasses (KeyError) repr their argument; keep the plain message.
        return str(self.args[0])


class TaskFailure(TaskEngineError):
    """A whole-task failure: the task ends FAILED with this code.

    Raised by task executors (collection gone, sandbox not enabled, ...) and
    recorded as the task's failure ``{"code", "description", "data"}``.
    """

    def __init__(self, code: str, description: str, data: Mapping[str, Any] | None = None) -> None:
        self.code = code
        self.description = description
        self.data: dict[str, Any] | None = dict(data) if data is not None else None
        super().__init__(f"{code}: {description}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.description, self.data))


class StorageError(TaskEngineError):
    """The storage failed; driver exceptions are chained as ``__cause__``."""


class CollectionNotFound(StorageError, LookupError):
    """The named collection does not exist."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        super().__init__(f"collection {collection!r} not found")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.collection,))

    def __str__(self) -> str:
        return str(self.args[0])


class CollectionExists(StorageError, ValueError):
    """A collection with this name already exists."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        super().__init__(f"collection {collection!r} already exists")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.collection,))


class SandboxNotEnabled(StorageError, LookupError):
    """The collection has no sandbox environment enabled."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        super().__init__(f"collection {collection!r} has no sandbox enabled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.collection,))

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateItem(StorageError, ValueError):
    """An insert named an ``_id`` that the collection already holds."""

    def __init__(self, collection: str, item_id: str) -> None:
        self.collection = collection
        self.item_id = item_id
        super().__init__(f"collection {collection!r} already holds an item with _id {item_id!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.collection, self.item_id))


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udxxx`` escapes (valid Unicode).

    Error messages and violation paths quote user input; this keeps them encodable as
    UTF-8 wherever they go (a terminal, a JSON response, a stored task's failure).
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _name(state: object) -> str:
    return str(getattr(state, "value", state))


def _rebuild(cls: type[Exception], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    return cls(*args, **kwargs)
