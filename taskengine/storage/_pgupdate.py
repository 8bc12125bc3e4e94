"""``PostgresStorage.change_matching`` for rewrites: one ``UPDATE`` per batch that splices
the codec's exact text, the rows it cannot decide done in Python in the same batch.

``doc`` holds the codec's JSON text (:mod:`taskengine.storage.codec`) and ``data`` the
``jsonb`` generated from it. ``jsonb`` cannot print the codec's text (key order, number
forms), so the new document is made by editing ``doc`` as text, for changes that set one
top-level field (:class:`~taskengine.storage.changes.FieldAssignment`: publish status
and schedule dates, ``COPY_FIELD_DATA``, ``addItems`` alone) or remove top-level fields
(a ``removes`` attribute: cancel scheduling), row by row where the edit is
provably exact (:func:`update_form` says which changes qualify):

* the old value's codec text is derived from ``jsonb`` only where the two print alike:
  ``true``, ``false``, ``null``, a string and a date (``{"$date":"..."}``) whose text holds
  no backslash (no escapes: the codec and PostgreSQL escape the same characters, but only
  strings without any are taken); a copied number's text is read from ``doc`` itself
  where its key occurs exactly once (:data:`_NUMBER`); an array's text is derived where
  every element's is (:data:`_DERIVED_ARRAY`: an append splices the new elements before
  its closing bracket); a number being replaced, other arrays, other objects and escaped
  strings are left to Python;
* a top-level key whose text needs no escape is ``"key":`` in the text; the pair
  ``"key":OLD`` of the top-level value is in ``doc`` once, so when that text occurs in
  ``doc`` exactly once it is the top-level pair (a nested pair with the same key and
  value, or the pattern inside a key holding ``\\"``, make two: Python's), and replacing
  it is exact;
* an absent field is set as the last key, as the Python form's ``dict`` puts it:
  ``,"key":NEW`` before the final ``}``;
* a removed field's pair is cut out with the comma before it (after it when it is the
  first key), one key after the other (cancel scheduling: the two dates).

A batch is the next ``limit`` *candidate* rows (meeting the filter's SQL ``where``; every
row without a filter) after the cursor, none above ``until``, read ``FOR UPDATE`` with
each row's new text in one statement that also writes the sure rows inside the splice's
conditions (an ``UPDATE`` of the rows locked, found by ``ctid``) and returns the
counters and the rest: rows the filter's SQL leaves undecided (checked with the filter
in Python) and rows outside the conditions (``data IS NULL`` among them), which the
change's Python form does, written by id in a second statement. Everything runs in the
caller's transaction (the engine's ``atomic()`` block, with the task's checkpoint). Two
processes changing the same rows stay correct: the second waits for the first's locks
and computes from the row as the first left it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import attrs

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgkeys import lower_bound, unkey
from taskengine.storage.base import ItemFilter, SQLFilterCondition
from taskengine.storage.changes import ChangeResult, FieldAssignment, ItemChange, split_outcomes
from taskengine.storage.codec import admit_text, decode, encode

__all__ = ["UpdateForm", "derived_text", "update_form", "update_rows"]


def derived_text(v: str, number: str = "") -> str:
    """The codec text of the ``jsonb`` value of the SQL ``v`` where it is derivable (see
    the module docstring), else ``NULL``: one expression, without a subquery (a subquery
    costs a plan node run per row), ``v`` read again where it is used; a date's text is
    rebuilt compactly (``jsonb`` prints ``": "``). ``number`` is the SQL of a number's
    text (none when empty)."""
    numbers = f" WHEN 'number' THEN {number}" if number else ""
    return (
        f"CASE jsonb_typeof({v}){numbers} WHEN 'string' THEN CASE WHEN strpos({v}::text, '\\') = 0"
        f" THEN {v}::text END WHEN 'boolean' THEN {v}::text WHEN 'null' THEN 'null'"
        f" WHEN 'object' THEN CASE WHEN jsonb_typeof({v}->'$date') = 'string'"
        f" AND ({v} - '$date') = '{{}}'::jsonb AND strpos(({v}->'$date')::text, '\\') = 0"
        f" THEN '{{\"$date\":' || ({v}->'$date')::text || '}}' END END"
    )


# A number's codec text read from ``doc`` itself (jsonb prints ``1e+16`` as
# ``10000000000000000``): where the key (the parameter, ``"key":``) occurs exactly once,
# it is the top-level key, and its number runs to the next ``,`` or ``}``.
_NUMBER: Final = (
    "(SELECT CASE WHEN y.at > 0 AND strpos(substr(c.doc, y.at + 1), %s) = 0"
    " THEN substring(substr(c.doc, y.at + length(%s)) from '^[-0-9.eE+]+') END"
    " FROM (SELECT strpos(c.doc, %s) AS at) AS y)"
)
# Whether ``{p}`` occurs in ``{d}`` (``doc`` unless said) exactly once.
_ONCE_IN: Final = "(strpos({d}, {p}) > 0 AND strpos(substr({d}, strpos({d}, {p}) + 1), {p}) = 0)"
_ONCE: Final = _ONCE_IN.replace("{d}", "c.doc")
# ``doc`` with the pair ``{pair}`` as its last key.
_APPEND: Final = (
    "CASE WHEN c.doc = '{{}}' THEN '{{' || {pair} || '}}'"
    " ELSE left(c.doc, -1) || ',' || {pair} || '}}' END"
)
# One statement per batch. ``c``: the batch's candidates (one more, to know whether more
# follow), locked, each with its new text (``NULL``: Python's) computed from the row as
# locked: a row another transaction changed is read again when its lock is granted, and
# so is its new text (a target-list expression, not a joined subquery, whose old row
# would be kept). ``b``: how many, and the key the batch ends on when more follow.
# ``p``: the batch's rows, each with ``ok`` (sure and inside the splice's conditions) and
# ``ch`` (the text changes). ``u``: the rows written, found by their ``ctid`` (a probe
# of the key cost 6 ms more a batch of 5,000); a locked row cannot move, but a row
# another transaction changed before the lock was granted has a version this
# statement's snapshot does not see: those are returned and written by key.
_BATCH: Final = (
    "WITH c AS MATERIALIZED (SELECT id, ctid, doc, coalesce(({sure}), FALSE) AS s,"
    " ({new}) AS new FROM taskengine_items AS c WHERE coll = %s AND env = %s"
    "{lower} AND ({where}) ORDER BY id LIMIT %s FOR UPDATE),"
    # The batch ends on the ``limit``-th candidate: the largest below the one more read
    # (no sort: ``array_agg(id ORDER BY id)`` cost 6 ms a batch of 5,000).
    " b AS MATERIALIZED (SELECT count(*) AS n, CASE WHEN count(*) > %s"
    " THEN max(id) FILTER (WHERE id < (SELECT max(id) FROM c)) END AS bound FROM c),"
    " p AS NOT MATERIALIZED (SELECT id, ctid, doc, s, new,"
    " coalesce(s AND new IS NOT NULL, FALSE) AS ok, new IS DISTINCT FROM doc AS ch FROM c"
    " WHERE id <= coalesce((SELECT bound FROM b), id)),"
    " u AS (UPDATE taskengine_items AS t SET doc = p.new FROM p"
    " WHERE t.ctid = p.ctid AND p.ok AND p.ch AND t.coll = %s AND t.env = %s"
    " AND t.id = p.id RETURNING t.id),"
    # One pass over the batch for the counters and the rows left to Python.
    " a AS MATERIALIZED (SELECT count(*) FILTER (WHERE ok AND NOT ch) AS unchanged,"
    " count(*) FILTER (WHERE ok AND ch) AS changing,"
    " array_agg(id ORDER BY id) FILTER (WHERE NOT ok) AS ids,"
    " array_agg(doc ORDER BY id) FILTER (WHERE NOT ok) AS docs,"
    " array_agg(s ORDER BY id) FILTER (WHERE NOT ok) AS sure FROM p)"
    " SELECT b.n, b.bound, a.unchanged, {written}, a.ids, a.docs, a.sure,"
    # Rows another transaction changed before this one locked them: their new version
    # is not in this statement's snapshot, so no ``ctid`` finds it; written by key.
    " CASE WHEN (SELECT count(*) FROM u) < a.changing"
    " THEN (SELECT array_agg(ARRAY[id, new] ORDER BY id) FROM p"
    " WHERE ok AND ch AND id NOT IN (SELECT id FROM u)) END FROM b, a"
)
_COUNTED: Final = "(SELECT count(*) FROM u)"
_LISTED: Final = "(SELECT array_agg(id) FROM u)"
# The Python form's writes, by key (joined on every key column: see _pgitems._BATCH).
_WRITE: Final = (
    "UPDATE taskengine_items AS t SET doc = u.doc FROM unnest(array_fill(%s::integer,"
    " ARRAY[%s]), array_fill(%s::smallint, ARRAY[%s]), %s::text[], %s::text[])"
    " AS u(coll, env, id, doc) WHERE t.coll = u.coll AND t.env = u.env AND t.id = u.id"
)


@attrs.frozen
class UpdateForm:
    """A change's splice: the per-row SQL over ``c.doc`` and ``c.data`` and its parameters
    in placeholder order.

    ``row`` is a query of one row with columns ``ok`` (the splice is exact), ``ch`` (the
    value changes) and ``new`` (the new text), or, when ``new_only``, an expression of the
    new text alone, ``NULL`` where the splice is not exact, equal to ``doc`` where the
    value does not change (cheaper: one expression a row, no subquery).
    """

    row: str
    params: tuple[Any, ...]
    new_only: bool = False

    @property
    def new(self) -> str:
        """The new text as one expression (``NULL``: Python's; ``doc``: unchanged)."""
        if self.new_only:
            return self.row
        return (
            "SELECT CASE WHEN r.ok THEN CASE WHEN r.ch THEN r.new ELSE c.doc END END"
            f" FROM ({self.row}) AS r"
        )


def _key_text(key: str) -> str | None:
    """The codec text of a top-level key, ``None`` when it needs an escape."""
    if not key or '"' in key or "\\" in key or any(ord(c) < 0x20 for c in key):
        return None
    return f'"{key}"'


def _text(value: Any) -> str:
    """The codec text of a value."""
    return encode({"v": value})[5:-1]


def update_form(change: ItemChange) -> UpdateForm | None:
    """The splice of ``change``, or ``None`` when it has none (it takes the scan path).

    Changes with a :class:`FieldAssignment` (an ``assignment`` attribute) qualify when
    their keys need no escape: a string or date set, a copy, an append of scalars (done in
    SQL where the target is missing, ``null`` or an array of derivable texts); so do
    changes with a ``removes`` attribute, a tuple of top-level keys they remove, and
    nothing else (unchanged when none is present). Other array edits (an ``array_edit``
    attribute) are :func:`taskengine.storage._pgedit.edit_form`'s (the storage asks it
    when this has none).
    """
    if change.deletes:
        return None
    removes = getattr(change, "removes", None)
    if isinstance(removes, tuple) and removes and all(type(key) is str for key in removes):
        return _remove_form(removes)
    assignment = getattr(change, "assignment", None)
    if not isinstance(assignment, FieldAssignment):
        return None
    target = _key_text(assignment.target)
    if target is None:
        return None
    if assignment.append:
        values = assignment.value
        if not isinstance(values, tuple) or not values:
            return None
        return _append_form(assignment.target, target, "[" + ",".join(map(_text, values)) + "]")
    if assignment.source is not None:
        source = _key_text(assignment.source)
        if source is None:
            return None
        return _set_form(assignment.target, target, None, assignment.source)
    if type(assignment.value) is not str and type(assignment.value) is not datetime:
        return None
    return _set_form(assignment.target, target, _text(assignment.value), None)


def _set_form(key: str, key_text: str, new: str | None, source: str | None) -> UpdateForm:
    """``key`` set to the text ``new`` or to the derivable value of ``source`` (a copied
    number's text is read from ``doc``: :data:`_NUMBER`).

    The form is the new text alone (``new_only``), ``NULL`` where the splice is not
    exact: the pair is replaced only where it occurs once, so the text changes exactly
    when the value's does.
    """
    params: list[Any] = []
    if source is None:
        value = "%s::text"
        value_params: list[Any] = [new]
    else:
        v = "(c.data -> %s)"
        value = f"({derived_text(v, _NUMBER)})"
        source_text = _key_text(source)
        value_params = [source, *[f"{source_text}:"] * 3]
        value_params += [source] * (derived_text(v).count("%s") - 1)
    new_pair = f"(%s || ':' || {value})"
    pair_params = [key_text, *value_params]
    old = derived_text("(c.data -> %s)")
    text = "CASE WHEN c.data IS NULL THEN NULL"
    if source is not None:
        text += " WHEN NOT (c.data ? %s) THEN c.doc"
        params.append(source)
    # An absent key: the pair appended. Else the pair replaced where it occurs once
    # (``z.p`` is NULL where the old value's text is not derivable: so is the result).
    text += (
        f" WHEN NOT (c.data ? %s) THEN {_APPEND.format(pair=new_pair)}"
        f" ELSE (SELECT CASE WHEN {_ONCE.format(p='z.p')}"
        f" THEN replace(c.doc, z.p, {new_pair}) END"
        f" FROM (SELECT %s || ':' || ({old}) AS p OFFSET 0) AS z) END"
    )
    params += [key, *pair_params, *pair_params, *pair_params, key_text]
    params += [key] * old.count("%s")
    assert text.count("%s") == len(params), (text.count("%s"), len(params))
    return UpdateForm(text, tuple(params), new_only=True)


# The codec text of a jsonb array ``{v}`` whose elements are all derivable (see
# derived_text), else NULL.
_DERIVED_ARRAY: Final = (
    "(SELECT CASE WHEN count(*) = 0 THEN '[]' WHEN bool_and(x.d IS NOT NULL)"
    " THEN '[' || string_agg(x.d, ',' ORDER BY e.n) || ']' END"
    " FROM jsonb_array_elements({v}) WITH ORDINALITY AS e(v, n)"
    " CROSS JOIN LATERAL (SELECT "
    + derived_text("e.v").replace("{", "{{").replace("}", "}}")  # formatted again
    + " AS d) AS x)"
)


def _append_form(key: str, key_text: str, array: str) -> UpdateForm:
    """``array`` (codec text of the values) appended to ``key``: made the array when the
    key is missing or ``null``, spliced before the closing bracket of an array whose
    elements' texts are derivable (:data:`_DERIVED_ARRAY`) where the pair ``"key":[...]``
    occurs once; anything else left to Python."""
    # o.old: the pair's value as text (``null``, or the array), NULL when not derivable;
    # computed once a row (``OFFSET 0``: pulled up, each use would derive it again).
    pattern = "(%s || ':' || o.old)"
    grown = (
        "CASE WHEN o.old = '[]' OR o.old = 'null' THEN %s::text"
        " ELSE left(o.old, -1) || ',' || substr(%s::text, 2) END"
    )
    new_pair = f"(%s || ':' || {grown})"
    old = (
        "CASE jsonb_typeof(c.data -> %s) WHEN 'null' THEN 'null'"
        f" WHEN 'array' THEN {_DERIVED_ARRAY.format(v='(c.data -> %s)')} END"
    )
    row = (
        "SELECT CASE WHEN c.data IS NULL THEN FALSE WHEN o.absent THEN TRUE"
        f" ELSE o.old IS NOT NULL AND {_ONCE.format(p=pattern)} END AS ok, TRUE AS ch,"
        f" CASE WHEN o.absent THEN {_APPEND.format(pair='(%s || %s || %s::text)')}"
        f" ELSE replace(c.doc, {pattern}, {new_pair}) END AS new"
        f" FROM (SELECT NOT (c.data ? %s) AS absent, {old} AS old OFFSET 0) AS o"
    )
    append_params = (key_text, ":", array)
    params = (
        *[key_text] * 3,  # ok: the pattern in _ONCE
        *append_params * 2,  # new: the pair as the last key
        key_text,  # new: replace()'s pattern
        *(key_text, array, array),  # new: replace()'s new pair
        *(key, key, key),  # o
    )
    assert row.count("%s") == len(params), (row.count("%s"), len(params))
    return UpdateForm(row, params)


def _write(conn: Connection, coll: int, env: int, keys: list[str], texts: list[str]) -> None:
    """Store ``texts`` as the documents of the rows of stored ``keys``."""
    conn.execute(_WRITE, (coll, len(keys), env, len(keys), keys, texts))


def update_rows(
    conn: Connection,
    coll: int,
    env: int,
    *,
    after: str | None,
    limit: int,
    filter: ItemFilter | None,
    condition: SQLFilterCondition | None,
    change: ItemChange,
    form: UpdateForm,
    until: str | None = None,
) -> ChangeResult:
    """Rewrite the next batch of the item set ``(coll, env)`` inside the open transaction.

    ``condition`` is ``filter``'s SQL form (``None`` only when ``filter`` is ``None``),
    ``form`` the change's splice (:func:`update_form`); ``limit`` is below 2**62;
    ``until`` (a stored key) bounds the batch (a slice's last id, inclusive).
    """
    if condition is None:
        where: tuple[str, tuple[Any, ...]] = ("TRUE", ())
        sure = where
    else:
        where = (condition.where, condition.where_params)
        sure = where if condition.exact else (condition.sure, condition.sure_params)
    lower = ""
    keys: tuple[str, ...] = ()
    if after is not None:
        bound, inclusive = lower_bound(after)
        lower, keys = (" AND id >= %s" if inclusive else " AND id > %s"), (bound,)
    if until is not None:
        lower, keys = lower + " AND id <= %s", (*keys, until)
    statement = _BATCH.format(
        new=form.new,
        sure=sure[0],
        lower=lower,
        where=where[0],
        written=_LISTED if change.needs_ids else _COUNTED,
    )
    params = (
        *(*sure[1], *form.params, coll, env, *keys, *where[1], limit + 1),  # c
        limit,  # b
        coll,  # u
        env,
    )
    row = conn.execute(statement, params).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    bound_key, unchanged = row[1], int(row[2])
    if change.needs_ids:
        done = [unkey(stored) for stored in row[3] or ()]
        written = len(done)
    else:
        done, written = [], int(row[3])
    if row[7]:
        late = [pair[0] for pair in row[7]]
        _write(conn, coll, env, late, [pair[1] for pair in row[7]])
        if change.needs_ids:
            done.extend(map(unkey, late))
        written += len(late)
    refused: tuple[tuple[str, str], ...] = ()
    if row[4]:
        # Undecided by the filter's SQL, or outside the splice: the scan path's way.
        items = [
            item
            for item, sure_row in zip(map(decode, row[5]), row[6], strict=True)
            if sure_row or filter is None or filter(item)
        ]
        writes, kept, refusals = split_outcomes(change, items)
        unchanged += kept
        refused = tuple(refusals)
        if writes:
            encoded = [admit_text(item) for item in writes]
            stored = dict(zip([unkey(k) for k in row[4]], row[4], strict=True))
            _write(
                conn,
                coll,
                env,
                [stored[item_id] for item_id, _ in encoded],
                [t for _, t in encoded],
            )
            done.extend(item_id for item_id, _ in encoded)
            written += len(encoded)
    if len(done) > 1:
        done.sort()
    cursor = None if bound_key is None else unkey(bound_key)
    return ChangeResult(cursor, written, tuple(done), unchanged, refused)


def _remove_form(keys: tuple[str, ...]) -> UpdateForm | None:
    """The keys removed one after the other, each from the text the previous step left
    (so each step's exactly-once test is on the codec text of the item without the keys
    removed before it). A pair is removed with the comma before it, or after it when it
    is the first key. Each step is a subquery the planner keeps (``OFFSET 0``): pulled
    up, every step would repeat the previous one's text expression several times, and
    the expression grows exponentially with the keys (four took the planner minutes)."""
    texts = [_key_text(key) for key in keys]
    if any(text is None for text in texts):
        return None
    old = derived_text("(c.data -> %s)")
    laterals = ""
    params: list[Any] = []
    for n, (key, key_text) in enumerate(zip(keys, texts, strict=True), start=1):
        prev = f"s{n - 1}.t"
        pattern = f"(%s || ':' || o{n}.old)"
        laterals += (
            f" CROSS JOIN LATERAL (SELECT NOT (c.data ? %s) AS absent, {old} AS old"
            f" OFFSET 0) AS o{n}"
            f" CROSS JOIN LATERAL (SELECT strpos({prev}, {pattern}) AS pos,"
            f" length({pattern}) AS len OFFSET 0) AS f{n}"
            f" CROSS JOIN LATERAL (SELECT o{n}.absent OR (o{n}.old IS NOT NULL"
            f" AND {_ONCE_IN.format(d=prev, p=pattern)}) AS ok,"
            f" CASE WHEN o{n}.absent THEN {prev} WHEN coalesce(f{n}.pos, 0) = 0 THEN NULL"
            f" WHEN substr({prev}, f{n}.pos - 1, 1) = ','"
            f" THEN overlay({prev} placing '' from f{n}.pos - 1 for f{n}.len + 1)"
            f" WHEN substr({prev}, f{n}.pos + f{n}.len, 1) = ','"
            f" THEN overlay({prev} placing '' from f{n}.pos for f{n}.len + 1)"
            f" ELSE overlay({prev} placing '' from f{n}.pos for f{n}.len) END AS t"
            f" OFFSET 0) AS s{n}"
        )
        params += [key, *[key] * old.count("%s"), key_text, key_text, *[key_text] * 3]
    last = len(keys)
    oks = " AND ".join(f"s{n}.ok" for n in range(1, last + 1))
    absents = " AND ".join(f"o{n}.absent" for n in range(1, last + 1))
    row = (
        f"SELECT c.data IS NOT NULL AND {oks} AS ok, NOT ({absents}) AS ch, s{last}.t AS new"
        f" FROM (SELECT c.doc AS t) AS s0{laterals}"
    )
    assert row.count("%s") == len(params), (row.count("%s"), len(params))
    return UpdateForm(row, tuple(params))
