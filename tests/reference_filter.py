"""A slow, obviously-correct evaluator of the mongo dialect, for property tests.

Written independently of ``taskengine.filters._mongo``: it materialises the list of values a
path yields (a transcription of MongoDB's ``BSONElementIterator``), then applies each
operator to that list literally. It assumes the spec is valid (the compiler decides
validity) and shares only the value order/equality of ``taskengine._values``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from taskengine._values import bson_equal, compare_values, is_date_wrapper, type_rank

MISSING = object()

ALIASES = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}


def is_doc(v: Any) -> bool:
    """A subdocument (a dict that is not a date wrapper)."""
    return isinstance(v, dict) and not is_date_wrapper(v)


def path_values(doc: Any, parts: list[str], expand: bool) -> list[Any]:
    """Every value the path yields, in MongoDB's order (MISSING for EOO)."""
    out: list[Any] = []
    from_doc(doc, parts, expand, out)
    return out


def from_doc(doc: Any, parts: list[str], expand: bool, out: list[Any]) -> None:
    """getFieldDottedOrArray, then iterate."""
    cur = doc
    i = 0
    while True:
        if parts[i] not in cur:
            out.append(MISSING)
            return
        v = cur[parts[i]]
        if isinstance(v, list):
            from_array(v, parts, i + 1, expand, out)
            return
        if is_doc(v):
            if i + 1 == len(parts):
                out.append(v)
                return
            cur = v
            i += 1
            continue
        out.append(v if i + 1 == len(parts) else MISSING)
        return


def from_array(arr: list[Any], parts: list[str], j: int, expand: bool, out: list[Any]) -> None:
    """The IN_ARRAY state: elements with the rest of the path from component ``j``."""
    if j == len(parts):
        if expand:
            out.extend(arr)
        out.append(arr)
        return
    piece = parts[j]
    numeric = piece != "" and all(c in "0123456789" for c in piece)
    for pos, e in enumerate(arr):
        offset = numeric and str(pos) == piece
        if is_doc(e):
            from_doc(e, parts[j:], expand, out)
            if offset:
                if j + 1 == len(parts):
                    out.append(e)
                else:
                    from_doc(e, parts[j + 1 :], expand, out)
        elif offset:
            if j + 1 == len(parts):
                out.append(e)
            elif isinstance(e, list):
                from_array(e, parts, j + 1, expand, out)


def rank(v: Any) -> int:
    """Type rank; MISSING ranks as nothing."""
    return -1 if v is MISSING else type_rank(v)


def eq(v: Any, c: Any) -> bool:
    """matchesSingleElement for $eq."""
    if c is None:
        return v is None or v is MISSING
    if v is MISSING:
        return False
    if isinstance(c, re.Pattern):
        return isinstance(v, re.Pattern) and v.pattern == c.pattern and v.flags == c.flags
    return rank(v) == rank(c) and bson_equal(v, c)


def cmp(v: Any, op: str, c: Any) -> bool:
    """matchesSingleElement for $gt/$gte/$lt/$lte."""
    if c is None:
        return op in ("$gte", "$lte") and (v is None or v is MISSING)
    if v is MISSING or rank(v) != rank(c):
        return False
    if (isinstance(c, float) and math.isnan(c)) or (isinstance(v, float) and math.isnan(v)):
        both = isinstance(c, float) and math.isnan(c) and isinstance(v, float) and math.isnan(v)
        return both and op in ("$gte", "$lte")
    r = compare_values(v, c)
    return {"$gt": r > 0, "$gte": r >= 0, "$lt": r < 0, "$lte": r <= 0}[op]


def regex_of(pattern: Any, options: Any = None) -> re.Pattern[str]:
    """The compiled regex for $regex/$options."""
    if isinstance(pattern, re.Pattern):
        if not options:
            return pattern
        pattern = pattern.pattern
    flags = 0
    for ch in options or "":
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X, "u": 0}[ch]
    return re.compile(pattern, flags)


def regex_match(v: Any, rx: re.Pattern[str]) -> bool:
    """Regexes match strings only."""
    return isinstance(v, str) and rx.search(v) is not None


def in_list(v: Any, values: list[Any]) -> bool:
    """matchesSingleElement for $in."""
    for c in values:
        if isinstance(c, re.Pattern):
            if regex_match(v, c):
                return True
        elif eq(v, c):
            return True
    return False


def code_of(v: Any) -> int:
    """BSON type number."""
    if v is None:
        return 10
    if isinstance(v, bool):
        return 8
    if isinstance(v, int):
        return 16 if -(2**31) <= v < 2**31 else 18
    if isinstance(v, float):
        return 1
    if isinstance(v, str):
        return 2
    if isinstance(v, list):
        return 4
    if isinstance(v, datetime) or is_date_wrapper(v):
        return 9
    if isinstance(v, dict):
        return 3
    return 0


def type_match(v: Any, arg: Any) -> bool:
    """matchesSingleElement for $type."""
    if v is MISSING:
        return False
    wanted = arg if isinstance(arg, list) else [arg]
    code = code_of(v)
    for t in wanted:
        if t == "number" and code in (1, 16, 18, 19):
            return True
        if isinstance(t, str) and t != "number" and ALIASES[t] == code:
            return True
        if not isinstance(t, str) and int(t) == code:
            return True
    return False


