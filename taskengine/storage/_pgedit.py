"""``EDIT_FIELD_DATA`` on PostgreSQL as a text splice (:class:`ArrayEdit`), for
:mod:`taskengine.storage._pgupdate`: the field's new array text is built in SQL and
spliced into ``doc`` where that is provably exact, the rest done by the change's Python
form in the same batch.

A row is exact (``ok``) where the field is missing, ``null``, or an array whose every
element's codec text is derivable from ``jsonb`` (``_pgupdate.derived_text``: strings
without a backslash, booleans, ``null``, dates) and, for ``null`` and arrays, the text
``"key":null`` or ``"key":[`` occurs in ``doc`` exactly once (it is then the top-level
pair: a nested pair with that key makes two, and a string holds no unescaped quote). The
old array's text is read from ``doc`` there; the new one replaces it (``overlay``). On
such elements text equality is value equality (``values_equal``) except for dates (one
instant at two offsets), so:

* each ``from`` and removed value is compared by its codec text when it is a string, a
  boolean or ``null``; a number, an object or an array equals no such element and is left
  out; a date equals no element but a date, so when one is among them (or duplicates are
  removed, which compares elements with each other) a row holding a date element goes
  to Python;
* the values written (``to``, added) may be anything storable: their texts are the
  codec's of their stored form, whether a replaced value is then removed is decided in
  Python (``values_equal`` against the removed values), and for ``removeDuplicates``
  each carries an equality key (:func:`equality_key`) equal to an element's derived text
  exactly where the values are equal;
* the first matching pair wins (``array_position`` over the ``from`` texts), the added
  values follow the elements, and duplicates are dropped keeping the first of each key
  among the kept elements (``row_number()`` over the key).

The common case, an array of *plain* strings (no character the codec escapes), takes a
cheaper form where the edit allows it (:func:`_plain_steps`): the array's text in
``doc`` (as long as ``jsonb``'s text without the space after each comma) is checked to
be such an array by a regular expression, split into a ``text[]`` and edited with
``array_replace``, ``array_remove`` and ``||``, the first of equal strings kept; only
the other arrays go through the elements one by one.

A value that is neither an array nor missing nor ``null`` goes to Python (a refusal, or
a replace of the whole value). Rows whose array text does not change, and missing or
``null`` fields that stay empty, are unchanged (``ch`` false), not written.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from taskengine._values import date_instant, values_equal
from taskengine.errors import InvalidItem
from taskengine.storage._pgupdate import (
    _APPEND,
    UpdateForm,
    _key_text,
    _text,
    derived_text,
)
from taskengine.storage.changes import ArrayEdit
from taskengine.storage.codec import admit

__all__ = ["edit_form", "equality_key"]

# Past every element's ordinal: the added values' order.
_ADDED: Final = 2**40
# The most nested array_replace/array_remove calls of the text[] form (each is one call
# deeper in the expression, with its own parameters); longer edits take the general form.
_PLAIN_STEPS: Final = 64


def equality_key(value: Any) -> str:
    """A text equal for two stored values exactly when they are ``values_equal``; for a
    string, a boolean and ``null`` it is the codec text (what ``derived_text`` gives), and
    no other value's key is such a text (numbers ``N``, dates ``D``, arrays ``[``,
    objects ``O{``)."""
    if value is None or type(value) is bool or type(value) is str:
        return _text(value)
    if type(value) is int:
        return f"N{value}"
    if type(value) is float:
        return f"N{int(value)}" if value.is_integer() else f"N{value!r}"
    if isinstance(value, datetime):
        instant = date_instant(value)
        assert instant is not None
        micros = (instant.days * 86400 + instant.seconds) * 10**6 + instant.microseconds
        return f"D{micros}"
    if type(value) is list:
        return "[" + ",".join(map(equality_key, value)) + "]"
    assert type(value) is dict
    # ``O{``: never a date's derived text, ``{"$date":...}``.
    return "O{" + ",".join(f"{_text(k)}:{equality_key(value[k])}" for k in sorted(value)) + "}"


def _stored(values: list[Any]) -> list[Any] | None:
    """``values`` as stored (the codec's normal form), ``None`` when one is not storable."""
    try:
        return list(admit({"_id": "_", "v": values})[1]["v"])
    except InvalidItem:
        return None


def _text_key(value: Any) -> str | None:
    """The codec text a derivable element equal to ``value`` has, ``None`` when no such
    element can equal it (a number, an object, an array: not derivable; a date: see
    the module docstring)."""
    return _text(value) if value is None or isinstance(value, bool | str) else None


def edit_form(edit: object) -> UpdateForm | None:
    """The splice of an :class:`ArrayEdit`, ``None`` when ``edit`` is not one or has none
    (a key needing an escape, a value not storable, a ``from`` or removed object shaped
    like a date)."""
    if not isinstance(edit, ArrayEdit):
        return None
    key_text = _key_text(edit.field)
    given = [pair[0] for pair in edit.replace] + list(edit.remove)
    compared = _stored(given)
    written = _stored([pair[1] for pair in edit.replace] + list(edit.add))
    if key_text is None or compared is None or written is None:
        return None
    if any(isinstance(v, dict) and "$date" in v for v in given):
        return None
    dates_matter = edit.dedupe or any(isinstance(v, datetime) for v in compared)
    froms, removes = compared[: len(edit.replace)], compared[len(edit.replace) :]
    tos, added = written[: len(edit.replace)], written[len(edit.replace) :]
    # Whether a replaced value is then removed: the Python form's own comparison.
    rules = [
        (text, to, any(values_equal(pair[1], r) for r in edit.remove))
        for pair, from_, to in zip(edit.replace, froms, tos, strict=True)
        if (text := _text_key(from_)) is not None
    ]
    removed = [text for v in removes if (text := _text_key(v)) is not None]
    plain = _plain_steps(froms, tos, removes, added)
    return _form(
        edit.field,
        key_text,
        rules,
        removed,
        added,
        dedupe=edit.dedupe,
        dated=dates_matter,
        plain=plain,
    )


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is a string whose codec text is itself in quotes (no escapes)."""
    return isinstance(value, str) and _text(value) == f'"{value}"'


def _plain_steps(
    froms: list[Any], tos: list[Any], removes: list[Any], added: list[Any]
) -> tuple[list[tuple[str, str]], list[str], list[str]] | None:
    """The edit on an array of plain strings (:func:`_is_plain`) as ``array_replace``
    pairs, ``array_remove`` values and added strings, ``None`` when it has no such form:
    a pair from a plain string to anything else, an added value that is not a plain
    string, or a pair whose ``from`` is an earlier pair's ``to`` (``array_replace`` one
    after the other would replace a replaced value again). Values that are not plain
    strings equal no element of such an array and are left out."""
    pairs = [(a, b) for a, b in zip(froms, tos, strict=True) if _is_plain(a)]
    if not all(_is_plain(b) for _, b in pairs) or not all(map(_is_plain, added)):
        return None
    removes = [v for v in removes if _is_plain(v)]
    if len(pairs) + len(removes) > _PLAIN_STEPS:
        return None
    if any(b == later for n, (_, b) in enumerate(pairs) for later, _ in pairs[n + 1 :]):
        return None
    return pairs, removes, list(added)


# The codec text of the jsonb element ``e.v`` where it is derivable, else NULL (computed
# once per element, in a subquery the planner keeps).
_ELEMENT: Final = derived_text("e.v")
_NAMED: Final = re.compile(r"%\((\w+)\)s")


def _positional(sql: str, named: dict[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` with its ``%(name)s`` placeholders made ``%s``, and their values in order."""
    params = [named[name] for name in _NAMED.findall(sql)]
    return _NAMED.sub("%s", sql), params


