"""The ``mongo`` filter dialect: MongoDB 8.0 query-operator semantics, compiled.

A spec is compiled once into plain closures over pre-split paths. The semantics
follow MongoDB's classic matcher (``src/mongo/db/matcher``) as of 8.0:

* A path yields a sequence of values (``ElementIterator``): a missing field yields
  one *missing* marker; an array met before the path ends is traversed (each
  subdocument element continues the path; a numeric component also selects the
  element at that index, and a nested array is entered only that way); an array at
  the end of the path yields its elements and then the array itself (not for
  ``$size`` and ``$elemMatch``, which see the whole array only). A path through an
  array of scalars yields nothing, so ``{"a.b": null}`` does not match
  ``{"a": [1]}`` (MongoDB 9.0 changed that; we follow 8.0).
* A condition matches when some yielded value satisfies it; ``$ne``, ``$nin``,
  ``$not`` and ``$exists: false`` are the negations of ``$eq``, ``$in``, the inner
  condition and ``$exists: true``.
* Equality and comparisons are type-bracketed: numbers compare with numbers
  (``1 == 1.0``, ``True != 1``, NaN equals NaN and is otherwise unordered), strings
  by code point, dates by instant (naive = UTC), embedded documents field by field
  in order, arrays element by element. ``null`` matches null and missing.

The compiler is a recursive descent over query documents and operator objects (this
module); the rest is one module per concept, imported in this order (no loops):
``_mongo_types`` (BSON type numbers, ``$type``), ``_mongo_element`` (single-value
tests), ``_mongo_paths`` (path traversal), ``_mongo_condition`` (compiled conditions
and their fast descriptors), ``_mongo_fields`` (the document predicate of a field),
``_mongo_operands`` (checking operator arguments).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from taskengine._values import date_instant, is_date_wrapper
from taskengine.errors import InvalidFilter
from taskengine.filters._inline import FIRST, Inline, as_inline, generate, some_element, with_inline
from taskengine.filters._mongo_condition import Cond, eq_fast, in_fast, regex_cond
from taskengine.filters._mongo_element import (
    CMP_OPS,
    cmp_test,
    eq_test,
    exists_test,
    in_test,
    mod_test,
    never,
    regex_test,
    size_test,
    type_test,
)
from taskengine.filters._mongo_fields import field_pred
from taskengine.filters._mongo_operands import (
    check_value,
    compile_regex,
    in_values,
    is_operator_object,
    mod_args,
    size_arg,
    truthy,
    validate_date_literal,
)
from taskengine.filters._mongo_types import type_code, type_codes
from taskengine.filters._predicates import (
    MISSING,
    Predicate,
    all_of,
    any_of,
    compile_each,
    fields,
    negate,
    one_field_literals,
)

__all__ = ["MISSING", "compile_mongo", "compile_regex", "type_code"]


_LOGICAL: Final = frozenset({"$and", "$or", "$nor"})
_KNOWN_UNSUPPORTED: Final = frozenset(
    {
        "$where",
        "$expr",
        "$text",
        "$jsonSchema",
        "$geoWithin",
        "$geoIntersects",
        "$near",
        "$nearSphere",
        "$bitsAllSet",
        "$bitsAnySet",
        "$bitsAllClear",
        "$bitsAnyClear",
        "$sampleRate",
        "$search",
        "$box",
        "$center",
        "$centerSphere",
        "$geometry",
        "$maxDistance",
        "$minDistance",
        "$polygon",
        "$comment",
        "$rand",
    }
)


def _compile_doc(spec: Mapping[str, Any], path: str) -> Predicate:
    """A query document: an AND of its field conditions and logical operators."""
    preds: list[Predicate] = []
    for key, value, where in fields(spec, path):
        if key.startswith("$"):
            if key in _LOGICAL:
                preds.append(_compile_logical(key, value, where))
            elif key == "$comment":
                continue
            elif key in _KNOWN_UNSUPPORTED:
                raise InvalidFilter(where, f"{key} is not supported")
            else:
                raise InvalidFilter(where, f"unknown top level operator: {key}")
            continue
        preds.append(_compile_field(key, value, where))
    return all_of(preds)


def _compile_logical(op: str, value: object, path: str) -> Predicate:
    same = one_field_literals(value) if op != "$and" else None
    if same is not None:  # {$or: [{f: 1}, {f: 2}]} is {f: {$in: [1, 2]}}: one set lookup
        either = _compile_field(same[0], {"$in": same[1]}, path)
        return either if op == "$or" else negate(either)
    preds = compile_each(
        value,
        path,
        _compile_doc,
        not_list=f"{op} must be an array",
        empty=f"{op} must be a nonempty array",
        not_object=f"{op} argument's entries must be objects",
    )
    if op == "$and":
        return all_of(preds)
    either = any_of(preds)
    if op == "$or":
        return either
    return negate(either)


def _compile_field(field: str, value: object, path: str) -> Predicate:
    if is_operator_object(value):
        conds = _compile_operators(value, path)  # type: ignore[arg-type]
    else:
        conds = [_literal_cond(value, path)]
    return field_pred(field, conds)


def _literal_cond(value: object, path: str) -> Cond:
    """``{field: value}``: equality, or a regex match when ``value`` is a regex."""
    check_value(value, path)
    validate_date_literal(value, path)
    if isinstance(value, re.Pattern):
        return regex_cond(compile_regex(value, None, path))
    return Cond("test", eq_test(value), fast=eq_fast(value))


def _compile_operators(ops: Mapping[str, Any], path: str) -> list[Cond]:
    """An operator object ``{"$gt": 1, "$lt": 5, ...}``: one condition per operator."""
    conds: list[Cond] = []
    if "$options" in ops and "$regex" not in ops:
        raise InvalidFilter(f"{path}.$options", "$options needs a $regex")
    for op, arg in ops.items():
        where = f"{path}.{op}"
        if not isinstance(op, str) or not op.startswith("$"):
            raise InvalidFilter(where, f"unknown operator: {op}")
        conds.extend(_compile_operator(op, arg, where, ops))
    return conds


def _compile_operator(op: str, arg: Any, path: str, ops: Mapping[str, Any]) -> list[Cond]:
    if op == "$eq" or op == "$ne":
        check_value(arg, path)
        validate_date_literal(arg, path)
        if op == "$ne" and isinstance(arg, re.Pattern):
            raise InvalidFilter(path, "can't have regex as arg to $ne")
        cond = Cond("test", eq_test(arg), fast=eq_fast(arg))
        return [cond] if op == "$eq" else [Cond("not", children=[cond])]
    if op in CMP_OPS:
        check_value(arg, path)
        validate_date_literal(arg, path)
        if isinstance(arg, re.Pattern):
            raise InvalidFilter(path, f"can't have a regex as arg to {op}")
        fast: tuple[Any, ...] | None = None
        if arg.__class__ in (int, float) and arg == arg:
            fast = ("cmp", op, arg)
        elif isinstance(arg, datetime) or is_date_wrapper(arg):
            fast = ("date", op, date_instant(arg))
        return [Cond("test", cmp_test(op, arg), fast=fast)]
    if op == "$in" or op == "$nin":
        values = in_values(arg, path, op)
        cond = Cond("test", in_test(values), fast=in_fast(values))
        return [cond] if op == "$in" else [Cond("not", children=[cond])]
    if op == "$exists":
        cond = Cond("test", exists_test)
        return [cond] if truthy(arg) else [Cond("not", children=[cond])]
    if op == "$type":
        return [Cond("test", type_test(type_codes(arg, path)))]
    if op == "$size":
        return [Cond("test", size_test(size_arg(arg, path)), expand=False)]
    if op == "$all":
        return _all_conds(arg, path)
    if op == "$elemMatch":
        return [_elem_match(arg, path)]
    if op == "$regex":
        return [regex_cond(compile_regex(arg, ops.get("$options"), path))]
    if op == "$options":
        return []  # consumed by $regex
    if op == "$mod":
        return [Cond("test", mod_test(*mod_args(arg, path)))]
    if op == "$not":
        return [_not_cond(arg, path)]
    if op in _KNOWN_UNSUPPORTED or op in _LOGICAL:
        raise InvalidFilter(path, f"{op} is not supported here")
    raise InvalidFilter(path, f"unknown operator: {op}")


def _all_conds(arg: object, path: str) -> list[Cond]:
    if arg.__class__ is not list:
        raise InvalidFilter(path, "$all needs an array")
    items: list[Any] = arg
    if not items:
        return [Cond("test", never)]
    elem = [isinstance(x, dict) and len(x) >= 1 and next(iter(x)) == "$elemMatch" for x in items]
    conds: list[Cond] = []
    if any(elem):
        if not all(elem):
            raise InvalidFilter(path, "$all/$elemMatch has to be consistent")
        for i, x in enumerate(items):
            where = f"{path}.{i}"
            if len(x) != 1:
                raise InvalidFilter(where, "$elemMatch in $all must be the only key")
            conds.append(_elem_match(x["$elemMatch"], f"{where}.$elemMatch"))
        return conds
    for i, x in enumerate(items):
        where = f"{path}.{i}"
        check_value(x, where)
        if is_operator_object(x):
            raise InvalidFilter(where, "no $ expressions in $all")
        conds.append(_literal_cond(x, where))
    return conds


def _not_cond(arg: object, path: str) -> Cond:
    if isinstance(arg, re.Pattern):
        return Cond("not", children=[Cond("test", regex_test(compile_regex(arg, None, path)))])
    if arg.__class__ is not dict:
        raise InvalidFilter(path, "$not needs a regex or a document")
    ops: dict[str, Any] = arg
    if not ops:
        raise InvalidFilter(path, "$not cannot be empty")
    for k in ops:
        if not (isinstance(k, str) and k.startswith("$")):
            raise InvalidFilter(f"{path}.{k}", f"unknown operator: {k}")
    if "$date" in ops:
        raise InvalidFilter(f"{path}.$date", "unknown operator: $date")
    return Cond("not", children=_compile_operators(ops, path))


_ELEM_OBJECT_OPS: Final = frozenset({"$and", "$or", "$nor", "$where", "$expr", "$text", "$comment"})


def _elem_match(arg: object, path: str) -> Cond:
    if arg.__class__ is not dict:
        raise InvalidFilter(path, "$elemMatch needs an object")
    spec: dict[str, Any] = arg
    first = next(iter(spec), None)
    if isinstance(first, str) and first.startswith("$") and first not in _ELEM_OBJECT_OPS:
        # value form: every operator applies to the same element, without traversal
        for k in spec:
            if not (isinstance(k, str) and k.startswith("$")):
                raise InvalidFilter(f"{path}.{k}", f"unknown operator: {k}")
        if "$date" in spec:
            raise InvalidFilter(f"{path}.$date", "unknown operator: $date")
        inner = all_of([c.scalar() for c in _compile_operators(spec, path)])

        def value_test(v: Any) -> bool:
            if v.__class__ is not list:
                return False
            for e in v:  # noqa: SIM110
                if inner(e):
                    return True
            return False

        loop = as_inline(some_element(inner, whole=False))
        inline = Inline(f"({FIRST}.__class__ is list and {loop.later()})", loop.env)
        return Cond("test", with_inline(value_test, inline), expand=False)
    sub = _compile_doc(spec, path)

    def object_test(v: Any) -> bool:
        if v.__class__ is not list:
            return False
        for e in v:
            k = e.__class__
            if k is dict:
                if len(e) == 1 and is_date_wrapper(e):
                    continue
                if sub(e):
                    return True
            elif k is list and sub({str(i): x for i, x in enumerate(e)}):
                return True
        return False

    return Cond("test", object_test, expand=False, fast=("elem", sub))


def compile_mongo(spec: Mapping[str, Any]) -> Predicate:
    """Compile a MongoDB query document into a predicate; raises only ``InvalidFilter``."""
    return generate(_compile_doc(spec, ""))
