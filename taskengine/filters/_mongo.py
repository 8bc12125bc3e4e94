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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from taskengine._values import (
    INT64_MAX,
    INT64_MIN,
    RANK_DATE,
    compare_values,
    date_instant,
    find_foreign,
    is_date_wrapper,
    type_rank,
)
from taskengine.errors import InvalidFilter
from taskengine.filters._predicates import (
    MISSING,
    Predicate,
    all_of,
    any_of,
    compile_each,
    equals,
    fields,
)

__all__ = ["MISSING", "compile_mongo", "compile_regex", "type_code"]

Test = Callable[[Any], bool]


_LOGICAL: Final = frozenset({"$and", "$or", "$nor"})
_KNOWN_UNSUPPORTED: Final = frozenset(
    {
        "$where", "$expr", "$text", "$jsonSchema", "$geoWithin", "$geoIntersects",
        "$near", "$nearSphere", "$bitsAllSet", "$bitsAnySet", "$bitsAllClear",
        "$bitsAnyClear", "$sampleRate", "$search", "$box", "$center", "$centerSphere",
        "$geometry", "$maxDistance", "$minDistance", "$polygon", "$comment", "$rand",
    }
)

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# $type aliases and codes (BSON type numbers).
TYPE_ALIASES: Final[dict[str, int]] = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5, "undefined": 6,
    "objectId": 7, "bool": 8, "date": 9, "null": 10, "regex": 11, "dbPointer": 12,
    "javascript": 13, "symbol": 14, "javascriptWithScope": 15, "int": 16,
    "timestamp": 17, "long": 18, "decimal": 19, "minKey": -1, "maxKey": 127,
}
_VALID_CODES: Final = frozenset(TYPE_ALIASES.values())
_NUMBER_CODES: Final = frozenset({1, 16, 18, 19})
_NUMBER_ALIAS: Final = -1000  # internal code for the "number" alias


def type_code(value: object) -> int:
    """The BSON type number of a document value (0 for missing or unknown)."""
    cls = value.__class__
    if cls is str:
        return 2
    if cls is bool:
        return 8
    if cls is int:
        return 16 if INT32_MIN <= value <= INT32_MAX else 18  # type: ignore[operator]
    if cls is float:
        return 1
    if value is None:
        return 10
    if cls is list:
        return 4
    if cls is dict:
        return 9 if is_date_wrapper(value) else 3
    if isinstance(value, datetime):
        return 9
    if isinstance(value, re.Pattern):
        return 11
    return 0


# ---------------------------------------------------------------------------- values


def _check_value(value: object, path: str) -> None:
    """Reject values outside the value model (compiled regexes are allowed here)."""
    found = find_foreign(value, path, _REGEX_LEAF)
    if found is not None:
        raise InvalidFilter(*found)


_REGEX_LEAF: Final = (re.Pattern,)


def _is_operator_object(value: object) -> bool:
    """A dict whose first key starts with ``$`` (and is not a date wrapper)."""
    if value.__class__ is not dict or not value:
        return False
    first = next(iter(value))
    if not (isinstance(first, str) and first.startswith("$")):
        return False
    return not (first == "$date" and len(value) == 1)


def _validate_date_literal(value: object, path: str) -> None:
    if value.__class__ is dict and "$date" in value and not is_date_wrapper(value):
        raise InvalidFilter(path, '"$date" needs an ISO-8601 date string and no other key')


def compile_regex(pattern: object, options: object, path: str) -> re.Pattern[str]:
    """Compile a ``$regex`` (a string or compiled pattern) with ``$options``."""
    flags = 0
    if options is not None:
        if not isinstance(options, str):
            raise InvalidFilter(path, "$options must be a string")
        for ch in options:
            if ch == "i":
                flags |= re.IGNORECASE
            elif ch == "m":
                flags |= re.MULTILINE
            elif ch == "s":
                flags |= re.DOTALL
            elif ch == "x":
                flags |= re.VERBOSE
            elif ch == "u":
                pass
            else:
                raise InvalidFilter(path, f"invalid flag in regex options: {ch!r}")
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            raise InvalidFilter(path, "a regex must be a str pattern")
        if options and (pattern.flags & ~re.UNICODE):
            raise InvalidFilter(path, "options set in both $regex and $options")
        if not flags:
            return pattern
        source = pattern.pattern
        flags |= pattern.flags
    elif isinstance(pattern, str):
        source = pattern
    else:
        raise InvalidFilter(path, "$regex has to be a string")
    if "\x00" in source:
        raise InvalidFilter(path, "regular expression cannot contain an embedded null byte")
    try:
        return re.compile(source, flags)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise InvalidFilter(path, f"invalid regular expression: {exc}") from None


