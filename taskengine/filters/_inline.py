"""Expression forms of compiled predicates, and the one function generated from them.

A compiled predicate or single-value test may also carry an :class:`Inline`: the same
test written as one Python expression over its argument. The combinators of
:mod:`taskengine.filters._predicates` join the expressions of their parts, so a whole filter
made of inlinable parts becomes one expression, and :func:`generate` compiles it into a
single function: no call per operator, as a hand-written predicate. An expression names
its argument with the placeholders ``$F`` (the one occurrence evaluated first) and ``$X``
(every other one) and every constant by a fresh global name bound in its ``env``: no text
of a filter spec ever becomes source code. The closure each part was built from stays the
reference: an expression must answer exactly as it does (the property tests check both).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from types import CodeType
from typing import Any, Final, TypeVar

from taskengine._values import is_date_wrapper

__all__ = [
    "ARG",
    "BASE_ENV",
    "FIRST",
    "MISSING",
    "Inline",
    "as_inline",
    "build",
    "closures_only",
    "constant",
    "date_bounds",
    "date_compare",
    "fresh",
    "generate",
    "inline_of",
    "inlines",
    "inlining",
    "joined",
    "negated",
    "some_element",
    "with_inline",
]


class _Missing:
    """The value a path yields where a field does not exist (BSON EOO)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""What a compiled path yields for a field a document does not have."""

# ----------------------------------------------------------------------- inlining

FIRST: Final = "$F"
"""Placeholder of an inline expression: its argument, where it is evaluated first."""
ARG: Final = "$X"
"""Placeholder of an inline expression: its argument, everywhere else."""

_MAX_SIZE: Final = 64  # leaves in one generated function
_MAX_DEPTH: Final = 12  # nested combinators in one generated function

BASE_ENV: Final[dict[str, object]] = {
    "list": list,
    "dict": dict,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "len": len,
    "_MISSING": MISSING,
    "_datetime": datetime,
    "_timezone": timezone,
    "_UTC": timezone.utc,
    "_is_date_wrapper": is_date_wrapper,
}
"""The globals every generated function sees (besides its own constants)."""

_names = itertools.count()
_enabled = [True]
_ATTR: Final = "_taskengine_inline"


class Inline:
    """A test written as one Python expression over its argument (see the module doc).

    ``expr`` holds the placeholders :data:`FIRST` (exactly once, the occurrence evaluated
    first) and :data:`ARG`; ``env`` binds the expression's constants; ``body``, when set,
    is a whole function body (statements over ``$X``) used when the test is generated on
    its own; ``size`` and ``depth`` bound the generated code.
    """

    __slots__ = ("body", "depth", "env", "expr", "size")

    def __init__(
        self,
        expr: str,
        env: Mapping[str, object],
        *,
        body: str | None = None,
        size: int = 1,
        depth: int = 0,
    ) -> None:
        self.expr = expr
        self.env = dict(env)
        self.body = body
        self.size = size
        self.depth = depth

    def on(self, first: str, rest: str) -> str:
        """The expression with its argument written as ``first`` / ``rest``."""
        return self.expr.replace(FIRST, first).replace(ARG, rest)

    def later(self) -> str:
        """The expression when its argument has been evaluated before (all ``$X``)."""
        return self.expr.replace(FIRST, ARG)


def fresh(stem: str) -> str:
    """A new global or local name for generated code (never reused in this process)."""
    return f"_{stem}{next(_names)}"


_C = TypeVar("_C", bound=Callable[..., Any])


def with_inline(fn: _C, inline: Inline | None) -> _C:
    """``fn``, carrying ``inline`` (its expression form) unless inlining is off."""
    if inline is not None and _enabled[0]:
        setattr(fn, _ATTR, inline)
    return fn


def inline_of(fn: Callable[..., Any]) -> Inline | None:
    """The expression form ``fn`` carries, or ``None``."""
    found = getattr(fn, _ATTR, None)
    return found if isinstance(found, Inline) else None


def as_inline(fn: Callable[..., Any]) -> Inline:
    """The expression form of ``fn``: the one it carries, else a call of ``fn`` itself."""
    found = inline_of(fn)
    if found is not None:
        return found
    name = fresh("f")
    return Inline(f"{name}({FIRST})", {name: fn})


def constant(value: bool) -> str:
    """The source text of a boolean constant."""
    return "True" if value else "False"


_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


def date_bounds(instant: timedelta) -> tuple[datetime, datetime] | None:
    """``instant`` (since the epoch) as an aware UTC and a naive datetime, or ``None``
    when it is outside the range of ``datetime``."""
    try:
        aware = _EPOCH_UTC + instant
    except OverflowError:
        return None
    return aware, aware.replace(tzinfo=None)


def date_compare(
    ops: Sequence[tuple[str, timedelta]], fallback: Callable[[Any], bool]
) -> Inline | None:
    """A value test comparing a date with instants, as fast as a hand-written one.

    ``ops`` are ``(python operator, instant)`` pairs that must all hold; ``fallback`` is
    the exact test (it decides everything but a ``datetime`` whose zone is UTC, a fixed
    offset or none). A naive datetime means UTC; an aware one with a fixed offset compares
    by instant with the aware bound, exactly (no fold, no overflow). ``None`` when a bound
    is outside the range of ``datetime``.
    """
    env: dict[str, object] = {}
    aware_terms, naive_terms = [], []
    for op, instant in ops:
        bounds = date_bounds(instant)
        if bounds is None:
            return None
        a, n = fresh("da"), fresh("dn")
        env[a], env[n] = bounds
        aware_terms.append(f"{ARG} {op} {a}")
        naive_terms.append(f"{ARG} {op} {n}")
    g, z = fresh("g"), fresh("z")
    env[g] = fallback
    expr = (
        f"(({' and '.join(aware_terms)}) if ({z} := {ARG}.tzinfo) is _UTC"
        f" or {z}.__class__ is _timezone else (({' and '.join(naive_terms)}) if {z} is None"
        f" else {g}({ARG}))) if {FIRST}.__class__ is _datetime else {g}({ARG})"
    )
    return Inline(f"({expr})", env)


def inlining() -> bool:
    """Whether compiled parts carry expression forms (off within :func:`closures_only`)."""
    return _enabled[0]


@contextmanager
def closures_only() -> Iterator[None]:
    """Within this block, compile without inlining (the closures alone: for tests)."""
    before = _enabled[0]
    _enabled[0] = False
    try:
        yield
    finally:
        _enabled[0] = before


def joined(parts: Sequence[Inline], op: str) -> Inline | None:
    """``parts`` joined by ``op`` (``and``/``or``).

    Past the size limits each part becomes a call of its own generated function, so a
    large filter is a few generated functions instead of one (``None`` if that fails).
    """
    if len(parts) < 2:
        return None
    size = sum(p.size for p in parts)
    depth = max(p.depth for p in parts) + 1
    if size > _MAX_SIZE or depth > _MAX_DEPTH:
        called = [_called(p) for p in parts]
        if any(c is None for c in called):  # pragma: no cover - see _called
            return None
        parts = called  # type: ignore[assignment]
        size, depth = len(parts), 1
    env: dict[str, object] = {}
    exprs = []
    for i, p in enumerate(parts):
        env.update(p.env)
        exprs.append(f"({p.expr if i == 0 else p.later()})")
    return Inline(f"({f' {op} '.join(exprs)})", env, size=size, depth=depth)


def inlines(preds: Sequence[Callable[..., Any]]) -> list[Inline] | None:
    """The expression forms of ``preds`` (calls where they carry none), if any carries one."""
    if not _enabled[0] or all(inline_of(p) is None for p in preds):
        return None
    return [as_inline(p) for p in preds]


def generate(fn: _C) -> _C:
    """One generated function doing what ``fn`` does, from its expression form.

    Returns ``fn`` itself when it carries none (or inlining is off, or the code would not
    compile). The generated function carries the same expression form.
    """
    inline = inline_of(fn)
    if inline is None or not _enabled[0]:
        return fn
    made = build(inline)
    if made is None:  # pragma: no cover - the size limits keep the code compilable
        return fn
    return with_inline(made, inline)  # type: ignore[return-value]


def build(inline: Inline) -> Callable[[Any], bool] | None:
    """Compile ``inline`` (its ``body``, else ``return <expr>``) into a function."""
    if inline.body is not None:
        body = inline.body.replace(FIRST, "_a0").replace(ARG, "_a0")
    else:
        body = f"    return {inline.on('_a0', '_a0')}\n"
    # Fresh names are renamed in order of appearance, so that filters of one shape share
    # one code object (compiling is most of the cost of building a filter).
    renamed: dict[str, str] = {"_a0": "_a0"}
    pieces = _FRESH.split(f"def _generated(_a0):\n{body}")
    for i in range(1, len(pieces), 2):  # the odd pieces are the names
        old = pieces[i]
        new = renamed.get(old)
        if new is None:
            new = renamed[old] = f"_n{len(renamed)}"
        pieces[i] = new
    source = "".join(pieces)
    code = _CODE_CACHE.get(source)
    if code is None:
        try:
            code = compile(source, "<taskengine filter>", "exec")
        except (SyntaxError, RecursionError, MemoryError, ValueError):  # pragma: no cover
            return None
        if len(_CODE_CACHE) >= _CODE_CACHE_SIZE:
            _CODE_CACHE.clear()  # atomic, unlike evicting one entry while threads compile
        _CODE_CACHE[source] = code
    namespace: dict[str, Any] = {"__builtins__": {}}
    namespace.update(BASE_ENV)
    for old, value in inline.env.items():
        new = renamed.get(old)
        if new is not None:
            namespace[new] = value
    exec(code, namespace)
    made: Callable[[Any], bool] = namespace["_generated"]
    return made


_FRESH: Final = re.compile(r"(_[a-z]+[0-9]+)")  # what fresh() makes (and only that)
_CODE_CACHE: dict[str, CodeType] = {}
_CODE_CACHE_SIZE: Final = 512


def some_element(test: Callable[[Any], bool], *, whole: bool) -> Callable[[list[Any]], bool]:
    """``arr -> any(test(e) for e in arr)``, ``or test(arr)`` when ``whole``.

    When ``test`` carries an expression form the loop is generated around it (and the
    result carries the form ``<loop>(arr)``); otherwise a plain closure.
    """
    inline = inline_of(test)
    if inline is not None and _enabled[0]:
        e = fresh("e")
        tail = inline.on(ARG, ARG) if whole else "False"
        body = (
            f"    for {e} in {ARG}:\n"
            f"        if {inline.on(e, e)}:\n"
            "            return True\n"
            f"    return {tail}\n"
        )
        made = build(Inline("False", inline.env, body=body))
        if made is not None:
            name = fresh("some")
            return with_inline(made, Inline(f"{name}({FIRST})", {name: made}))

    def loop(arr: list[Any]) -> bool:
        for e in arr:
            if test(e):
                return True
        return whole and test(arr)

    return loop


def _called(inline: Inline) -> Inline | None:
    """``inline`` as a call of the function generated from it (size 1, depth 0)."""
    if inline.size == 1 and inline.depth == 0:
        return inline
    made = build(inline)
    if made is None:  # pragma: no cover - the size limits keep the code compilable
        return None
    name = fresh("part")
    return Inline(f"{name}({FIRST})", {name: made})


def negated(inline: Inline | None) -> Inline | None:
    """``not (inline)``, or ``None`` (none given, or the part cannot be generated)."""
    if inline is None:
        return None
    if inline.depth >= _MAX_DEPTH:
        inline = _called(inline)
        if inline is None:  # pragma: no cover - see _called
            return None
    return Inline(f"(not {inline.expr})", inline.env, size=inline.size, depth=inline.depth + 1)
