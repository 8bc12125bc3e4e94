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
from taskengine.filters._inline import (
    ARG,
    FIRST,
    Inline,
    as_inline,
    build,
    constant,
    date_compare,
    fresh,
    inlining,
    with_inline,
)
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

    if not inlining():
        return pred
    return with_inline(pred, _dotted_inline(parts, general, scalar))


def _dotted_inline(parts: tuple[str, ...], general: Predicate, scalar: Test) -> Inline:
    """``pred`` of :func:`field_pred` as one expression (the walk stays a call)."""
    g = fresh("walk")
    env: dict[str, object] = {g: general}
    sc = as_inline(scalar)
    env.update(sc.env)
    on_missing = constant(scalar(MISSING))
    holder = FIRST
    opened: list[str] = []
    for i, part in enumerate(parts):
        k, v = fresh("key"), fresh("v")
        env[k] = part
        fetch = f"({v} := {holder}.get({k}, _MISSING))"
        if i == len(parts) - 1:
            opened.append(f"({g}({ARG}) if {fetch}.__class__ is list else {sc.on(v, v)})")
        else:
            opened.append(
                f'(@ if ({fetch}.__class__ is dict and ("$date" not in {v}'
                f" or not _is_date_wrapper({v}))) else ({g}({ARG}) if {v}.__class__ is list"
                f" else {on_missing}))"
            )
        holder = v
    expr = opened[-1]
    for outer in reversed(opened[:-1]):
        expr = outer.replace("@", expr, 1)
    return Inline(expr, env, size=len(parts))


def _top_level_pred(key: str, conds: Sequence[Cond]) -> Predicate:
    scalar = all_of([c.scalar() for c in conds])
    on_arr = all_of([c.for_array() for c in conds])
    miss = MISSING
    special = _specialised(key, conds, on_arr)
    if special is not None:
        if not inlining():
            return special
        return with_inline(special, _fast_inline(key, conds, on_arr))

    def pred(doc: Mapping[str, Any]) -> bool:
        v = doc.get(key, miss)
        if v.__class__ is list:
            return on_arr(v)
        return scalar(v)

    if not inlining():
        return pred
    date = _date_inline(key, conds, on_arr, scalar)
    if date is not None:
        return with_inline(pred, date)
    k, v = fresh("key"), fresh("v")
    arr, sc = as_inline(on_arr), as_inline(scalar)
    inline = Inline(
        f"({arr.on(v, v)} if ({v} := {FIRST}.get({k}, _MISSING)).__class__ is list"
        f" else {sc.on(v, v)})",
        {k: key, **arr.env, **sc.env},
    )
    return with_inline(pred, inline)


def _date_inline(
    key: str, conds: Sequence[Cond], on_arr: Callable[[Any], bool], scalar: Test
) -> Inline | None:
    """Comparisons of a top-level field with dates (``("date", op, instant)`` descriptors),
    as fast as a hand-written comparison of ``datetime`` objects."""
    fasts = [c.fast for c in conds]
    if not fasts or any(f is None or f[0] != "date" for f in fasts):
        return None
    ops = [(_PY_OPS[f[1]], f[2]) for f in fasts]  # type: ignore[index]

    def on_value(v: Any) -> bool:
        return on_arr(v) if v.__class__ is list else scalar(v)

    test = date_compare(ops, on_value)
    if test is None:
        return None
    k, v = fresh("key"), fresh("v")
    return Inline(test.on(f"({v} := {FIRST}.get({k}, _MISSING))", v), {k: key, **test.env})


_PY_OPS: Final[dict[str, str]] = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FLIPPED: Final[dict[str, str]] = {"$gt": "<", "$gte": "<="}


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


