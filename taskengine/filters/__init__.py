"""Filters: compile a filter spec once into a fast, exact predicate over items.

Two dialects share one API:

* ``"mongo"``: MongoDB 8.0 query-operator semantics (see :mod:`taskengine.filters._mongo`);
* ``"wix"``: the task API's filter language (see :mod:`taskengine.filters._wix`).

``None`` and ``{}`` match everything. Compiling raises only
:class:`~taskengine.errors.InvalidFilter` (naming the path into the spec and the
rule); calling a compiled filter never raises.

Example::

    >>> f = compile_filter({"age": {"$gte": 18}, "tags": "vip"})
    >>> f({"_id": "1", "age": 30, "tags": ["new", "vip"]})
    True
    >>> matches({"name": {"$startsWith": "AL"}}, {"name": "alice"}, dialect="wix")
    True
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from taskengine.errors import InvalidFilter

if TYPE_CHECKING:
    from taskengine.filters._sql import SQLCondition

__all__ = ["Dialect", "Filter", "compile_filter", "matches"]

Dialect = Literal["mongo", "wix"]
"""The filter dialects: ``"mongo"`` (MongoDB 8.0) and ``"wix"`` (the task API's)."""

Predicate = Callable[[Mapping[str, Any]], bool]

_DIALECTS: tuple[str, ...] = ("mongo", "wix")


def _freeze(value: object) -> object:
    """A hashable, type-strict, order-sensitive key for a spec value."""
    cls = value.__class__
    if cls is dict or isinstance(value, Mapping):
        return ("d", tuple((k, _freeze(v)) for k, v in value.items()))  # type: ignore[attr-defined]
    if cls is list or cls is tuple:
        return ("l", tuple(_freeze(v) for v in value))  # type: ignore[attr-defined]
    if cls is bool:
        return ("b", value)
    if cls is float:
        if math.isnan(value):  # type: ignore[arg-type]
            return ("nan",)
        return ("n", value)
    if cls is int:
        return ("n", value)
    if cls is str:
        return ("s", value)
    if value is None:
        return ("z",)
    if isinstance(value, datetime):
        return ("t", value, value.tzinfo is None)
    if isinstance(value, re.Pattern):
        return ("r", value.pattern, value.flags)
    try:
        hash(value)
    except TypeError:
        return ("o", id(value))
    return ("o", cls.__name__, value)


class Filter(functools.partial[bool]):
    """A compiled filter: an immutable, hashable predicate ``doc -> bool``.

    It keeps its source ``spec`` and ``dialect``; two filters are equal when their
    dialects are equal and their specs are equal value for value (type-strict:
    ``True`` and ``1`` differ, key order counts). Build one with
    :func:`compile_filter`; calling it never raises. (It is a
    :class:`functools.partial` underneath so that a call costs no extra Python frame.)
    """

    _spec: dict[str, Any]
    _dialect: str
    _key: object
    _hash: int

    def __new__(cls, spec: Mapping[str, Any], dialect: str, predicate: Predicate) -> Filter:
        """Wrap an already compiled ``predicate``; use :func:`compile_filter` instead."""
        self = super().__new__(cls, predicate)
        spec_copy = copy.deepcopy(dict(spec))
        key = (dialect, _freeze(spec_copy))
        d = self.__dict__
        d["_spec"] = spec_copy
        d["_dialect"] = dialect
        d["_key"] = key
        d["_hash"] = hash(key)
        d["_fields"] = _top_level_fields(spec_copy)
        return self

    if TYPE_CHECKING:

        def __call__(self, doc: Mapping[str, Any], /) -> bool:
            """Whether ``doc`` matches; never raises."""

    @property
    def spec(self) -> Mapping[str, Any]:
        """The source spec (a deep copy: changing it never changes the filter)."""
        return copy.deepcopy(self._spec)

    @property
    def dialect(self) -> str:
        """The dialect the spec was compiled in: ``"mongo"`` or ``"wix"``."""
        return self._dialect

    def top_level_fields(self) -> frozenset[str] | None:
        """The top-level item keys this filter's answer depends on, or ``None`` if any.

        An item's keys outside the set never change the answer, so a storage may hand
        the filter a dict of only these keys (those the item has, values as stored):
        ``MemoryStorage`` does, instead of copying whole items it will not keep. A
        dotted path names both its first part and the whole key (a superset is safe).
        """
        fields: frozenset[str] | None = self.__dict__["_fields"]
        return fields

    def row_predicate(
        self, positions: Mapping[str, int], thaw: Callable[[Any], Any] | None = None
    ) -> Callable[[Sequence[Any]], bool] | None:
        """This filter over rows (tuples of an item's top-level values), or ``None``.

        The row holds the value of key ``k`` at ``row[positions[k]]``; a key not in
        ``positions`` is absent from the item. A value whose class is ``tuple`` is
        passed through ``thaw`` first (a storage's form of a container; left as it is
        when ``thaw`` is ``None``). The answer is the filter's on the item the row
        stands for, without building it: ``MemoryStorage`` asks once per item shape.
        ``None`` when this filter cannot be generated that way (use it on items).
        """
        from taskengine.filters._rows import row_predicate

        return row_predicate(self.func, positions, thaw)

    @property
    def predicate(self) -> Predicate:
        """The bare compiled predicate function."""
        return self.func

    def to_sql(self, backend: str, document: str) -> SQLCondition | None:
        """This filter as a SQL condition over stored item JSON, or ``None``.

        Args:
            backend: ``"sqlite"`` (JSON1 functions over JSON text) or ``"postgresql"``
                (JSONB operators).
            document: the SQL expression of the stored document (a column name).

        Returns:
            A :class:`~taskengine.filters._sql.SQLCondition`: ``where`` holds on every
            item the filter accepts, ``sure`` only on items it accepts, and ``exact``
            says they are one condition. ``None`` when the backend is unknown, nothing
            in the filter has a SQL form, or the SQL would be too large. The storage
            protocol's ``SQLFilter`` describes this method (see docs/filters.md).
        """
        from taskengine.filters._pushdown import translate

        return translate(self, backend, document)

    def __setattr__(self, name: str, value: object) -> None:
        """Filters are immutable."""
        raise AttributeError("Filter is immutable")

    def __delattr__(self, name: str) -> None:
        """Filters are immutable."""
        raise AttributeError("Filter is immutable")

    def __eq__(self, other: object) -> bool:
        """Equal when the dialects and specs are equal (type-strict, order-sensitive)."""
        if not isinstance(other, Filter):
            return NotImplemented
        return self._hash == other._hash and self._key == other._key

    def __ne__(self, other: object) -> bool:
        """The negation of ``==``."""
        if not isinstance(other, Filter):
            return NotImplemented
        return not self.__eq__(other)

    def __hash__(self) -> int:
        """Hash of ``(dialect, spec)``, consistent with ``==``."""
        return self._hash

    def __repr__(self) -> str:
        """``Filter({...}, dialect='mongo')``."""
        return f"Filter({self._spec!r}, dialect={self._dialect!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the source spec; unpickling recompiles."""
        return (compile_filter, (self._spec, self._dialect))

    def __copy__(self) -> Filter:
        """Filters are immutable: a copy is the filter itself."""
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Filter:
        """Filters are immutable: a deep copy is the filter itself."""
        return self


_LOGICAL_LISTS: Final = frozenset({"$and", "$or", "$nor"})


def _top_level_fields(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """The top-level keys a (compiled, so valid) spec reads; ``None`` when unsure."""
    found: set[str] = set()
    pending: list[object] = [spec]
    while pending:
        doc = pending.pop()
        if not isinstance(doc, Mapping):
            return None
        for key, value in doc.items():
            if not isinstance(key, str):
                return None
            if key in _LOGICAL_LISTS:
                if not isinstance(value, list):
                    return None
                pending.extend(value)
            elif key == "$not":  # wix: an object or a one-element list
                pending.extend(value if isinstance(value, list) else [value])
            elif key == "$comment":
                continue
            elif key.startswith("$"):
                return None
            else:
                found.add(key)
                found.add(key.split(".", 1)[0])
    return frozenset(found)


def compile_filter(spec: Mapping[str, Any] | None, dialect: Dialect = "mongo") -> Filter:
    """Compile ``spec`` in ``dialect`` into a :class:`Filter`.

    ``None`` and ``{}`` match everything. Raises :class:`InvalidFilter` (with the
    dotted path into the spec and the reason) when the spec is not valid in the
    dialect, and nothing else.
    """
    if dialect not in _DIALECTS:
        raise InvalidFilter("", f"unknown dialect {dialect!r}: expected 'mongo' or 'wix'")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise InvalidFilter("", f"a filter must be an object, not {type(spec).__name__}")
    try:
        if dialect == "mongo":
            from taskengine.filters._mongo import compile_mongo

            predicate = compile_mongo(spec)
        else:
            from taskengine.filters._wix import compile_wix

            predicate = compile_wix(spec)
    except InvalidFilter:
        raise
    except RecursionError:
        raise InvalidFilter("", "the filter is nested too deeply") from None
    except Exception as exc:  # pragma: no cover - a compiler bug must still be typed
        raise InvalidFilter("", f"cannot compile filter: {exc!r}") from exc
    try:
        return Filter(spec, dialect, predicate)
    except Exception as exc:
        raise InvalidFilter("", f"the filter holds a value that cannot be copied: {exc!r}") from exc


def matches(
    spec: Mapping[str, Any] | None, doc: Mapping[str, Any], dialect: Dialect = "mongo"
) -> bool:
    """Whether ``doc`` matches ``spec`` (compiles it; prefer :func:`compile_filter` in loops)."""
    return compile_filter(spec, dialect)(doc)
