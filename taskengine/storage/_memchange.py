"""``MemoryStorage.change_matching``: a batch changed on the frozen items themselves.

:func:`taskengine.storage.changes.change_by_scan` reads a page (every item thawed into a
fresh dict), runs the change, and writes the result back (every written item checked
value by value and frozen again). Here the batch is done on the stored frozen items,
under the storage lock:

* a delete without a filter thaws nothing: the page's ids are deleted; with a filter,
  each item is thawed once for the filter and dropped;
* an update thaws each item once (the filter and the change see the same fresh dict),
  and freezes what the change returns once. The result is checked *against the item it
  came from*: a value that is the very object the frozen item held (a scalar the change
  left alone: stored scalars are immutable and were checked when stored) is kept without
  a check; only the values that are new objects (the thawed lists and dicts, new or
  changed values) are checked and frozen. One straight-line function per pair of shapes
  (the stored item's keys, the result's keys) does it (:func:`_refreezer`); anything it
  does not cover (a changed ``_id``, a value that needs normalising or is refused, a
  result that is not a plain dict, a shape not yet registered) goes the general way,
  :func:`entry`, which is what ``replace_items`` does and raises the same
  :class:`~taskengine.errors.InvalidItem`.

Two shortcuts come first: a compiled filter is run on a dict of only the keys it
names (:mod:`taskengine.storage._memfilter`), so a rejected item is never thawed; and a
change said as data (a :class:`~taskengine.storage.changes.FieldAssignment`) is done on
the frozen tuple itself (:mod:`taskengine.storage._memassign`).

Nothing is written until every result of the batch is frozen, so a refused result
leaves the batch unwritten; the outcome (items, counters, refusals) is the one
``change_by_scan`` gives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from operator import is_
from typing import Any, TypeAlias, cast

from taskengine._values import DATE_KEY, INT64_MAX, INT64_MIN, encodable
from taskengine.storage._frozen import (
    Frozen,
    freeze_item,
    freeze_value,
    registered_shape,
    shape_keys,
    thawers,
)
from taskengine.storage._memassign import GENERAL, assigners
from taskengine.storage._memfilter import frozen_tests
from taskengine.storage._shapes import plan_dict, plan_list
from taskengine.storage.base import ItemFilter
from taskengine.storage.changes import ItemChange
from taskengine.storage.codec import admit, check_planned, plan_of

__all__ = ["Outcomes", "change_frozen", "entry", "matching"]

_BAD: Any = object()  # _fresh's answer for a value to leave to the general way

_Refreezer: TypeAlias = Callable[[Frozen, tuple[str, ...], dict[str, Any]], "Frozen | None"]

_MAX_REFREEZERS = 4096
_REFREEZERS: dict[tuple[int, tuple[str, ...]], _Refreezer] = {}
_compile_lock = threading.Lock()


def entry(item: object) -> tuple[str, Frozen]:
    """``(_id, frozen form)`` of an item to store, as :func:`admit` checks and normalises it.

    A plain item is checked in place and frozen (no intermediate copy).

    Raises:
        InvalidItem: as :func:`admit`.
    """
    checked = check_planned(item)
    if checked is not None:
        return checked[0], freeze_item(cast("dict[str, Any]", item), checked[1])
    item_id, doc = admit(item)
    return item_id, freeze_item(doc, plan_of(doc))


def _fresh(value: Any) -> Any:
    """The frozen form of a value the change made (checked), or ``_BAD``."""
    kind = type(value)
    if kind is str:
        return value if value.isascii() or encodable(value) else _BAD
    if kind is list:
        try:
            plan = plan_list(value)
        except RecursionError:
            return _BAD  # the general way refuses it, naming the item
        if plan is None:
            return _BAD
        return tuple(value) if not plan else freeze_value(value, plan)
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else _BAD
    if kind is float:
        return value if value - value == 0.0 else _BAD  # inf and nan give nan
    if value is None or kind is bool:
        return value
    if kind is dict:
        if DATE_KEY in value:
            return _BAD
        try:
            plan = plan_dict(value)
        except RecursionError:
            return _BAD
        return _BAD if plan is None else freeze_value(value, plan)
    if kind is datetime:
        tzinfo = value.tzinfo
        return value if tzinfo is None or type(tzinfo) is timezone else _BAD
    return _BAD


def _refreezer(shape: int, keys: tuple[str, ...]) -> _Refreezer | None:
    """The function freezing a result with ``keys`` made from an item of ``shape``.

    ``None`` when there is none (yet): the result goes the general way, which
    registers its shape, so the next result of these keys gets one.
    """
    key = (shape, keys)
    found = _REFREEZERS.get(key)
    if found is not None:
        return found
    new_shape = registered_shape(keys)
    if not shape or not new_shape or "_id" not in keys or len(_REFREEZERS) >= _MAX_REFREEZERS:
        return None  # not registered yet (or never: shape 0), refused anyway, or no room
    with _compile_lock:
        made = _REFREEZERS.get(key)
        if made is None:
            made = _REFREEZERS[key] = _compile(shape_keys[shape], new_shape, keys)
    return made


def _compile(old: tuple[str, ...], shape: int, keys: tuple[str, ...]) -> _Refreezer:
    """One straight line: unpack both, keep identical values, check and freeze the rest.

    The source is built from fixed fragments and positional names only; keys never
    become source text.
    """
    position = {name: index for index, name in enumerate(old)}
    olds = ", ".join(f"o{index}" for index in range(len(old)))
    names = ", ".join(f"n{index}" for index in range(len(keys)))
    values = ", ".join(f"v{index}" for index in range(len(keys)))
    lines = [
        "def refreeze(item, keys, out):",
        f"    _, {olds}, = item",
        f"    {names}, = keys",
        "    try:",
        f"        {values}, = out.values()",
        "    except ValueError:",
        "        return None",
        "    if not (" + " and ".join(f"type(n{i}) is str" for i in range(len(keys))) + "):",
        "        return None",
    ]
    for index, name in enumerate(keys):
        before = position.get(name)
        if name == "_id":
            lines += [f"    if v{index} is not o{before}:", "        return None"]
        elif before is None:
            lines += [
                f"    if not (type(v{index}) is str and v{index}.isascii()):",
                f"        v{index} = fresh(v{index})",
                f"        if v{index} is BAD:",
                "            return None",
            ]
        else:
            # A thawed list of scalars holding the very elements it was thawed from
            # keeps its frozen tuple (a list with containers never passes: its
            # elements are fresh containers); a list of ASCII strings is checked in C,
            # as ``plan_list`` does.
            v, o = f"v{index}", f"o{before}"
            lines += [
                f"    if {v} is not {o}:",
                f"        if type({v}) is str:",
                f"            if not {v}.isascii():",
                *_fresh_lines(v, "                "),
                f"        elif type({v}) is list:",
                f"            if (type({o}) is tuple and len({v}) == len({o})"
                f" and all(map(is_, {v}, {o}))):",
                f"                {v} = {o}",
                "            else:",
                "                try:",
                f"                    flat = join({v}).isascii()",
                "                except TypeError:",
                "                    flat = False",
                "                if flat:",
                f"                    {v} = tuple({v})",
                "                else:",
                *_fresh_lines(v, "                    "),
                "        else:",
                *_fresh_lines(v, "            "),
            ]
    lines.append(f"    return (SHAPE, {values},)")
    namespace: dict[str, Any] = {"fresh": _fresh, "BAD": _BAD, "SHAPE": shape, "type": type}
    namespace.update(str=str, list=list, tuple=tuple, len=len, all=all, map=map, is_=is_)
    namespace.update(join="".join, TypeError=TypeError)
    exec("\n".join(lines), namespace)  # fixed fragments and positional names only
    made: _Refreezer = namespace["refreeze"]
    return made


def _fresh_lines(value: str, indent: str) -> list[str]:
    """Source lines: ``value`` checked and frozen by :func:`_fresh`; ``None`` if refused."""
    return [
        f"{indent}{value} = fresh({value})",
        f"{indent}if {value} is BAD:",
        f"{indent}    return None",
    ]


def matching(ids: list[str], frozen: list[Frozen], filter: ItemFilter | None) -> dict[str, Frozen]:
    """The page's items ``filter`` accepts (all of them without a filter), by ``_id``."""
    if filter is None:
        return dict(zip(ids, frozen, strict=True))
    tests = frozen_tests(filter)
    if tests is not None:
        return {
            item_id: item for item_id, item in zip(ids, frozen, strict=True) if tests[item[0]](item)
        }
    thaw = thawers
    return {
        item_id: item
        for item_id, item in zip(ids, frozen, strict=True)
        if filter(thaw[item[0]](item))
    }