def _fast_inline(
    key: str, conds: Sequence[Cond], on_arr: Callable[[list[Any]], bool]
) -> Inline | None:
    """The closure :func:`_specialised` made for ``conds``, as one expression."""
    fasts: list[tuple[Any, ...]] = [c.fast for c in conds]  # type: ignore[misc]
    kind = fasts[0][0]
    k, v, t = fresh("key"), fresh("v"), fresh("t")
    arr = as_inline(on_arr)
    env: dict[str, object] = {k: key, **arr.env}
    on_list = f"({v}.__class__ is list and {arr.on(v, v)})"
    get = f"({v} := {FIRST}.get({k}))"
    if kind == "eq":
        c = fasts[0][1]
        name = fresh("c")
        env[name] = c
        if c.__class__ is str:
            expr = f"({get} == {name} or ({v}.__class__ is list and {name} in {v}))"
        elif c is None:
            expr = f"({get} is None or ({v}.__class__ is list and None in {v}))"
        else:
            expr = f"(({get} == {name} and {v}.__class__ is not bool) or {on_list})"
    elif kind == "in":
        strs, nums = fasts[0][1], fasts[0][2]
        ss, nn = fresh("strs"), fresh("nums")
        env[ss], env[nn] = strs, nums
        rest = f"({t} is list and {arr.on(v, v)})"
        if nums:
            rest = f"((({t} is int or {t} is float) and {v} in {nn}) or {rest})"
        expr = f"({v} in {ss} if ({t} := {get}.__class__) is str else {rest})"
        # on its own: the loop over an array inlined too (an array is never in the sets)
        e = fresh("e")
        element = f"{e} in {ss}" if not nums else f"{e} in ({ss} if {t} is str else {nn})"
        kinds = f"{t} is str or {t} is int or {t} is float" if nums else f"{t} is str"
        body = (
            f"    {v} = {ARG}.get({k})\n"
            f"    {t} = {v}.__class__\n"
            f"    if {t} is str:\n"
            f"        return {v} in {ss}\n"
            f"    if {t} is list:\n"
            f"        for {e} in {v}:\n"
            f"            {t} = {e}.__class__\n"
            f"            if ({kinds}) and {element}:\n"
            "                return True\n"
            "        return False\n"
            f"    return {f'({t} is int or {t} is float) and {v} in {nn}' if nums else 'False'}\n"
        )
        return Inline(expr, env, body=body)
    elif kind == "prefix" or kind == "regex":
        name = fresh("p")
        env[name] = fasts[0][1]
        test = f"{v}.startswith({name})" if kind == "prefix" else f"{name}({v}) is not None"
        expr = f"({test} if {get}.__class__ is str else {on_list})"
    elif kind == "cmp":
        terms = []
        for f in sorted(fasts, key=lambda f: f[1] not in _FLIPPED):
            name = fresh("b")
            env[name] = f[2]
            if f[1] in _FLIPPED and len(fasts) == 2:
                terms.append(f"{name} {_FLIPPED[f[1]]} {v}")
            else:
                terms.append(f"{v} {_PY_OPS[f[1]]} {name}")
        chain = terms[0] if len(terms) == 1 else f"{terms[0]}{terms[1][len(v) :]}"
        expr = (
            f"({chain} if (({t} := {get}.__class__) is int or {t} is float)"
            f" else ({t} is list and {arr.on(v, v)}))"
        )
    elif kind == "elem":
        return _elem_inline(key, fasts[0][1], on_arr)
    else:  # pragma: no cover - _specialised knows no other kind
        return None
    return Inline(expr, env)


def _elem_inline(key: str, sub: Predicate, on_arr: Callable[[list[Any]], bool]) -> Inline | None:
    """``{key: {$elemMatch: {...}}}``: a loop over the array with ``sub`` inlined."""
    inner = as_inline(sub)
    k, v, e, a = fresh("key"), fresh("v"), fresh("e"), fresh("arr")
    body = (
        f"    {v} = {ARG}.get({k})\n"
        f"    if {v}.__class__ is list:\n"
        f"        for {e} in {v}:\n"
        f"            if {e}.__class__ is dict:\n"
        f"                if {inner.on(e, e)} and ("
        f'"$date" not in {e} or not _is_date_wrapper({e})):\n'
        "                    return True\n"
        f"            elif {e}.__class__ is list and {a}([{e}]):\n"
        "                return True\n"
        "    return False\n"
    )
    env: dict[str, object] = {k: key, a: on_arr, **inner.env}
    loop = build(Inline("False", env, body=body))
    if loop is None:  # pragma: no cover - the size limits keep the code compilable
        return None
    name = fresh("elem")
    return Inline(f"{name}({FIRST})", {name: loop, **env}, body=body, size=inner.size)
