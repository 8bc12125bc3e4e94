"""A compiled filter generated over rows: tuples holding the item's top-level values.

A storage that keeps items as tuples (``MemoryStorage``'s frozen items: one tuple per
item, its values at positions its shape names) can ask a filter for a test over such a
row instead of building a dict for it. A filter that is one generated expression
(:mod:`taskengine.filters._inline`) reads the document only as ``doc.get(key)`` (or
with the ``MISSING`` default); over a row each such read becomes the value at the key's
position, converted when it is a ``tuple`` (the storage's form of a container), or the
default itself for a key the row does not hold. The test is the filter's own expression
text with those reads replaced, compiled once: no dict, no second call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from taskengine.filters._inline import BASE_ENV, inline_of

__all__ = ["row_predicate"]

# A read of a top-level key in an expression form: ``$F.get(name)`` or
# ``$X.get(name, _MISSING)``, ``name`` a constant of its ``env`` bound to the key.
_READ: Final = re.compile(r"\$[FX]\.get\((_[a-z]+[0-9]+)(, _MISSING)?\)")


def row_predicate(
    predicate: Callable[..., bool],
    positions: Mapping[str, int],
    thaw: Callable[[Any], Any] | None,
) -> Callable[[Sequence[Any]], bool] | None:
    """``predicate`` over rows whose key ``k`` is at ``row[positions[k]]``, or ``None``.

    A value whose class is ``tuple`` is passed through ``thaw`` first (left as it is
    when ``thaw`` is ``None``). ``None`` when the predicate carries no expression form,
    or its expression names the document other than by reading one key.
    """
    inline = inline_of(predicate)
    if inline is None:
        return None
    env = inline.env
    reads: dict[int, str] = {}  # row position -> local name

    def local(match: re.Match[str]) -> str:
        key = env.get(match[1])
        if type(key) is not str:
            return match[0]  # not a key read: kept, so no row form is made
        at = positions.get(key)
        if at is None:
            return "_MISSING" if match[2] else "None"
        name = reads.get(at)
        if name is None:
            name = reads[at] = f"q{len(reads)}"
        return name

    text = inline.body if inline.body is not None else f"    return {inline.expr}\n"
    body = _READ.sub(local, text)
    if "$F" in body or "$X" in body:
        return None
    # Local names q0, q1, ... and ``row``/``thaw`` cannot collide with the expression's
    # names: those are fresh() names (an underscore first) or BASE_ENV's.
    lines = ["def accepts(row):"]
    for at, name in reads.items():
        lines.append(f"    {name} = row[{int(at)}]")
        if thaw is not None:
            lines += [f"    if {name}.__class__ is tuple:", f"        {name} = thaw({name})"]
    namespace: dict[str, Any] = {"__builtins__": {}}
    namespace.update(BASE_ENV)
    namespace.update(env)
    namespace["thaw"] = thaw
    namespace["tuple"] = tuple
    try:
        code = compile("\n".join(lines) + "\n" + body, "<taskengine row filter>", "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # pragma: no cover
        return None
    exec(code, namespace)  # the filter's own generated text, reads replaced
    made: Callable[[Sequence[Any]], bool] = namespace["accepts"]
    return made
