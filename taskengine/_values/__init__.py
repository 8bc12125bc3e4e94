"""The value model: which values exist, how they compare, and how dates are written.

Values are JSON-like (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``,
``dict`` with ``str`` keys) plus :class:`datetime.datetime`. A dict with exactly one
key ``"$date"`` whose value is an ISO-8601 string is a date wrapper: it means that date
everywhere (equality, ordering, type, storage). A naive datetime is taken to be UTC.

Every rule about values has its one owner here, and the filters, the storage, the task
types and the surfaces call it:

* :mod:`~taskengine._values._dates`: recognising, parsing and formatting dates;
* :mod:`~taskengine._values._order`: type ranks, the total order, the equalities;
* :mod:`~taskengine._values._storable`: the value model's walk, what may be stored,
  and the signed 64-bit bounds.
"""

from __future__ import annotations

from taskengine._values._dates import (
    DATE_KEY,
    as_utc,
    date_from_text,
    date_instant,
    date_text,
    format_timestamp,
    format_utc,
    is_date_wrapper,
    parse_date,
    parse_iso_datetime,
    parse_timestamp,
    to_datetime,
    utc_ms,
)
from taskengine._values._order import (
    RANK_ARRAY,
    RANK_BOOL,
    RANK_DATE,
    RANK_NULL,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_OTHER,
    RANK_REGEX,
    RANK_STRING,
    bson_equal,
    compare_values,
    equal_to,
    identical,
    is_nan,
    type_rank,
    values_equal,
)
from taskengine._values._storable import (
    INT64_MAX,
    INT64_MIN,
    TOO_DEEP,
    Unstorable,
    check_storable,
    encodable,
    find_foreign,
    storable,
    storable_dict,
)

__all__ = [
    "DATE_KEY",
    "INT64_MAX",
    "INT64_MIN",
    "RANK_ARRAY",
    "RANK_BOOL",
    "RANK_DATE",
    "RANK_NULL",
    "RANK_NUMBER",
    "RANK_OBJECT",
    "RANK_OTHER",
    "RANK_REGEX",
    "RANK_STRING",
    "TOO_DEEP",
    "Unstorable",
    "as_utc",
    "bson_equal",
    "check_storable",
    "compare_values",
    "date_from_text",
    "date_instant",
    "date_text",
    "encodable",
    "equal_to",
    "find_foreign",
    "format_timestamp",
    "format_utc",
    "identical",
    "is_date_wrapper",
    "is_nan",
    "parse_date",
    "parse_iso_datetime",
    "parse_timestamp",
    "storable",
    "storable_dict",
    "to_datetime",
    "type_rank",
    "utc_ms",
    "values_equal",
]