# ----------------------------------------------------------------- single-value tests
#
# A test receives one value yielded by a path (or MISSING) and answers whether it
# satisfies the operator: MongoDB's ``matchesSingleElement``.


def _regex_test(rx: re.Pattern[str]) -> Test:
    search = rx.search

    def test(v: Any) -> bool:
        return v.__class__ is str and search(v) is not None

    return test


def _eq_test(c: object) -> Test:
    """``$eq c`` on one value (``null`` also matches a missing field)."""
    return equals(c, ordered=True)


_CMP_OPS: Final = ("$gt", "$gte", "$lt", "$lte")


def _cmp_test(op: str, c: object) -> Test:
    """``$gt/$gte/$lt/$lte c`` on one value (type-bracketed)."""
    cls = c.__class__
    inclusive = op in ("$gte", "$lte")
    if cls is int or cls is float:
        if c != c:  # NaN: only >=/<= NaN match, and only NaN
            if inclusive:
                return _eq_test(c)
            return _never
        num = c
        if op == "$gt":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v > num

        elif op == "$gte":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v >= num

        elif op == "$lt":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v < num

        else:

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v <= num

        return test
    if isinstance(c, str):
        s: str = c
        if op == "$gt":
            return lambda v: v.__class__ is str and v > s
        if op == "$gte":
            return lambda v: v.__class__ is str and v >= s
        if op == "$lt":
            return lambda v: v.__class__ is str and v < s
        return lambda v: v.__class__ is str and v <= s
    if c is None:
        return _eq_test(None) if inclusive else _never
    rank = type_rank(c)
    want = _CMP_WANT[op]
    if rank == RANK_DATE:
        instant = date_instant(c)
        assert instant is not None

        def date_test(v: Any) -> bool:
            k = v.__class__
            if k is datetime or k is dict or isinstance(v, datetime):
                d = date_instant(v)
                if d is None:
                    return False
                return (-1 if d < instant else (1 if d > instant else 0)) in want
            return False

        return date_test

    def generic(v: Any) -> bool:
        if v is MISSING or type_rank(v) != rank:
            return False
        return compare_values(v, c) in want

    return generic


_CMP_WANT: Final[dict[str, frozenset[int]]] = {
    "$gt": frozenset({1}),
    "$gte": frozenset({0, 1}),
    "$lt": frozenset({-1}),
    "$lte": frozenset({-1, 0}),
}


def _never(v: Any) -> bool:
    return False


def _exists_test(v: Any) -> bool:
    return v is not MISSING


def _in_test(values: Sequence[object]) -> Test:
    """``$in [...]`` on one value: equality with any literal, or any regex matching."""
    strs: set[str] = set()
    nums: set[float] = set()
    has_nan = has_true = has_false = has_null = False
    regexes: list[re.Pattern[str]] = []
    others: list[Test] = []
    for c in values:
        cls = c.__class__
        if cls is str:
            strs.add(c)  # type: ignore[arg-type]
        elif cls is bool:
            if c:
                has_true = True
            else:
                has_false = True
        elif cls is int or cls is float:
            if c != c:
                has_nan = True
            else:
                nums.add(c)  # type: ignore[arg-type]
        elif c is None:
            has_null = True
        elif isinstance(c, re.Pattern):
            regexes.append(c)
        else:
            others.append(_eq_test(c))
    fstrs = frozenset(strs)
    fnums = frozenset(nums)
    searches = tuple(rx.search for rx in regexes)
    rest = tuple(others)
    simple = not (has_nan or has_true or has_false or has_null or searches or rest)

    if simple:

        def fast(v: Any) -> bool:
            k = v.__class__
            if k is str:
                return v in fstrs
            if k is int or k is float:
                return v in fnums
            return False

        return fast

    def test(v: Any) -> bool:
        k = v.__class__
        if k is str:
            if v in fstrs:
                return True
            for search in searches:  # noqa: SIM110
                if search(v) is not None:
                    return True
            return False
        if k is int or k is float:
            return v in fnums or (has_nan and v != v)
        if k is bool:
            return has_true if v else has_false
        if v is None or v is MISSING:
            return has_null
        for t in rest:  # noqa: SIM110
            if t(v):
                return True
        return False

    return test


