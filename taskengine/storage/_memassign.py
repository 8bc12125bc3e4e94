"""A :class:`~taskengine.storage.changes.FieldAssignment` done on frozen items.

Publish status (``SetField``) and ``COPY_FIELD_DATA`` (``CopyField``) set one top-level
field, and ``EDIT_FIELD_DATA`` with ``addItems`` alone appends to one. On
``MemoryStorage``'s frozen tuples (:mod:`taskengine.storage._frozen`) that is one new
tuple: the stored values are kept as they are (they are immutable, so a copied
container is shared, never thawed), the target's value is put in its place (a frozen
list grown by the appended scalars), or appended with the item's shape extended by the
target key. Nothing is thawed, checked or frozen again, except the two values compared
when the target is already present and one of them is a container.

Each item shape gets one small function, made on first use; shape 0 (items holding
their own keys) and a full shape registry have none, and such items go through the
change's Python form.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeAlias

from taskengine._values import INT64_MAX, INT64_MIN, encodable, identical
from taskengine.storage._frozen import Frozen, is_frozen_list, shape_keys, shape_of, thaw_value
from taskengine.storage.changes import FieldAssignment

__all__ = ["GENERAL", "Assigner", "assigners"]

GENERAL: Any = object()
"""An assigner's answer for an item only the change's Python form can do."""

Assigner: TypeAlias = Callable[[Frozen], Any]
"""The new frozen item, ``None`` when the assignment leaves it unchanged, or
:data:`GENERAL`."""


def _same(stored: Any, new: Any) -> bool:
    """Whether two frozen values are identical values (containers thawed to compare)."""
    if type(stored) is tuple or type(new) is tuple:
        return (
            type(stored) is tuple
            and type(new) is tuple
            and identical(thaw_value(stored), thaw_value(new))
        )
    return identical(stored, new)


class _Assigners(dict[int, "Assigner | None"]):
    """The assigner of each item shape, made on first use (``None``: not on this shape)."""

    __slots__ = ("_assignment", "_lock")

    def __init__(self, assignment: FieldAssignment) -> None:
        super().__init__()
        self._assignment = assignment
        self._lock = threading.Lock()

    def __missing__(self, shape: int) -> Assigner | None:
        with self._lock:
            if shape not in self:
                self[shape] = _make(self._assignment, shape)
            return self[shape]


def assigners(change: object) -> dict[int, Assigner | None] | None:
    """Per-shape assigners for ``change``'s ``assignment`` (``tests[item[0]]``), or
    ``None`` when it has none that frozen items can take."""
    assignment = getattr(change, "assignment", None)
    if type(assignment) is not FieldAssignment or type(assignment.target) is not str:
        return None
    if assignment.target == "_id":
        return None  # a new id is a move: the general way does it
    value = assignment.value
    if assignment.append:
        if assignment.source is not None or type(value) is not tuple or not value:
            return None
        if not all(map(_storable_scalar, value)):
            return None
    elif assignment.source is None:
        if type(value) not in (str, datetime) or not _storable_scalar(value):
            return None
    elif type(assignment.source) is not str:
        return None
    return _Assigners(assignment)


def _storable_scalar(value: Any) -> bool:
    """Whether a scalar can be stored as it is (what ``admit`` would keep unchanged)."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii() or encodable(value))
    if kind is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    if kind is float:
        return bool(value - value == 0.0)  # inf and nan give nan
    if kind is datetime:
        return value.tzinfo is None or type(value.tzinfo) is timezone
    return value is None or kind is bool


def _make(assignment: FieldAssignment, shape: int) -> Assigner | None:
    """The assigner of one shape, or ``None`` (shape 0, or no room for the new shape)."""
    if not shape:
        return None
    keys = shape_keys[shape]
    target, source, constant = assignment.target, assignment.source, assignment.value
    at = keys.index(target) + 1 if target in keys else 0
    if assignment.append:
        return _appender(keys, target, at, constant)
    if source is not None and source not in keys:
        return lambda item: None  # no source: every item of the shape is unchanged
    src = keys.index(source) + 1 if source is not None else 0
    if at and not src and type(constant) is str:

        def set_text(item: Frozen) -> Frozen | None:
            old = item[at]
            if type(old) is str and old == constant:
                return None
            return (*item[:at], constant, *item[at + 1 :])

        return set_text
    if at:

        def replace(item: Frozen) -> Frozen | None:
            new = item[src] if src else constant
            old = item[at]
            if old is new or _same(old, new):  # a value is identical to itself
                return None
            return (*item[:at], new, *item[at + 1 :])

        return replace
    grown = shape_of((*keys, target))
    if not grown:
        return None

    def append(item: Frozen) -> Frozen:
        return (grown, *item[1:], item[src] if src else constant)

    return append


def _appender(
    keys: tuple[str, ...], target: str, at: int, added: tuple[Any, ...]
) -> Assigner | None:
    """Append ``added`` to the frozen list at ``at`` (or make it: missing or null)."""
    if at:

        def grow(item: Frozen) -> Any:
            old = item[at]
            if is_frozen_list(old):
                return (*item[:at], old + added, *item[at + 1 :])
            if old is None:
                return (*item[:at], added, *item[at + 1 :])
            return GENERAL  # not an array: the change refuses it or decides otherwise

        return grow
    grown = shape_of((*keys, target))
    if not grown:
        return None
    return lambda item: (grown, *item[1:], added)