def _form(
    key: str,
    key_text: str,
    rules: list[tuple[str, Any, bool]],
    removed: list[str],
    added: list[Any],
    *,
    dedupe: bool,
    dated: bool,
    plain: tuple[list[tuple[str, str]], list[str], list[str]] | None,
) -> UpdateForm:
    """The per-row SQL: ``o`` the field's type, ``a`` its old and new array texts (one
    pass over the elements, the added values after them).

    ``y`` lists every element (``src``) with its derived text ``d``, new text ``t``,
    equality key ``k`` and whether it is dropped (``gone``), then the added values;
    ``m.i`` is the first matching pair's position (``NULL``: none, so that
    ``array[m.i]`` is ``NULL`` and the element's own text is kept)."""
    named: dict[str, Any] = {
        "key": key,
        "key_text": key_text,
        "from": [text for text, _, _ in rules],
        "to": [_text(to) for _, to, _ in rules],
        "to_key": [equality_key(to) for _, to, _ in rules],
        "to_gone": [gone for _, _, gone in rules],
        "removed": removed,
    }
    drop = "coalesce(d.d = ANY(%(removed)s::text[]), FALSE)" if removed else "FALSE"
    if rules:
        text, ekey = "coalesce((%(to)s::text[])[m.i], d.d)", "d.d"
        if dedupe:
            ekey = "coalesce((%(to_key)s::text[])[m.i], d.d)"
        drop = f"coalesce((%(to_gone)s::boolean[])[m.i], {drop})"
        match = "array_position(%(from)s::text[], d.d)"
    else:
        text = ekey = "d.d"
        match = "NULL::integer"
    elements = (
        f"SELECT d.n, TRUE AS src, d.d, {text} AS t, {ekey} AS k, {drop} AS gone"
        f" FROM (SELECT e.n, {_ELEMENT} AS d"
        " FROM jsonb_array_elements(CASE WHEN o.kind = 'array' THEN c.data -> %(key)s"
        " ELSE '[]'::jsonb END) WITH ORDINALITY AS e(v, n) OFFSET 0) AS d"
        f" CROSS JOIN LATERAL (SELECT {match} AS i OFFSET 0) AS m"
    )
    tail = "NULL"
    if added and dedupe:  # among the elements, for the duplicates
        elements += (
            f" UNION ALL SELECT {_ADDED} + a.n, FALSE, NULL, a.t, a.k, FALSE"
            " FROM unnest(%(added)s::text[], %(added_key)s::text[]) WITH ORDINALITY"
            " AS a(t, k, n)"
        )
        named["added"] = [_text(v) for v in added]
        named["added_key"] = [equality_key(v) for v in added]
    elif added:  # after the elements' texts
        tail = "%(added)s::text"
        named["added"] = ",".join(map(_text, added))
    keep = "NOT y.gone"
    if dedupe:
        keep += " AND row_number() OVER (PARTITION BY y.k, y.gone ORDER BY y.n) = 1"
    # The old array's text is not rebuilt: it is in ``doc`` after ``"key":[`` where that
    # occurs once, and as long as its derived elements' texts with their commas.
    aggregate = (
        "SELECT bool_and(x.d IS NOT NULL) FILTER (WHERE x.src) AS derivable,"
        + (" bool_or(left(x.d, 1) = '{') AS dated," if dated else " FALSE AS dated,")
        + " (1 + coalesce(sum(length(x.d) + 1) FILTER (WHERE x.src), 1))::integer AS len,"
        " '[' || concat_ws(',', string_agg(x.t, ',' ORDER BY x.n) FILTER (WHERE x.keep),"
        f" {tail}) || ']' AS new"
        f" FROM (SELECT y.n, y.src, y.d, y.t, {keep} AS keep FROM ({elements}) AS y) AS x"
    )
    fast, fast_named = _plain_sql(plain, dedupe)
    # ok, ch, new over o (the field's jsonb type, and where ``"key":null`` or ``"key":[``
    # first occurs), f and p (the array of plain strings), a (any other array) and z
    # (the new array's text and the old one's length).
    head = len(key_text) + 1  # ``"key":``
    old = "CASE WHEN o.kind = 'null' THEN 4 ELSE z.len END"
    row, params = _positional(
        "SELECT CASE WHEN c.data IS NULL THEN FALSE WHEN o.kind IS NULL THEN TRUE"
        " WHEN o.kind = 'null' OR (o.kind = 'array' AND (f.plain"
        " OR (coalesce(a.v[1]::boolean, TRUE) AND NOT coalesce(a.v[2]::boolean, FALSE))))"
        " THEN o.at > 0 AND strpos(substr(c.doc, o.at + 1), o.head) = 0"
        " ELSE FALSE END AS ok,"
        " CASE WHEN o.kind = 'array' THEN z.new <> substr(c.doc, o.at + %(head)s, z.len)"
        " ELSE z.new <> '[]' END AS ch,"
        " CASE WHEN o.kind IS NULL"
        f" THEN {_APPEND.format(pair='(%(key_text)s || %(colon)s || z.new)')}"
        " ELSE overlay(c.doc placing %(key_text)s || ':' || z.new from o.at"
        f" for %(head)s + {old}) END AS new"
        " FROM (SELECT k.kind, k.head, strpos(c.doc, k.head) AS at FROM (SELECT w.kind,"
        " %(key_text)s || CASE WHEN w.kind = 'null' THEN ':null' ELSE ':[' END AS head"
        " FROM (SELECT jsonb_typeof(c.data -> %(key)s) AS kind) AS w) AS k OFFSET 0) AS o"
        f" {fast}"
        # Only where the plain form does not apply (the subquery in a CASE branch).
        " CROSS JOIN LATERAL (SELECT CASE WHEN f.plain THEN NULL ELSE (SELECT ARRAY["
        f"g.derivable::text, g.dated::text, g.len::text, g.new] FROM ({aggregate}) AS g)"
        " END AS v OFFSET 0) AS a"
        " CROSS JOIN LATERAL (SELECT CASE WHEN f.plain THEN pn.new ELSE a.v[4] END AS new,"
        " CASE WHEN f.plain THEN length(f.old) ELSE a.v[3]::integer END AS len OFFSET 0) AS z",
        {**named, **fast_named, "head": head, "colon": ":"},
    )
    return UpdateForm(row, tuple(params))