def _type_test(codes: frozenset[int]) -> Test:
    wants_number = _NUMBER_ALIAS in codes
    plain = codes - {_NUMBER_ALIAS}

    def test(v: Any) -> bool:
        if v is MISSING:
            return False
        code = type_code(v)
        return code in plain or (wants_number and code in _NUMBER_CODES)

    return test


def _size_test(n: int) -> Test:
    def test(v: Any) -> bool:
        return v.__class__ is list and len(v) == n

    return test


def _mod_test(divisor: int, remainder: int) -> Test:
    """``$mod``: the dividend is truncated toward zero; one not representable as an
    int64 (or NaN, infinite, not a number) never matches; C++ remainder sign."""
    ad = abs(divisor)

    def test(v: Any) -> bool:
        k = v.__class__
        if k is int:
            a: int = v
        elif k is float:
            if v != v or v >= 9.2233720368547758e18 or v < -9.2233720368547758e18:
                return False  # NaN, infinities and out-of-range doubles
            a = int(v)
        else:
            return False
        if a > INT64_MAX or a < INT64_MIN:
            return False
        r = abs(a) % ad
        return (r if a >= 0 else -r) == remainder

    return test


# --------------------------------------------------------------------- path walking


def _is_index(part: str) -> int:
    """The array index a path component selects, or -1 (MongoDB: all ASCII digits)."""
    if part and part.isascii() and part.isdigit():
        return int(part)
    return -1


def _make_walker(parts: tuple[str, ...], test: Test, expand: bool) -> Predicate:
    """``doc -> any(test(v) for v in values yielded by the path)``, short-circuiting."""
    n = len(parts)
    index = tuple(_is_index(p) for p in parts)
    # an index component only matches the element whose decimal name equals it
    index = tuple(
        i if i >= 0 and str(i) == p else (-2 if i >= 0 else -1)
        for i, p in zip(index, parts, strict=True)
    )

    def walk_obj(obj: Any, i: int) -> bool:
        # getFieldDottedOrArray, from component i of a document
        while True:
            v = obj.get(parts[i], MISSING)
            k = v.__class__
            if k is dict and not (len(v) == 1 and is_date_wrapper(v)):
                i += 1
                if i == n:
                    return test(v)
                obj = v
                continue
            if k is list:
                return walk_arr(v, i + 1)
            if v is MISSING or i + 1 == n:
                return test(v)
            return test(MISSING)

    def walk_arr(arr: list[Any], j: int) -> bool:
        if j == n:
            if expand:
                for e in arr:
                    if test(e):
                        return True
            return test(arr)
        idx = index[j]
        last = j + 1 == n
        for pos, e in enumerate(arr):
            k = e.__class__
            if k is dict and not (len(e) == 1 and is_date_wrapper(e)):
                if walk_obj(e, j):
                    return True
                if pos == idx:
                    if last:
                        if test(e):
                            return True
                    elif walk_obj(e, j + 1):
                        return True
            elif pos == idx:
                if last:
                    if test(e):
                        return True
                elif k is list and walk_arr(e, j + 1):
                    return True
        return False

    def walker(doc: Mapping[str, Any]) -> bool:
        try:
            return walk_obj(doc, 0)
        except RecursionError:  # absurdly deep documents: treat as no match
            return False

    return walker


# ----------------------------------------------------------------- field conditions


