"""Filters run on ``MemoryStorage``'s frozen items without thawing whole items.

A compiled filter says which top-level keys its answer depends on
(``Filter.top_level_fields()``; ``None`` when it cannot say). For such a filter each
item shape gets one generated function that builds a dict of only those keys (those the
shape has, containers thawed as :func:`~taskengine.storage._frozen.thaw_value` does)
and calls the filter on it: a filter on one field of a five-field item looks at a
one-key dict instead of a fresh copy of the item with its lists. The answer is the
same, since the keys left out cannot change it.

A filter that can also be generated over rows (``Filter.row_predicate``: a compiled
filter that is one expression) gets, per shape, that form over the frozen tuple
itself: the values read by position, no dict built, one call per item.

A filter without the method (any callable is an ``ItemFilter``), or one that cannot
name its keys, sees the whole thawed item, as before.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from taskengine.storage._frozen import Frozen, shape_keys, thaw_value, thawers
from taskengine.storage.base import ItemFilter

__all__ = ["FrozenTest", "frozen_tests"]

FrozenTest: TypeAlias = Callable[[Frozen], bool]
"""The filter's answer for one frozen item."""

_RowMaker: TypeAlias = Callable[[], Callable[..., FrozenTest | None] | None]
"""A weak reference to a filter's ``row_predicate`` (``None`` once the filter is gone)."""

_MAX_FIELDS = 16  # more keys than this: thawing the whole item costs about the same

_CACHE: weakref.WeakKeyDictionary[Any, _Tests] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


class _Tests(dict[int, FrozenTest]):
    """The test of each item shape, made on first use (``tests[item[0]](item)``)."""

    __slots__ = ("_fields", "_filter", "_lock", "_rows")

    def __init__(
        self, filter: ItemFilter, fields: frozenset[str], rows: _RowMaker | None = None
    ) -> None:
        super().__init__()
        self._filter = filter
        self._fields = fields
        self._rows = rows
        self._lock = threading.Lock()

    def __missing__(self, shape: int) -> FrozenTest:
        with self._lock:
            made = self.get(shape)
            if made is None:
                made = self[shape] = self._make(shape)
        return made

    def _make(self, shape: int) -> FrozenTest:
        """The filter's row form over the shape's tuples when it has one, else
        :func:`_compile`."""
        maker = None if self._rows is None or not shape else self._rows()
        if maker is not None:
            keys = shape_keys[shape]
            made = maker({key: index + 1 for index, key in enumerate(keys)}, thaw_value)
            if made is not None:
                return made
        return _compile(self._filter, self._fields, shape)


def frozen_tests(filter: ItemFilter | None) -> dict[int, FrozenTest] | None:
    """Per-shape tests for ``filter`` (``tests[item[0]](item)``), or ``None`` when the
    filter must see whole items (no filter, or one that cannot name its keys).

    Kept while the filter lives: every page of a scan, chunk of a count and batch of a
    task reuses the functions already made for its shapes.
    """
    if filter is None:
        return None
    try:
        with _cache_lock:
            cached = _CACHE.get(filter)
    except TypeError:  # not hashable, or no weak reference to it
        cached = None
    if cached is not None:
        return cached
    named = getattr(filter, "top_level_fields", None)
    if named is None:
        return None
    fields = named()
    if fields is None or len(fields) > _MAX_FIELDS:
        return None
    # The cached tests must not hold the filter itself (the cache would keep it alive):
    # a compiled filter's bare predicate answers the same.
    predicate = getattr(filter, "predicate", None)
    if not callable(predicate):
        return _Tests(filter, frozenset(fields))
    # The filter's row form (``Filter.row_predicate``), held weakly for the same reason.
    rows = getattr(filter, "row_predicate", None)
    maker = weakref.WeakMethod(rows) if inspect.ismethod(rows) else None
    made = _Tests(predicate, frozenset(fields), maker)
    with contextlib.suppress(TypeError), _cache_lock:
        _CACHE[filter] = made
    return made


def accepted(frozen: Iterable[Frozen], filter: ItemFilter) -> list[Frozen]:
    """The frozen items ``filter`` accepts, in order."""
    tests = frozen_tests(filter)
    if tests is None:
        thaw = thawers
        return [item for item in frozen if filter(thaw[item[0]](item))]
    return [item for item in frozen if tests[item[0]](item)]


def _compile(filter: ItemFilter, fields: frozenset[str], shape: int) -> FrozenTest:
    """One function: the filter over a dict display of the shape's wanted keys.

    The source is built from fixed fragments and positional names only; the keys are
    passed in as arguments, never written into the source.
    """
    if not shape:  # shape 0 holds its own keys: thaw the whole item
        thaw_any = thawers[0]
        return lambda item: filter(thaw_any(item))
    keys = shape_keys[shape]
    wanted = [(index, key) for index, key in enumerate(keys) if key in fields]
    names = ", ".join(f"k{n}" for n in range(len(wanted)))
    reads = "".join(f"        v{n} = item[{index + 1}]\n" for n, (index, _) in enumerate(wanted))
    pairs = ", ".join(
        f"k{n}: v{n} if type(v{n}) is not tuple else thaw(v{n})" for n in range(len(wanted))
    )
    source = (
        f"def make({names}{', ' if wanted else ''}test, thaw, tuple, type):\n"
        "    def accepts(item):\n"
        f"{reads}"
        f"        return test({{{pairs}}})\n"
        "    return accepts\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # fixed fragments and k/v names only
    made: FrozenTest = namespace["make"](
        *(key for _, key in wanted), filter, thaw_value, tuple, type
    )
    return made