class Outcomes:
    """What the change made of a page: the frozen writes by ``_id`` (in order, a repeated
    id's last result winning), the unchanged count and the refusals."""

    __slots__ = ("refused", "unchanged", "writes")

    def __init__(self) -> None:
        self.writes: dict[str, Frozen] = {}
        self.unchanged = 0
        self.refused: list[tuple[str, str]] = []


def change_frozen(
    ids: list[str], frozen: list[Frozen], filter: ItemFilter | None, change: ItemChange
) -> Outcomes:
    """Run ``change`` over the page's items ``filter`` accepts; freeze what it returns.

    Raises:
        InvalidItem: a result cannot be stored (as ``replace_items`` would refuse it).
    """
    outcomes = Outcomes()
    writes, refused = outcomes.writes, outcomes.refused
    thaw = thawers
    unchanged = 0
    # The last pair of shapes seen and its refreezer: a batch's items mostly share them,
    # and comparing key tuples of the same strings is cheaper than hashing them.
    last_shape, last = -1, cast("_Refreezer | None", None)
    last_keys: tuple[str, ...] = ()
    tests = frozen_tests(filter)  # with them, only the accepted items are thawed
    assign = assigners(change)  # with them, most items are not thawed at all
    for item_id, item in zip(ids, frozen, strict=True):
        if tests is not None and not tests[item[0]](item):
            continue
        if assign is not None:
            assigner = assign[item[0]]
            if assigner is not None:
                made = assigner(item)
                if made is None:
                    unchanged += 1
                    continue
                if made is not GENERAL:
                    writes[item_id] = made
                    continue
        doc = thaw[item[0]](item)
        if tests is None and filter is not None and not filter(doc):
            continue
        out = change(doc)
        if out is None:
            unchanged += 1
            continue
        if type(out) is dict:
            keys = tuple(out)
            if item[0] == last_shape and keys == last_keys:
                refreeze = last
            else:
                refreeze = _refreezer(item[0], keys)
                # None (not compiled yet): asked again next time, once the general way
                # has registered the result's shape.
                last_shape, last_keys, last = (item[0] if refreeze else -1), keys, refreeze
            if refreeze is not None:
                made = refreeze(item, keys, out)
                if made is not None:
                    writes[item_id] = made
                    continue
        elif type(out) is str:
            refused.append((item_id, out))
            continue
        assert isinstance(out, Mapping)
        new_id, made = entry(out)
        writes[new_id] = made  # a repeated id: its place stays, its last result wins
    outcomes.unchanged = unchanged
    return outcomes