class _Cond:
    """One compiled condition on a path: a single-value test, or a negation.

    ``scalar(v)`` is the whole condition on one value (``matchesSingleElement``);
    ``for_path(parts)`` is the document predicate for the path.
    """

    __slots__ = ("children", "expand", "fast", "kind", "test")

    def __init__(
        self,
        kind: str,
        test: Test | None = None,
        expand: bool = True,
        children: Sequence[_Cond] = (),
        fast: tuple[Any, ...] | None = None,
    ) -> None:
        self.kind = kind  # "test" | "not"
        self.test = test
        self.expand = expand
        self.children = tuple(children)
        self.fast = fast  # what the test is, for the specialised top-level closures

    def scalar(self) -> Test:
        if self.kind == "test":
            assert self.test is not None
            return self.test
        inner = all_of([c.scalar() for c in self.children])

        def neg(v: Any) -> bool:
            return not inner(v)

        return neg

    def for_array(self) -> Callable[[list[Any]], bool]:
        """The condition when a one-component path holds an array ``arr``."""
        if self.kind == "test":
            t = self.test
            assert t is not None
            if self.expand:

                def on_arr(arr: list[Any]) -> bool:
                    for e in arr:
                        if t(e):
                            return True
                    return t(arr)

                return on_arr
            return t
        inner = all_of([c.for_array() for c in self.children])
        return lambda arr: not inner(arr)

    def for_path(self, parts: tuple[str, ...]) -> Predicate:
        if self.kind == "test":
            assert self.test is not None
            return _make_walker(parts, self.test, self.expand)
        inner = all_of([c.for_path(parts) for c in self.children])
        return lambda doc: not inner(doc)


# ------------------------------------------------------------------------- compiler


def _split(field: str) -> tuple[str, ...]:
    return tuple(field.split("."))


def _field_pred(field: str, conds: Sequence[_Cond]) -> Predicate:
    """The document predicate for ``field`` satisfying every condition in ``conds``."""
    parts = _split(field)
    if len(parts) == 1:
        return _top_level_pred(parts[0], conds)
    general = all_of([c.for_path(parts) for c in conds])
    scalar = all_of([c.scalar() for c in conds])
    head, mids = parts[0], parts[1:]

    def pred(doc: Mapping[str, Any]) -> bool:
        # fast path: a chain of plain subdocuments; any array falls back to the walk
        v = doc.get(head, MISSING)
        for p in mids:
            k = v.__class__
            if k is dict and not (len(v) == 1 and is_date_wrapper(v)):
                v = v.get(p, MISSING)
            elif k is list:
                return general(doc)
            else:
                return scalar(MISSING)
        if v.__class__ is list:
            return general(doc)
        return scalar(v)

    return pred


def _top_level_pred(key: str, conds: Sequence[_Cond]) -> Predicate:
    scalar = all_of([c.scalar() for c in conds])
    on_arr = all_of([c.for_array() for c in conds])
    miss = MISSING
    special = _specialised(key, conds, on_arr)
    if special is not None:
        return special

    def pred(doc: Mapping[str, Any]) -> bool:
        v = doc.get(key, miss)
        if v.__class__ is list:
            return on_arr(v)
        return scalar(v)

    return pred


_RANGE_BUILDERS: Final[dict[tuple[str, str], Callable[[float, float], Test]]] = {
    ("$gt", "$lt"): lambda lo, hi: lambda v: lo < v < hi,
    ("$gt", "$lte"): lambda lo, hi: lambda v: lo < v <= hi,
    ("$gte", "$lt"): lambda lo, hi: lambda v: lo <= v < hi,
    ("$gte", "$lte"): lambda lo, hi: lambda v: lo <= v <= hi,
}


