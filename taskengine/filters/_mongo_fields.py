"""Field predicates of the ``mongo`` dialect: the document predicate of one field's conditions.

Every condition on a field is evaluated against the same path. The predicate tries
the cheap shapes first: a one-component path whose conditions carry fast descriptors
becomes one inlined closure; a dotted path through plain subdocuments is followed
directly; anything meeting an array falls back to the full walk of
:mod:`taskengine.filters._mongo_paths`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from taskengine._values import is_date_wrapper
from taskengine.filters._mongo_condition import Cond
from taskengine.filters._mongo_element import Test
from taskengine.filters._predicates import MISSING, Predicate, all_of

__all__ = ["field_pred"]


def _split(field: str) -> tuple[str, ...]:
    return tuple(field.split("."))


def field_pred(field: str, conds: Sequence[Cond]) -> Predicate:
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


def _top_level_pred(key: str, conds: Sequence[Cond]) -> Predicate:
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
    key: str, conds: Sequence[Cond], on_arr: Callable[[list[Any]], bool]
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
