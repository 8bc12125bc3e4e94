"""Field operations as pure functions: an old value in, a new value (or a refusal) out.

These are the per-item rules of ``EDIT_FIELD_DATA`` (the :class:`Operations` value and
:func:`edit_item`) and ``COPY_FIELD_DATA`` (:func:`copy_item`); they never touch storage
and never mutate their inputs, so executors can apply them to a batch and write an item
only when every operation on it succeeded (see docs/task-types.md).

Equality is the filter language's (``taskengine._values.values_equal``): type-strict,
``1 == 1.0``, ``True != 1``, dates by instant, dicts by content. Whether a result is a
*change* is decided by :func:`identical` instead (exact types, key order), so replacing
``1`` by ``1.0`` is still written.
"""

from __future__ import annotations

import copy
import datetime as _dt
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from taskengine._values import identical, values_equal

__all__ = [
    "MISSING",
    "EditRefused",
    "Missing",
    "Operations",
    "ReplaceItem",
    "compile_edit",
    "copy_item",
    "copy_value",
    "edit_item",
    "edit_value",
    "identical",
]


class Missing(enum.Enum):
    """The type of :data:`MISSING`: a field the item does not have (distinct from ``None``)."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing.MISSING
"""Stands for an absent field, so ``None`` can keep meaning JSON ``null``."""


@attrs.frozen
class EditRefused:
    """An edit that cannot be applied to this value; the item is left as it was.

    Attributes:
        reason: why, in words (names the operation and the value's type).
    """

    reason: str


_SCALARS = (str, int, float, bool, type(None), _dt.datetime)


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


def _fresh(value: Any) -> Any:
    """A deep copy that is free for scalars (the common case: tags are strings)."""
    return value if isinstance(value, _SCALARS) else copy.deepcopy(value)


def _contains(values: Sequence[Any], value: Any) -> bool:
    return any(values_equal(value, v) for v in values)


def _replace_one(value: Any, rules: Sequence[ReplaceItem]) -> Any:
    # First matching rule wins, so a swap ({a->b}, {b->a}) swaps instead of collapsing.
    for rule in rules:
        if values_equal(value, rule.from_):
            return _fresh(rule.to)
    return value


def _dedupe(values: list[Any]) -> list[Any]:
    if all(type(v) is str for v in values):
        seen: set[str] = set()
        out_s: list[Any] = []
        for v in values:
            if v not in seen:
                seen.add(v)
                out_s.append(v)
        return out_s
    out: list[Any] = []
    for v in values:
        if not _contains(out, v):
            out.append(v)
    return out


def edit_value(old: Any, ops: Operations) -> Any:
    """The field's new value after ``ops``, or :class:`EditRefused`.

    ``old`` is the stored value, :data:`MISSING` for an absent field. Rules (docs/task-types.md):

    * missing or ``null`` is the empty array;
    * ``replaceItems`` first: on an array, every element equal to some ``from`` becomes
      that entry's ``to`` (the first matching entry wins); on any other value, the whole
      value is replaced when it equals a ``from``;
    * then ``removeItems`` drops every element equal to one of them, ``addItems`` appends
      them in order, and ``removeDuplicates`` keeps the first of equal elements;
    * those three need an array (or null/missing): on any other value the edit is refused
      and the value stays as it was.

    Returns the new value, which may be ``old`` itself when nothing changed; callers
    compare with :func:`identical`. The result never shares mutable parts with
    ``ops``.
    """
    value: Any = [] if old is MISSING or old is None else old
    if ops.replace_items:
        rules = ops.replace_items
        table = ops.str_replacements
        if table is not None and isinstance(value, list):
            # every ``from`` is a string: only string elements can match (type-strict)
            value = [_fresh(table[v]) if type(v) is str and v in table else v for v in value]
        elif isinstance(value, list):
            value = [_replace_one(v, rules) for v in value]
        else:
            value = _replace_one(value, rules)
    if not ops.needs_array:
        return value
    if value is None:
        value = []
    if not isinstance(value, list):
        return EditRefused(
            f"field holds {_type_name(value)}, not an array: addItems, removeItems and"
            " removeDuplicates need an array"
        )
    if ops.remove_items:
        drop = ops.remove_items
        strs = ops.str_removals
        if strs is not None:
            value = [v for v in value if not (type(v) is str and v in strs)]
        else:
            value = [v for v in value if not _contains(drop, v)]
    if ops.add_items:
        value = [*value, *(_fresh(v) for v in ops.add_items)]
    if ops.remove_duplicates:
        value = _dedupe(value)
    return value


def edit_item(item: dict[str, Any], field_key: str, ops: Operations) -> bool | EditRefused:
    """Apply ``ops`` to ``item[field_key]`` in place.

    Returns ``True`` when the item changed (it must be written), ``False`` when it did
    not (an absent or null field that stays empty counts as unchanged: nothing is
    written, the field is not created), or :class:`EditRefused` with the item untouched.
    """
    old = item.get(field_key, MISSING)
    new = edit_value(old, ops)
    if isinstance(new, EditRefused):
        return new
    if (old is MISSING or old is None) and new == [] and type(new) is list:
        return False
    if identical(old, new):
        return False
    item[field_key] = new
    return True


def compile_edit(field_key: str, ops: Operations) -> Callable[[dict[str, Any]], bool | EditRefused]:
    """:func:`edit_item` for one field and one set of operations, compiled once per task.

    The returned function behaves exactly like ``edit_item(item, field_key, ops)``. When
    every value the operations involve is a scalar and every ``from`` and removed value
    is a string (the common case: tags), an array field is edited in one pass with set
    and dict lookups instead of pairwise comparisons; anything else takes the general
    path.
    """
    table = ops.str_replacements if ops.replace_items else {}
    removals = ops.str_removals if ops.remove_items else frozenset()
    adds = ops.add_items
    fast = (
        table is not None
        and removals is not None
        and ops.needs_array
        and all(type(v) in _SCALARS for v in table.values())
        and all(type(v) in _SCALARS for v in adds)
    )
    if not fast or table is None or removals is None:

        def general(item: dict[str, Any]) -> bool | EditRefused:
            return edit_item(item, field_key, ops)

        return general
    replace_to_str = all(type(v) is str for v in table.values())
    adds_str = all(type(v) is str for v in adds)
    added = list(adds)
    dedupe = ops.remove_duplicates
    missing = MISSING

    def fast_edit(item: dict[str, Any]) -> bool | EditRefused:
        old = item.get(field_key, missing)
        if type(old) is not list:
            if old is not missing and old is not None:
                return edit_item(item, field_key, ops)  # refused, or a whole-value replace
            old = []
        out: list[Any] = []
        append = out.append
        only_str = replace_to_str
        for v in old:
            if type(v) is str:
                if v in table:
                    v = table[v]
                    if type(v) is not str:
                        append(v)
                        continue
                if v in removals:
                    continue
            else:
                only_str = False
            append(v)
        if added:
            out += added
        if dedupe:
            if only_str and adds_str:
                # A set is freed as soon as it is made (no free list): unlike
                # ``list(dict.fromkeys(out))``, which leaves a dict and a list in
                # CPython's free lists, it does not push the garbage collector's
                # allocation count up per item (see ``Batches._execute`` in taskengine/_batches.py).
                seen = set(out)
                if len(seen) != len(out):
                    seen.clear()
                    seen_add = seen.add
                    out = [v for v in out if not (v in seen or seen_add(v))]
            else:
                out = _dedupe(out)
        if len(out) == len(old):
            for a, b in zip(old, out, strict=True):
                if a is b:
                    continue
                if type(a) is str and type(b) is str:
                    if a == b:
                        continue
                    break
                if not identical(a, b):
                    break
            else:
                return False  # identical: nothing to write (and [] stays absent/null)
        item[field_key] = out
        return True

    return fast_edit


def _copy_json(value: Any) -> Any:
    # Items hold JSON-like values only: faster than copy.deepcopy, and datetimes (which
    # are immutable) stay shared.
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    return value


def copy_value(item: Mapping[str, Any], source: str) -> Any:
    """A deep copy of ``item[source]``, or :data:`MISSING` when the item has no such field."""
    if source not in item:
        return MISSING
    value = item[source]
    return value if isinstance(value, _SCALARS) else _copy_json(value)


def copy_item(item: dict[str, Any], source: str, target: str) -> bool:
    """Set ``item[target]`` to a deep copy of ``item[source]`` in place.

    Returns whether the item changed: ``False`` when it has no ``source`` (left as it
    was) or ``target`` already holds an identical value.
    """
    if source not in item:
        return False
    value = item[source]
    if target in item and identical(item[target], value):
        return False
    item[target] = value if isinstance(value, _SCALARS) else _copy_json(value)
    return True


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, _dt.datetime):
        return "a date"
    return f"a {type(value).__name__}"
