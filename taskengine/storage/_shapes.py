"""Fast checks of plain items, specialised to the shapes a collection's items share.

Most collections hold items of a few shapes: the same keys in the same order, each with
a value of the same type. The first time a dict with a given tuple of keys is checked,
:func:`plan_dict` writes a checker for that key tuple and the value types it saw: one
straight-line boolean expression over the unpacked keys (each exactly a ``str``) and
values (no loop, no dispatch on type), compiled once and cached. An item that fits is
checked at a fraction of the cost of a generic walk; one that does not (a value of
another type, a non-ASCII string) goes through the generic walk, which is exact. The
checker source is built from fixed fragments and positional names only; keys never
become source text.

What counts as storable as it is is the value model's rule
(:func:`taskengine._values.storable`) for values that need no normalisation: ``str`` that
can be encoded as UTF-8, ``int`` in the signed 64-bit range, finite ``float``, ``bool``,
``None``, a ``datetime`` that is naive or whose tzinfo is a ``datetime.timezone``, and
``dict`` (``str`` keys, no ``"$date"`` key) and ``list`` of those. Anything else, or
anything needing normalisation, makes the checks return ``None``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeAlias

from taskengine._values import DATE_KEY, INT64_MAX, INT64_MIN, encodable

__all__ = [
    "FLAT",
    "Copier",
    "Plan",
    "copier_of",
    "copy_planned",
    "intern_plan",
    "plan_dict",
    "plan_list",
]

Plan: TypeAlias = "tuple[tuple[Any, Plan], ...]"
"""Where a container's nested containers are: ``((key or index, their plan), ...)``."""

FLAT: Plan = ()
"""The plan of a container that holds scalars only."""

_MAX_PLANS = 4096
_MAX_SHAPES = 1024
_MAX_SHAPE_KEYS = 64

_PLANS: dict[Plan, Plan] = {}  # interned plans: items of one shape share one plan
_Checker: TypeAlias = Callable[[dict[str, Any]], "Plan | None"]
_SHAPES: dict[tuple[Any, ...], _Checker] = {}  # key tuple -> specialised checker

_join = "".join


def intern_plan(plan: Plan) -> Plan:
    """The shared instance of ``plan`` (equal plans become one object while room lasts)."""
    if not plan:
        return FLAT
    found = _PLANS.get(plan)
    if found is not None:
        return found
    if len(_PLANS) < _MAX_PLANS:
        _PLANS[plan] = plan
    return plan


def copy_planned(value: Any, plan: Plan) -> Any:
    """A private copy of a stored dict or list whose plan is ``plan``.

    A :data:`Plan` says where a container's nested containers are: ``((key or index,
    their plan), ...)``; ``()`` means the container holds scalars only, so
    ``value.copy()`` is a private copy. Computed once when an item is stored, it lets an
    item be copied without looking at the type of each value.
    """
    out = value.copy()
    for key, sub in plan:
        out[key] = value[key].copy() if not sub else copy_planned(value[key], sub)
    return out


Copier: TypeAlias = Callable[[Any], Any]
"""A function returning a private copy of a container of one plan."""

_copy_flat: Copier = operator.methodcaller("copy")
_COPIERS: dict[int, Copier] = {}  # id of an interned plan -> its compiled copier


def copier_of(plan: Plan) -> Copier:
    """The copier of containers whose plan is ``plan`` (what :func:`copy_planned` does).

    An interned plan gets a compiled copier (one straight line of copies), made once;
    ``FLAT`` gets ``value.copy()``; any other plan a call of :func:`copy_planned`.
    """
    if not plan:
        return _copy_flat
    copier = _COPIERS.get(id(plan))
    if copier is None:
        if _PLANS.get(plan) is not plan:  # not interned: its id may be reused later
            return functools.partial(_copy_by_plan, plan)
        copier = _COPIERS[id(plan)] = _compile_copier(plan)  # interned plans live on
    return copier


def _copy_by_plan(plan: Plan, value: Any) -> Any:
    return copy_planned(value, plan)


def _compile_copier(plan: Plan) -> Copier:
    """Copy the container, then each nested one, with no loop and no type tests."""
    lines = ["def copy(value):", "    out = value.copy()"]
    namespace: dict[str, Any] = {}
    for index, (key, sub) in enumerate(plan):
        namespace[f"k{index}"] = key
        if sub:
            namespace[f"c{index}"] = copier_of(sub)
            lines.append(f"    out[k{index}] = c{index}(value[k{index}])")
        else:
            lines.append(f"    out[k{index}] = value[k{index}].copy()")
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # fixed fragments and k/c names only
    copier: Copier = namespace["copy"]
    return copier


def plan_dict(value: dict[Any, Any]) -> Plan | None:
    """The plan of a dict storable as it is, ``None`` if it is not.

    Raises:
        RecursionError: nesting deeper than the interpreter's recursion limit.
    """
    checker = _SHAPES.get(tuple(value))
    if checker is None:
        checker = _new_checker(value)
    return checker(value)


def plan_list(value: list[Any]) -> Plan | None:
    """The plan of a list storable as it is, ``None`` if it is not.

    Raises:
        RecursionError: nesting deeper than the interpreter's recursion limit.
    """
    try:
        if _join(value).isascii():
            return FLAT  # every element is an ASCII str: checked in C
    except TypeError:
        pass
    plan: Plan = FLAT
    for index, item in enumerate(value):
        sub = _plan_value(item)
        if sub is None:
            return None
        if sub is not _SCALAR:
            plan += ((index, sub),)
    return intern_plan(plan) if plan else FLAT