def trunc(x: float) -> int:
    """Truncate toward zero, saturating at int64."""
    lo, hi = -(2**63), 2**63 - 1
    if isinstance(x, float) and (x >= 2.0**63 or x < -(2.0**63)):
        return hi if x > 0 else lo
    return max(lo, min(hi, int(x)))


def mod_match(v: Any, arg: list[Any]) -> bool:
    """matchesSingleElement for $mod (C++ truncated remainder)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return False
    if not -(2**63) <= v < 2**63:
        return False
    a, d, r = trunc(v), trunc(arg[0]), trunc(arg[1])
    rem = abs(a) - abs(d) * (abs(a) // abs(d))
    return (rem if a >= 0 else -rem) == r


def truthy(x: Any) -> bool:
    """BSON trueValue."""
    if x is None or x is False:
        return False
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x != 0 and x == x
    return True


def is_operator_object(v: Any) -> bool:
    """A dict whose first key starts with $ (not a date wrapper)."""
    return (
        isinstance(v, dict)
        and len(v) > 0
        and next(iter(v)).startswith("$")
        and not is_date_wrapper(v)
    )


def single(v: Any, op: str, arg: Any, ops: dict[str, Any]) -> bool:
    """One operator on one value, without any traversal (matchesSingleElement)."""
    if op == "$eq":
        return eq(v, arg)
    if op == "$ne":
        return not eq(v, arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return cmp(v, op, arg)
    if op == "$in":
        return in_list(v, arg)
    if op == "$nin":
        return not in_list(v, arg)
    if op == "$exists":
        return (v is not MISSING) == truthy(arg)
    if op == "$type":
        return type_match(v, arg)
    if op == "$size":
        return isinstance(v, list) and len(v) == int(arg)
    if op == "$regex":
        return regex_match(v, regex_of(arg, ops.get("$options")))
    if op == "$options":
        return True
    if op == "$mod":
        return mod_match(v, arg)
    if op == "$all":
        return all(
            single(v, "$eq", x, {}) if not isinstance(x, re.Pattern) else regex_match(v, x)
            for x in arg
        ) and bool(arg)
    if op == "$elemMatch":
        return elem_match(v, arg)
    if op == "$not":
        if isinstance(arg, re.Pattern):
            return not regex_match(v, arg)
        return not all(single(v, k, a, arg) for k, a in arg.items())
    raise AssertionError(op)


def elem_match(v: Any, arg: dict[str, Any]) -> bool:
    """$elemMatch on one value."""
    if not isinstance(v, list):
        return False
    first = next(iter(arg), None)
    value_form = (
        first is not None and first.startswith("$") and first not in ("$and", "$or", "$nor")
    )
    for e in v:
        if value_form:
            if all(single(e, k, a, arg) for k, a in arg.items()):
                return True
        elif is_doc(e):
            if evaluate(arg, e):
                return True
        elif isinstance(e, list) and evaluate(arg, {str(i): x for i, x in enumerate(e)}):
            return True
    return False


NO_EXPAND = ("$size", "$elemMatch")


def field_op(doc: Any, parts: list[str], op: str, arg: Any, ops: dict[str, Any]) -> bool:
    """One operator on a path: negations wrap the positive form over the whole path."""
    if op == "$ne":
        return not field_op(doc, parts, "$eq", arg, ops)
    if op == "$nin":
        return not field_op(doc, parts, "$in", arg, ops)
    if op == "$exists" and not truthy(arg):
        return not field_op(doc, parts, "$exists", True, ops)
    if op == "$not":
        if isinstance(arg, re.Pattern):
            return not any(regex_match(v, arg) for v in path_values(doc, parts, True))
        return not all(field_op(doc, parts, k, a, arg) for k, a in arg.items())
    if op == "$all":
        if not arg:
            return False
        return all(
            field_op(doc, parts, "$elemMatch", x["$elemMatch"], {})
            if isinstance(x, dict) and "$elemMatch" in x
            else (
                any(regex_match(v, x) for v in path_values(doc, parts, True))
                if isinstance(x, re.Pattern)
                else field_op(doc, parts, "$eq", x, {})
            )
            for x in arg
        )
    values = path_values(doc, parts, op not in NO_EXPAND)
    return any(single(v, op, arg, ops) for v in values)


def evaluate(spec: dict[str, Any], doc: Any) -> bool:
    """Whether ``doc`` matches the (valid) mongo ``spec``."""
    for key, value in spec.items():
        if key == "$and":
            ok = all(evaluate(s, doc) for s in value)
        elif key == "$or":
            ok = any(evaluate(s, doc) for s in value)
        elif key == "$nor":
            ok = not any(evaluate(s, doc) for s in value)
        elif key == "$comment":
            ok = True
        else:
            parts = key.split(".")
            if is_operator_object(value):
                ok = all(field_op(doc, parts, op, arg, value) for op, arg in value.items())
            elif isinstance(value, re.Pattern):
                ok = any(regex_match(v, value) for v in path_values(doc, parts, True))
            else:
                ok = field_op(doc, parts, "$eq", value, {})
        if not ok:
            return False
    return True
