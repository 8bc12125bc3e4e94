"""The form ``MemoryStorage`` keeps items in: tuples the cyclic garbage collector forgets.

CPython's cyclic garbage collector walks every *tracked* container at each full
collection, and a full collection runs whenever the tracked objects that survived since
the last one reach a quarter of those that survived before: a store of a million items
kept as dicts and lists (four million tracked objects) makes every large write pay for
walks of the whole store, and stalls every thread for about a second each time.

A tuple whose elements are all atomic (``str``, ``int``, ``float``, ``bool``, ``None``,
``datetime``) or untracked tuples is *untracked* by the first young-generation
collection after it is made, so it never reaches the older generations and is never
walked again (see :func:`gc.is_tracked`). Item values never include tuples, so a stored
item can be written as tuples with no ambiguity:

* an item (a dict) is ``(shape, value, value, ...)``: ``shape`` is a small ``int`` naming
  its key tuple in a process-wide registry, whose compiled thawer rebuilds the dict in
  one dict display; ``shape`` 0 (registry full, or more than 64 keys) is
  ``(0, keys, value, ...)``;
* a list of scalars is ``(element, ...)``; a list holding containers is
  ``(_DEEP, element, ...)``; a nested dict is ``(_DICT, keys, value, ...)``. ``_DEEP``
  and ``_DICT`` are sentinels (plain ``object()`` instances, which are untracked too);
* scalars are kept as they are (the same objects: every one is immutable), so values
  round-trip exactly (``-0.0``, ``bool`` against ``int``, key order, dates).

:func:`thaw_item` makes a fresh dict with fresh lists and dicts every time, so it is
also the private copy handed out; :func:`freeze_item` never keeps a reference to a
caller's container, so it is the private copy taken in. A frozen item is immutable,
which also lets a reader hold a snapshot of stored items without a lock.

Nothing here touches the collector's settings: it only stops handing it work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import islice
from typing import Any, TypeAlias

from taskengine.storage._shapes import Plan

__all__ = [
    "DICT_HEAD",
    "Frozen",
    "freeze_item",
    "freeze_value",
    "registered_shape",
    "shape_keys",
    "shape_of",
    "thaw_item",
    "thaw_value",
    "thawers",
]

Frozen: TypeAlias = "tuple[Any, ...]"
"""A stored item in frozen form (see the module docstring)."""

_DICT: Any = object()  # first element of a frozen nested dict
_DEEP: Any = object()  # first element of a frozen list that holds containers

DICT_HEAD: Any = _DICT
"""The first element of a frozen nested dict (a tuple without it is a frozen list)."""

_MAX_SHAPES = 4096
_MAX_SHAPE_KEYS = 64

_Thawer: TypeAlias = Callable[[Frozen], dict[str, Any]]

_SHAPE_OF: dict[tuple[str, ...], int] = {}  # key tuple -> shape number (1, 2, ...)
_register_lock = threading.Lock()


def freeze_value(value: Any, plan: Plan) -> Frozen:
    """The frozen form of an admitted list or dict whose :data:`Plan` is ``plan``."""
    if type(value) is list:
        if not plan:
            return tuple(value)
        out = list(value)
        for index, sub in plan:
            out[index] = freeze_value(out[index], sub)
        return (_DEEP, *out)
    if plan:
        value = value.copy()
        for key, sub in plan:
            value[key] = freeze_value(value[key], sub)
    return (_DICT, tuple(value), *value.values())


def thaw_value(value: Frozen) -> Any:
    """A fresh list or dict from the frozen form :func:`freeze_value` made."""
    if not value:
        return []
    head = value[0]
    if head is _DICT:
        out = dict(zip(value[1], islice(value, 2, None), strict=True))
        for key, inner in out.items():
            if type(inner) is tuple:
                out[key] = thaw_value(inner)
        return out
    if head is _DEEP:
        return [thaw_value(inner) if type(inner) is tuple else inner for inner in value[1:]]
    return list(value)


def freeze_item(doc: dict[str, Any], plan: Plan) -> Frozen:
    """The frozen form of an admitted item (a dict) whose :data:`Plan` is ``plan``.

    Shares no container with ``doc``.
    """
    if plan:
        doc = doc.copy()
        for key, sub in plan:
            doc[key] = freeze_value(doc[key], sub)
    keys = tuple(doc)
    shape = _SHAPE_OF.get(keys)
    if shape is None:
        shape = _register(keys)
    if shape:
        return (shape, *doc.values())
    return (0, keys, *doc.values())


def _thaw_any(item: Frozen) -> dict[str, Any]:
    """Thaw an item of shape 0: ``(0, keys, value, ...)``."""
    out: dict[str, Any] = dict(zip(item[1], islice(item, 2, None), strict=True))
    for key, value in out.items():
        if type(value) is tuple:
            out[key] = thaw_value(value)
    return out


thawers: list[_Thawer] = [_thaw_any]
"""The thawer of each shape number: ``thawers[item[0]](item)`` is :func:`thaw_item`.

Append-only (a shape's number never changes), so a caller may index it without a lock.
"""


shape_keys: list[tuple[str, ...]] = [()]
"""The key tuple of each shape number (``()`` for shape 0, whose items hold their keys).

Append-only, like :data:`thawers`.
"""


def registered_shape(keys: tuple[str, ...]) -> int | None:
    """The shape number of ``keys`` when it is registered (never registers it)."""
    return _SHAPE_OF.get(keys)


def shape_of(keys: tuple[str, ...]) -> int:
    """The shape number of ``keys``, registered now if it is not yet (0: no room)."""
    shape = _SHAPE_OF.get(keys)
    return _register(keys) if shape is None else shape


def thaw_item(item: Frozen) -> dict[str, Any]:
    """A fresh item (dict, with fresh nested lists and dicts) from its frozen form."""
    return thawers[item[0]](item)


def _register(keys: tuple[str, ...]) -> int:
    """The shape number of ``keys``, registered now when there is room, else 0."""
    if not keys or len(keys) > _MAX_SHAPE_KEYS:
        return 0
    with _register_lock:
        shape = _SHAPE_OF.get(keys)
        if shape is not None:
            return shape
        if len(thawers) > _MAX_SHAPES:
            return 0
        thawers.append(_compile_thawer(keys))
        shape_keys.append(keys)
        shape = _SHAPE_OF[keys] = len(thawers) - 1
        return shape


def _compile_thawer(keys: tuple[str, ...]) -> _Thawer:
    """One dict display over the unpacked values; containers thawed where found.

    A frozen list of scalars (a tuple whose first element is not a sentinel: the
    sentinels are the only values of type ``object``) becomes ``list(value)`` inline.

    The source is built from fixed fragments and positional names only; the keys are
    passed in as arguments, never written into the source.
    """
    count = len(keys)
    values = ", ".join(f"v{index}" for index in range(count))
    names = ", ".join(f"k{index}" for index in range(count))
    pairs = ", ".join(
        f"k{index}: v{index} if type(v{index}) is not tuple"
        f" else list(v{index}) if not v{index} or type(v{index}[0]) is not object"
        f" else thaw(v{index})"
        for index in range(count)
    )
    source = (
        f"def make({names}, thaw, tuple, type, list, object):\n"
        "    def thaw_item(item):\n"
        f"        _, {values}, = item\n"
        f"        return {{{pairs}}}\n"
        "    return thaw_item\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # fixed fragments and k/v names only
    thawer: _Thawer = namespace["make"](*keys, thaw_value, tuple, type, list, object)
    return thawer
