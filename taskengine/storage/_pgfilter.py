"""``PostgresStorage`` reads with a filter pushed into SQL: keyset pages over the key.

A filter that offers a SQL form (:class:`~taskengine.storage.base.SQLFilter`, asked by
duck typing, as on SQLite: :func:`~taskengine.storage._sqlfilter.pushed_condition`) gives
a condition pair ``where``/``sure`` over the ``data`` column (``jsonb`` generated from
``doc``, ``NULL`` where JSONB cannot hold the item; the translation itself leaves such
rows to Python: ``where`` holds on them and ``sure`` does not). Rows failing ``where``
are never sent; rows meeting ``sure`` are accepted without a Python check; the rest are
decoded and checked with the filter, so a scan still returns only accepted items
(``scan_filters_exactly``).

**Bounding.** SQLite windows its reads by keys because a read holds the database lock.
A PostgreSQL read holds no lock a writer waits for (MVCC), so a read here is one keyset
query over the primary key, ``id > $after AND (where) ORDER BY id LIMIT n``: the server
walks the index in key order and stops at the ``n``-th candidate, and a scan repeats it
after the last candidate until its page holds ``limit`` accepted items or no candidate is
left. What a query sends is bounded by its ``LIMIT`` (``limit + 1`` rows for a scan,
:data:`COUNT_PAGE` for a count's recheck); what it reads is bounded by the collection.

**Counting.** One pass counts the rows meeting ``sure`` and, beside them, the rows meeting
``where`` but not ``sure``; only when there are some are those rows read (in keyset pages
of :data:`COUNT_PAGE`) and checked in Python. Nothing of an item decided in SQL is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from taskengine.storage._pgdatabase import Connection
from taskengine.storage._pgkeys import lower_bound
from taskengine.storage.base import ItemFilter, Page, SQLFilterCondition
from taskengine.storage.codec import count_accepted, decode

__all__ = ["BACKEND", "COUNT_PAGE", "DOCUMENT", "PgReader", "count_pushed", "scan_pushed"]

BACKEND: Final = "postgresql"
DOCUMENT: Final = "data"
COUNT_PAGE: Final = 4096
"""Rows per read of a count's Python recheck."""

PgReader = Callable[[], contextlib.AbstractContextManager[tuple[Connection, int, int]]]
"""Opens a read of the target item set: ``(connection, collection row id, env code)``."""

_ITEMS: Final = "FROM taskengine_items WHERE coll = %s AND env = %s"


def scan_pushed(
    reader: PgReader,
    condition: SQLFilterCondition,
    filter: ItemFilter,
    after: str | None,
    limit: int,
) -> Page:
    """A page of up to ``limit`` accepted items after ``after`` (``limit`` < 2**62).

    The cursor is the last returned item's ``_id``, or ``None`` when no candidate row is
    left after it.
    """
    items: list[dict[str, Any]] = []
    if condition.exact:
        head, head_params = "SELECT id, doc, TRUE", ()
    else:
        head, head_params = f"SELECT id, doc, ({condition.sure})", condition.sure_params
    tail = f" AND ({condition.where}) ORDER BY id LIMIT %s"
    bound, inclusive = (None, False) if after is None else lower_bound(after)
    while True:
        need = limit - len(items)
        keyed = "" if bound is None else (" AND id >= %s" if inclusive else " AND id > %s")
        keys: tuple[Any, ...] = () if bound is None else (bound,)
        with reader() as (conn, coll, env):
            rows = conn.execute(
                f"{head} {_ITEMS}{keyed}{tail}",
                (*head_params, coll, env, *keys, *condition.where_params, need + 1),
            ).fetchall()
        for n, (_, text, sure) in enumerate(rows):
            item = decode(text)
            if sure or filter(item):
                items.append(item)
                if len(items) == limit:
                    # Candidates may be left unless this is the last row of a query
                    # that ran out of them (it sent fewer rows than it asked for).
                    more = n + 1 < len(rows) or len(rows) > need
                    return Page(items, item["_id"] if more else None)
        if len(rows) <= need:
            return Page(items, None)  # the query ran out of candidates
        bound, inclusive = rows[-1][0], False


def count_pushed(reader: PgReader, condition: SQLFilterCondition, filter: ItemFilter) -> int:
    """How many items the filter accepts: counted in SQL, the undecided checked in Python."""
    where = f" AND ({condition.where})"
    with reader() as (conn, coll, env):
        if condition.exact:
            row = conn.execute(
                f"SELECT count(*) {_ITEMS}{where}", (coll, env, *condition.where_params)
            ).fetchone()
            return int(row[0]) if row else 0
        # One pass: the sure rows, and whether any candidate is left to Python.
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE s), count(*) FILTER (WHERE NOT s)"
            f" FROM (SELECT ({condition.sure}) IS TRUE AS s {_ITEMS}{where}) AS candidates",
            (*condition.sure_params, coll, env, *condition.where_params),
        ).fetchone()
    total, undecided = (int(row[0]), int(row[1])) if row else (0, 0)
    if not undecided:
        return total
    recheck = (
        f"SELECT id, doc {_ITEMS} AND id > %s{where} AND ({condition.sure}) IS NOT TRUE"
        " ORDER BY id LIMIT %s"
    )
    after = ""  # every stored key is above the empty string
    while True:
        with reader() as (conn, coll, env):
            rows = conn.execute(
                recheck,
                (coll, env, after, *condition.where_params, *condition.sure_params, COUNT_PAGE),
            ).fetchall()
        total += count_accepted([text for _, text in rows], filter)
        if len(rows) < COUNT_PAGE:
            return total
        after = rows[-1][0]