def _specialised(
    key: str, conds: Sequence[_Cond], on_arr: Callable[[list[Any]], bool]
) -> Predicate | None:
    """Inline closures for the common one-component conditions (no extra calls)."""
    fasts = [c.fast for c in conds]
    if not fasts or any(f is None for f in fasts):
        return None
    kinds = tuple(f[0] for f in fasts)  # type: ignore[index]
    if kinds == ("eq",):
        c = fasts[0][1]  # type: ignore[index]
        if c.__class__ is str:

            def eq_str(doc: Mapping[str, Any]) -> bool:
                v: Any = doc.get(key)
                if v.__class__ is list:
                    return c in v
                return v == c  # type: ignore[no-any-return]  # only an equal str equals a str

            return eq_str
        if c.__class__ is int or c.__class__ is float:

            def eq_num(doc: Mapping[str, Any]) -> bool:
                v: Any = doc.get(key)
                if v == c:
                    return v.__class__ is not bool
                if v.__class__ is list:
                    return on_arr(v)
                return False

            return eq_num
        if c is None:

            def eq_null(doc: Mapping[str, Any]) -> bool:
                v: Any = doc.get(key)
                if v is None:
                    return True
                if v.__class__ is list:
                    return None in v
                return False

            return eq_null
        return None
    if kinds == ("in",):
        strs, nums = fasts[0][1], fasts[0][2]  # type: ignore[index]

        def in_set(doc: Mapping[str, Any]) -> bool:
            v: Any = doc.get(key)
            k = v.__class__
            if k is str:
                return v in strs
            if k is int or k is float:
                return v in nums
            if k is list:
                return on_arr(v)
            return False

        return in_set
    if kinds == ("prefix",) or kinds == ("regex",):
        kind, arg = fasts[0]  # type: ignore[misc]
        if kind == "prefix":
            prefix: str = arg

            def has_prefix(doc: Mapping[str, Any]) -> bool:
                v: Any = doc.get(key)
                if v.__class__ is str:
                    return v.startswith(prefix)
                if v.__class__ is list:
                    return on_arr(v)
                return False

            return has_prefix
        search = arg

        def matches_regex(doc: Mapping[str, Any]) -> bool:
            v: Any = doc.get(key)
            if v.__class__ is str:
                return search(v) is not None
            if v.__class__ is list:
                return on_arr(v)
            return False

        return matches_regex
    if kinds == ("elem",):
        sub = fasts[0][1]  # type: ignore[index]

        def elem_match(doc: Mapping[str, Any]) -> bool:
            v: Any = doc.get(key)
            if v.__class__ is list:
                for e in v:
                    if e.__class__ is dict:
                        if sub(e) and not (len(e) == 1 and is_date_wrapper(e)):
                            return True
                    elif e.__class__ is list and on_arr([e]):
                        return True
            return False

        return elem_match
    if kinds in (("cmp",), ("cmp", "cmp")):
        ops = {f[1]: f[2] for f in fasts}  # type: ignore[index]
        if len(ops) != len(fasts):
            return None
        test: Test
        if len(ops) == 1:
            ((op, bound),) = ops.items()
            test = {
                "$gt": lambda v: v > bound,
                "$gte": lambda v: v >= bound,
                "$lt": lambda v: v < bound,
                "$lte": lambda v: v <= bound,
            }[op]
        else:
            lows = [o for o in ops if o in ("$gt", "$gte")]
            highs = [o for o in ops if o in ("$lt", "$lte")]
            if len(lows) != 1 or len(highs) != 1:
                return None
            test = _RANGE_BUILDERS[(lows[0], highs[0])](ops[lows[0]], ops[highs[0]])

        def num_range(doc: Mapping[str, Any]) -> bool:
            v: Any = doc.get(key)
            k = v.__class__
            if k is int or k is float:
                return test(v)
            if k is list:
                return on_arr(v)
            return False

        if len(ops) == 2:
            lo_op, hi_op = lows[0], highs[0]
            lo, hi = ops[lo_op], ops[hi_op]
            if (lo_op, hi_op) == ("$gte", "$lt"):

                def num_half_open(doc: Mapping[str, Any]) -> bool:
                    v: Any = doc.get(key)
                    k = v.__class__
                    if k is int or k is float:
                        return lo <= v < hi  # type: ignore[no-any-return]
                    if k is list:
                        return on_arr(v)
                    return False

                return num_half_open
        return num_range
    return None


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
    return lambda doc: not either(doc)


def _compile_field(field: str, value: object, path: str) -> Predicate:
    if _is_operator_object(value):
        conds = _compile_operators(value, path)  # type: ignore[arg-type]
    else:
        conds = [_literal_cond(value, path)]
    return _field_pred(field, conds)


def _literal_cond(value: object, path: str) -> _Cond:
    """``{field: value}``: equality, or a regex match when ``value`` is a regex."""
    _check_value(value, path)
    _validate_date_literal(value, path)
    if isinstance(value, re.Pattern):
        return _regex_cond(compile_regex(value, None, path))
    return _Cond("test", _eq_test(value), fast=_eq_fast(value))


def _eq_fast(c: object) -> tuple[Any, ...] | None:
    cls = c.__class__
    if cls is str or c is None or ((cls is int or cls is float) and c == c):
        return ("eq", c)
    return None


_REGEX_SPECIAL: Final = frozenset("\\.^$*+?{}[]|()")


def _regex_cond(rx: re.Pattern[str]) -> _Cond:
    """A regex condition; a plain ``^literal`` pattern becomes a ``startswith``."""
    source = rx.pattern
    fast: tuple[Any, ...] = ("regex", rx.search)
    if (
        rx.flags & ~re.UNICODE == 0
        and source.startswith("^")
        and not any(ch in _REGEX_SPECIAL for ch in source[1:])
    ):
        fast = ("prefix", source[1:])
    return _Cond("test", _regex_test(rx), fast=fast)


