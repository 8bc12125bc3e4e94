"""Field predicates of the ``wix`` dialect: a dotted path's value, tested by its operators.

A field is named by a dotted path through subdocuments (a numeric component also
indexes an array); a missing field is :data:`MISSING`. Each predicate is a closure and,
unless inlining is off, carries its expression form (see :mod:`taskengine.filters._inline`):
comparisons of one field with numbers or with dates become one comparison chain, the
way a hand-written predicate would test them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from taskengine._values import is_date_wrapper
from taskengine.filters._inline import (
    FIRST,
    Inline,
    as_inline,
    date_compare,
    fresh,
    inlining,
    with_inline,
)
from taskengine.filters._predicates import MISSING, Predicate, all_of

__all__ = ["MARK", "field_pred"]

Test = Callable[[Any], bool]

MARK: Final = "_taskengine_wix_cmp"
"""The attribute a comparison test carries: ``(kind, python operator, bound)``, where
``kind`` is ``"num"`` or ``"date"`` (the bound is then an instant since the epoch)."""


def _getter(field: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = tuple(field.split("."))
    if len(parts) == 1:
        key = parts[0]
        return lambda doc: doc.get(key, MISSING)
    index = tuple(int(p) if p.isascii() and p.isdigit() and str(int(p)) == p else -1 for p in parts)

    def get(doc: Mapping[str, Any]) -> Any:
        v: Any = doc
        for p, i in zip(parts, index, strict=True):
            k = v.__class__
            if k is dict or v is doc:
                if k is dict and len(v) == 1 and is_date_wrapper(v):
                    return MISSING
                v = v.get(p, MISSING)
            elif k is list and 0 <= i < len(v):
                v = v[i]
            else:
                return MISSING
        return v

    return get


def field_pred(field: str, tests: Sequence[Test]) -> Predicate:
    """The document predicate of ``field`` passing every one of ``tests``."""
    pred = _field_closure(field, tests)
    if not inlining():
        return pred
    return with_inline(pred, _field_inline(field, tests))


def _field_closure(field: str, tests: Sequence[Test]) -> Predicate:
    get = _getter(field)
    if "." not in field:
        key = field
        if len(tests) == 1:
            t = tests[0]
            return lambda doc: t(doc.get(key, MISSING))
        if len(tests) == 2:
            t1, t2 = tests
            return lambda doc: t1(v := doc.get(key, MISSING)) and t2(v)
    tt = tuple(tests)

    def pred(doc: Mapping[str, Any]) -> bool:
        v = get(doc)
        for t in tt:  # noqa: SIM110
            if not t(v):
                return False
        return True

    return pred


def _field_inline(field: str, tests: Sequence[Test]) -> Inline | None:
    """The predicate of ``field`` passing ``tests`` as one expression."""
    v = fresh("v")
    env: dict[str, object] = {}
    fetch = _fetch_inline(field, env)
    marks = [getattr(t, MARK, None) for t in tests]
    kinds = {m[0] if m is not None else None for m in marks}
    if len(kinds) == 1 and None not in kinds:
        (kind,) = kinds
        everything = all_of(tests)
        if kind == "date":
            test = date_compare([(m[1], m[2]) for m in marks], everything)  # type: ignore[index]
            if test is None:
                return None
            env.update(test.env)
            return Inline(test.on(f"({v} := {fetch})", v), env)
        g, k = fresh("g"), fresh("k")
        env[g] = everything
        terms = []
        for m in marks:
            b = fresh("b")
            env[b] = m[2]  # type: ignore[index]
            terms.append(f"{v} {m[1]} {b}")  # type: ignore[index]
        return Inline(
            f"(({' and '.join(terms)}) if (({k} := ({v} := {fetch}).__class__) is int"
            f" or {k} is float) else {g}({v}))",
            env,
        )
    parts = []
    for i, t in enumerate(tests):
        inline = as_inline(t)
        env.update(inline.env)
        parts.append(f"({inline.on(f'({v} := {fetch})', v) if i == 0 else inline.on(v, v)})")
    return Inline(f"({' and '.join(parts)})", env, size=len(parts))


def _fetch_inline(field: str, env: dict[str, object]) -> str:
    """An expression of the value :func:`_getter` returns for ``field`` (one ``$F``)."""
    parts = field.split(".")
    k = fresh("key")
    env[k] = parts[0]
    expr = f"{FIRST}.get({k}, _MISSING)"
    for p in parts[1:]:
        h, k = fresh("h"), fresh("key")
        env[k] = p
        i = int(p) if p.isascii() and p.isdigit() and str(int(p)) == p else -1
        other = "_MISSING"
        if i >= 0:
            other = f"({h}[{i}] if {h}.__class__ is list and {i} < len({h}) else _MISSING)"
        expr = (
            f"({h}.get({k}, _MISSING) if (({h} := {expr}).__class__ is dict"
            f' and ("$date" not in {h} or not _is_date_wrapper({h}))) else {other})'
        )
    return expr
