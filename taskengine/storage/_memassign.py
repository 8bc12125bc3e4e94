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
from taskengine.storage._frozen import DICT_HEAD, Frozen, shape_keys, shape_of, thaw_value
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
    # Kept per assignment: a task asks again for every batch, with an equal one. The
    # key is type-strict (``1``, ``True`` and ``1.0`` are equal, and so are ``0.0`` and
    # ``-0.0``, or one instant at two offsets: each needs its own assigners).
    values = value if assignment.append else (value,)
    key = (
        assignment.target,
        assignment.source,
        assignment.append,
        tuple((type(each), repr(each)) for each in values),
    )
    made = _CACHE.get(key)
    if made is None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()  # atomic, unlike evicting one entry while threads look
        made = _CACHE.setdefault(key, _Assigners(assignment))
    return made


_CACHE: dict[tuple[Any, ...], _Assigners] = {}
_CACHE_SIZE = 64


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
    target, source = assignment.target, assignment.source
    at = keys.index(target) + 1 if target in keys else 0
    if source is not None and source not in keys:
        return lambda item: None  # no source: every item of the shape is unchanged
    src = keys.index(source) + 1 if source is not None else 0
    grown = 0
    if not at:
        grown = shape_of((*keys, target))
        if not grown:
            return None
    if assignment.append:
        kind = "grow" if at else "new"
    elif at:
        kind = "text" if not src and type(assignment.value) is str else "same"
    else:
        kind = "new"
    return _compile(len(keys) + 1, at, src, grown, kind, assignment.value)


# The new value's lines, by kind (``old`` is the target's stored value, ``V`` the
# constant or the appended values, ``S`` the source's position: filled in below).
_BODIES = {
    "text": ["    if type(old) is str and old == V:", "        return None", "    new = V"],
    "same": [
        "    new = S",
        "    if old is new or same(old, new):",  # a value is identical to itself
        "        return None",
    ],
    "grow": [
        "    if type(old) is tuple and (not old or old[0] is not DICT):",  # a list
        "        new = old + V",
        "    elif old is None:",
        "        new = V",
        "    else:",
        "        return GENERAL",  # not an array: the change refuses it or decides
    ],
    "new": ["    new = S"],
}


def _compile(size: int, at: int, src: int, grown: int, kind: str, value: Any) -> Assigner:
    """One straight line: unpack the item, work out the new value, build the new tuple.

    The source is built from fixed fragments and positional names only.
    """
    names = [f"v{index}" for index in range(size)]
    lines = ["def assign(item):", f"    {', '.join(names)}, = item"]
    if at:
        lines.append(f"    old = v{at}")
    source = f"v{src}" if src else "V"
    lines += [line.replace("S", source) if "new = S" in line else line for line in _BODIES[kind]]
    out = [*names[:at], "new", *names[at + 1 :]] if at else ["GROWN", *names[1:], "new"]
    lines.append(f"    return ({', '.join(out)},)")
    namespace: dict[str, Any] = {
        "V": value,
        "GROWN": grown,
        "GENERAL": GENERAL,
        "same": _same,
        "DICT": DICT_HEAD,
        "tuple": tuple,
        "type": type,
        "str": str,
    }
    exec("\n".join(lines), namespace)  # fixed fragments and positional names only
    made: Assigner = namespace["assign"]
    return made