def _compile_operators(ops: Mapping[str, Any], path: str) -> list[_Cond]:
    """An operator object ``{"$gt": 1, "$lt": 5, ...}``: one condition per operator."""
    conds: list[_Cond] = []
    if "$options" in ops and "$regex" not in ops:
        raise InvalidFilter(f"{path}.$options", "$options needs a $regex")
    for op, arg in ops.items():
        where = f"{path}.{op}"
        if not isinstance(op, str) or not op.startswith("$"):
            raise InvalidFilter(where, f"unknown operator: {op}")
        conds.extend(_compile_operator(op, arg, where, ops))
    return conds


def _compile_operator(op: str, arg: Any, path: str, ops: Mapping[str, Any]) -> list[_Cond]:
    if op == "$eq" or op == "$ne":
        _check_value(arg, path)
        _validate_date_literal(arg, path)
        if op == "$ne" and isinstance(arg, re.Pattern):
            raise InvalidFilter(path, "can't have regex as arg to $ne")
        cond = _Cond("test", _eq_test(arg), fast=_eq_fast(arg))
        return [cond] if op == "$eq" else [_Cond("not", children=[cond])]
    if op in _CMP_OPS:
        _check_value(arg, path)
        _validate_date_literal(arg, path)
        if isinstance(arg, re.Pattern):
            raise InvalidFilter(path, f"can't have a regex as arg to {op}")
        fast = None
        if arg.__class__ in (int, float) and arg == arg:
            fast = ("cmp", op, arg)
        return [_Cond("test", _cmp_test(op, arg), fast=fast)]
    if op == "$in" or op == "$nin":
        values = _in_values(arg, path, op)
        cond = _Cond("test", _in_test(values), fast=_in_fast(values))
        return [cond] if op == "$in" else [_Cond("not", children=[cond])]
    if op == "$exists":
        cond = _Cond("test", _exists_test)
        return [cond] if _truthy(arg) else [_Cond("not", children=[cond])]
    if op == "$type":
        return [_Cond("test", _type_test(_type_codes(arg, path)))]
    if op == "$size":
        return [_Cond("test", _size_test(_size_arg(arg, path)), expand=False)]
    if op == "$all":
        return _all_conds(arg, path)
    if op == "$elemMatch":
        return [_elem_match(arg, path)]
    if op == "$regex":
        return [_regex_cond(compile_regex(arg, ops.get("$options"), path))]
    if op == "$options":
        return []  # consumed by $regex
    if op == "$mod":
        return [_Cond("test", _mod_test(*_mod_args(arg, path)))]
    if op == "$not":
        return [_not_cond(arg, path)]
    if op in _KNOWN_UNSUPPORTED or op in _LOGICAL:
        raise InvalidFilter(path, f"{op} is not supported here")
    raise InvalidFilter(path, f"unknown operator: {op}")


def _in_fast(values: Sequence[object]) -> tuple[Any, ...] | None:
    """``("in", strs, nums)`` when every value is a string or a non-NaN number."""
    strs = frozenset(v for v in values if v.__class__ is str)
    nums = frozenset(v for v in values if v.__class__ in (int, float) and v == v)
    if len(strs) + len(nums) != len(set(map(_in_key, values))):
        return None
    return ("in", strs, nums)


def _in_key(v: object) -> object:
    cls = v.__class__
    if cls is str or ((cls is int or cls is float) and v == v):
        return (cls is str, v)
    return ("other", id(v))


def _truthy(arg: object) -> bool:
    """BSON ``trueValue``: false, null, 0 and NaN are false; everything else true."""
    if arg is None or arg is False:
        return False
    if arg.__class__ in (int, float):
        return bool(arg) and arg == arg
    return True


def _in_values(arg: object, path: str, op: str) -> list[Any]:
    if arg.__class__ is not list:
        raise InvalidFilter(path, f"{op} needs an array")
    values: list[Any] = arg
    for i, v in enumerate(values):
        where = f"{path}.{i}"
        _check_value(v, where)
        if _is_operator_object(v):
            raise InvalidFilter(where, f"cannot nest $ under {op}")
        _validate_date_literal(v, where)
        if isinstance(v, re.Pattern):
            compile_regex(v, None, where)
    return values