# An array of plain strings, as the codec writes it: ``[]`` or ``["a","b"]``, no quote
# nor backslash inside a string. A text of this form starting where the array does is
# the whole array (a JSON value ends where it ends).
_PLAIN_ARRAY: Final = r'^\[("[^"\\]*"(,"[^"\\]*")*)?\]$'


def _plain_sql(
    plain: tuple[list[tuple[str, str]], list[str], list[str]] | None, dedupe: bool
) -> tuple[str, dict[str, Any]]:
    """The laterals ``f`` (``old``: the array's text in ``doc``, as long as ``jsonb``'s
    without the space after each comma; ``plain``: whether it is an array of plain
    strings) and ``pn`` (``new``: the edited array's text, from ``text[]`` functions),
    and their parameters; without a plain form, ``f.plain`` is false."""
    if plain is None:
        return (
            "CROSS JOIN LATERAL (SELECT NULL::text AS old, FALSE AS plain) AS f"
            " CROSS JOIN LATERAL (SELECT NULL::text AS new) AS pn",
            {},
        )
    pairs, removes, added = plain
    named: dict[str, Any] = {"plain_re": _PLAIN_ARRAY}
    array = (
        "CASE WHEN f.old = '[]' THEN '{}'::text[] WHEN f.old = '[\"\"]' THEN '{\"\"}'::text[]"
        " ELSE string_to_array(substr(f.old, 3, length(f.old) - 4), '\",\"') END"
    )
    for n, (a, b) in enumerate(pairs):
        array = f"array_replace({array}, %(plain_from_{n})s::text, %(plain_to_{n})s::text)"
        named[f"plain_from_{n}"], named[f"plain_to_{n}"] = a, b
    for n, value in enumerate(removes):
        array = f"array_remove({array}, %(plain_removed_{n})s::text)"
        named[f"plain_removed_{n}"] = value
    if added:
        array = f"{array} || %(plain_added)s::text[]"
        named["plain_added"] = added
    kept = "pa.arr"
    if dedupe:  # the first of equal strings
        kept = (
            "ARRAY(SELECT pu.x FROM unnest(pa.arr) WITH ORDINALITY AS pu(x, n)"
            " WHERE array_position(pa.arr, pu.x) = pu.n ORDER BY pu.n)"
        )
    sql = (
        "CROSS JOIN LATERAL (SELECT s.old, coalesce(s.old ~ %(plain_re)s, FALSE) AS plain"
        " FROM (SELECT CASE WHEN o.kind = 'array' THEN substr(c.doc, o.at + %(head)s,"
        " length((c.data -> %(key)s)::text)"
        " - greatest(jsonb_array_length(c.data -> %(key)s) - 1, 0)) END AS old) AS s"
        " OFFSET 0) AS f"
        f" CROSS JOIN LATERAL (SELECT CASE WHEN f.plain THEN {array} END AS arr OFFSET 0) AS pa"
        f" CROSS JOIN LATERAL (SELECT CASE WHEN f.plain THEN (SELECT CASE WHEN"
        f" cardinality(pk.kept) = 0 THEN '[]' ELSE '[\"' || array_to_string(pk.kept, '\",\"')"
        f" || '\"]' END FROM (SELECT {kept} AS kept OFFSET 0) AS pk) END AS new OFFSET 0) AS pn"
    )
    return sql, named