_SCALAR: Any = object()  # _plan_value's answer for a storable scalar


def _plan_value(item: Any) -> Any:
    """``_SCALAR`` for a storable scalar, a container's plan, or ``None`` if refused."""
    kind = type(item)
    if kind is str:
        return _SCALAR if item.isascii() or encodable(item) else None
    if kind is int:
        return _SCALAR if INT64_MIN <= item <= INT64_MAX else None
    if kind is float:
        return _SCALAR if item - item == 0.0 else None  # inf - inf and nan - nan are nan
    if item is None or kind is bool:
        return _SCALAR
    if kind is dict:
        return None if DATE_KEY in item else plan_dict(item)
    if kind is list:
        return plan_list(item)
    if kind is datetime:
        tzinfo = item.tzinfo
        return _SCALAR if tzinfo is None or type(tzinfo) is timezone else None
    return None


def _walk_dict(value: dict[Any, Any]) -> Plan | None:
    """The generic, exact check of a dict (any shape)."""
    plan: Plan = FLAT
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() or encodable(key)):
            return None
        sub = _plan_value(item)
        if sub is None:
            return None
        if sub is not _SCALAR:
            plan += ((key, sub),)
    return intern_plan(plan) if plan else FLAT


# One condition per scalar type, on the value named ``{v}``; containers are handled apart.
_CONDITIONS: dict[type, str] = {
    str: "(type({v}) is str and ({v}.isascii() or encodable({v})))",
    int: "(type({v}) is int and INT_MIN <= {v} <= INT_MAX)",
    float: "(type({v}) is float and {v} - {v} == 0.0)",
    bool: "type({v}) is bool",
    type(None): "{v} is None",
    datetime: "(type({v}) is datetime and ({v}.tzinfo is None or type({v}.tzinfo) is timezone))",
}


def _new_checker(value: dict[Any, Any]) -> _Checker:
    """A checker for dicts with ``value``'s keys (cached when the shape allows)."""
    keys = tuple(value)
    if not keys or len(keys) > _MAX_SHAPE_KEYS or len(_SHAPES) >= _MAX_SHAPES:
        return _walk_dict
    if not all(type(key) is str and (key.isascii() or encodable(key)) for key in keys):
        return _walk_dict
    tests: list[str] = []
    containers: list[tuple[int, str]] = []  # (position, planner)
    for index, item in enumerate(value.values()):
        kind = type(item)
        name = f"v{index}"
        condition = _CONDITIONS.get(kind)
        if condition is not None:
            tests.append(condition.format(v=name))
        elif kind is dict:
            tests.append(f"(type({name}) is dict and DATE not in {name})")
            containers.append((index, "plan_dict"))
        elif kind is list:
            tests.append(f"type({name}) is list")
            containers.append((index, "plan_list"))
        else:
            return _walk_dict  # a type never stored as it is: the walk refuses it
    checker = _compile(keys, tests, containers)
    _SHAPES[keys] = checker
    return checker


def _compile(
    keys: tuple[str, ...], tests: list[str], containers: list[tuple[int, str]]
) -> _Checker:
    """Compile the checker of one shape from its per-value tests."""
    names = ", ".join(f"v{index}" for index in range(len(keys)))
    key_names = ", ".join(f"n{index}" for index in range(len(keys)))
    # A str subclass key equal to a cached key finds this checker too: test every type.
    key_tests = [f"type(n{index}) is str" for index in range(len(keys))]
    lines = [
        "def check(value, type=type, str=str):",  # locals: the fastest lookups
        "    try:",
        f"        {key_names}, = value",
        f"        {names}, = value.values()",
        "    except ValueError:",  # the dict changed size meanwhile
        "        return walk(value)",
        "    if not (" + "\n            and ".join(key_tests + tests) + "):",
        "        return walk(value)",
    ]
    for index, planner in containers:
        lines += [
            f"    p{index} = {planner}(v{index})",
            f"    if p{index} is None:",
            "        return None",
        ]
    if containers:
        flat = " and ".join(f"p{index} is FLAT" for index, _ in containers)
        pairs = "".join(f"(k{index}, p{index}), " for index, _ in containers)
        lines += [
            f"    if {flat}:",
            "        return ALL_FLAT",
            f"    return intern_plan(({pairs}))",
        ]
    else:
        lines.append("    return FLAT")
    namespace: dict[str, Any] = {
        "walk": _walk_dict,
        "plan_dict": plan_dict,
        "plan_list": plan_list,
        "intern_plan": intern_plan,
        "encodable": encodable,
        "datetime": datetime,
        "timezone": timezone,
        "INT_MIN": INT64_MIN,
        "INT_MAX": INT64_MAX,
        "DATE": DATE_KEY,
        "FLAT": FLAT,
        "ALL_FLAT": intern_plan(tuple((keys[index], FLAT) for index, _ in containers)),
    }
    namespace.update((f"k{index}", keys[index]) for index, _ in containers)
    exec("\n".join(lines), namespace)  # fixed fragments and n/v/p/k names only
    checker: _Checker = namespace["check"]
    return checker