def _type_codes(arg: object, path: str) -> frozenset[int]:
    items = arg if arg.__class__ is list else [arg]
    if not items:
        raise InvalidFilter(path, "$type must match at least one type")
    codes: set[int] = set()
    for i, t in enumerate(items):
        where = f"{path}.{i}" if arg.__class__ is list else path
        if isinstance(t, str):
            if t == "number":
                codes.add(_NUMBER_ALIAS)
            elif t in TYPE_ALIASES:
                codes.add(TYPE_ALIASES[t])
            else:
                raise InvalidFilter(where, f"unknown type name alias: {t}")
        elif t.__class__ in (int, float):
            if t != t or t in (math.inf, -math.inf) or int(t) != t:
                raise InvalidFilter(where, f"invalid numerical type code: {t}")
            if int(t) not in _VALID_CODES:
                raise InvalidFilter(where, f"invalid numerical type code: {t}")
            codes.add(int(t))
        else:
            raise InvalidFilter(where, "type must be represented as a number or a string")
    return frozenset(codes)


def _size_arg(arg: object, path: str) -> int:
    cls = arg.__class__
    if cls is int:
        size: int = arg  # type: ignore[assignment]
    elif cls is float:
        f: float = arg  # type: ignore[assignment]
        if f != f or f in (math.inf, -math.inf) or int(f) != f:
            raise InvalidFilter(path, "$size must be a whole number")
        size = int(f)
    else:
        raise InvalidFilter(path, "$size needs a number")
    if size < 0:
        raise InvalidFilter(path, "$size may not be negative")
    if size > INT32_MAX:
        raise InvalidFilter(path, "$size must be representable as a 32-bit integer")
    return size


def _mod_args(arg: object, path: str) -> tuple[int, int]:
    if arg.__class__ is not list:
        raise InvalidFilter(path, "malformed mod, needs to be an array")
    items: list[Any] = arg
    if len(items) < 2:
        raise InvalidFilter(path, "malformed mod, not enough elements")
    if len(items) > 2:
        raise InvalidFilter(path, "malformed mod, too many elements")
    out: list[int] = []
    for name, x in zip(("divisor", "remainder"), items, strict=True):
        if x.__class__ not in (int, float):
            raise InvalidFilter(path, f"malformed mod, {name} not a number")
        if x != x or x in (math.inf, -math.inf):
            raise InvalidFilter(path, f"malformed mod, {name} value is invalid (NaN or Infinity)")
        if not -(2.0**63) <= x < 2.0**63:
            raise InvalidFilter(
                path, f"malformed mod, {name} value is invalid (out of bounds for an int64)"
            )
        out.append(int(x))
    if out[0] == 0:
        raise InvalidFilter(path, "divisor cannot be 0")
    return out[0], out[1]


def _all_conds(arg: object, path: str) -> list[_Cond]:
    if arg.__class__ is not list:
        raise InvalidFilter(path, "$all needs an array")
    items: list[Any] = arg
    if not items:
        return [_Cond("test", _never)]
    elem = [
        isinstance(x, dict) and len(x) >= 1 and next(iter(x)) == "$elemMatch" for x in items
    ]
    conds: list[_Cond] = []
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
        _check_value(x, where)
        if _is_operator_object(x):
            raise InvalidFilter(where, "no $ expressions in $all")
        conds.append(_literal_cond(x, where))
    return conds


def _not_cond(arg: object, path: str) -> _Cond:
    if isinstance(arg, re.Pattern):
        return _Cond("not", children=[_Cond("test", _regex_test(compile_regex(arg, None, path)))])
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
    return _Cond("not", children=_compile_operators(ops, path))


_ELEM_OBJECT_OPS: Final = frozenset({"$and", "$or", "$nor", "$where", "$expr", "$text", "$comment"})


def _elem_match(arg: object, path: str) -> _Cond:
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

        return _Cond("test", value_test, expand=False)
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

    return _Cond("test", object_test, expand=False, fast=("elem", sub))


def compile_mongo(spec: Mapping[str, Any]) -> Predicate:
    """Compile a MongoDB query document into a predicate; raises only ``InvalidFilter``."""
    return _compile_doc(spec, "")

