"""Push-down: a compiled filter translated for a database, as a storage asks for it.

:meth:`taskengine.filters.Filter.to_sql` calls :func:`translate`; a storage reaches it
by duck typing (storage does not import filters) and gets a
:class:`~taskengine.filters._sql.SQLCondition`, or ``None`` when the filter is not
worth pushing down (nothing in it has a SQL form) or cannot be (the SQL would be too
large or too deep for the database). Translations are cached per filter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final, Protocol

from taskengine.filters._sql import TRUE, Bound, SQLCondition, TooComplex
from taskengine.filters._sql_backend import Backend
from taskengine.filters._sql_sqlite import SQLiteJSON

__all__ = ["BACKENDS", "Compiled", "translate"]


class Compiled(Hashable, Protocol):
    """What is translated: a compiled filter's spec and dialect (a ``Filter``, hashable)."""

    @property
    def spec(self) -> Mapping[str, Any]:
        """The source spec."""
        ...

    @property
    def dialect(self) -> str:
        """``"mongo"`` or ``"wix"``."""
        ...


def _postgres(document: str) -> Backend:
    from taskengine.filters._sql_postgres import PostgresJSONB

    return PostgresJSONB(document)


BACKENDS: Final[dict[str, Callable[[str], Backend]]] = {
    "sqlite": SQLiteJSON,
    "postgresql": _postgres,
}
"""The backends by name: each makes a :class:`Backend` for a document column."""


def bound_of(spec: Mapping[str, Any], dialect: str, backend: Backend) -> Bound:
    """The finished bound of a valid spec in ``dialect`` for ``backend``.

    Raises:
        TooComplex: the SQL would be too deep or too large.
    """
    if dialect == "mongo":
        from taskengine.filters._sql_mongo import mongo_bound

        bound = mongo_bound(spec, backend)
    else:
        from taskengine.filters._sql_wix import wix_bound

        bound = wix_bound(spec, backend)
    bound = backend.finish(bound)
    sent = len(bound.where.params) + (0 if bound.exact else len(bound.sure.params))
    if sent > backend.max_params:
        raise TooComplex("too many parameters")
    backend.check(bound)
    return bound


@functools.lru_cache(maxsize=512)
def translate(flt: Compiled, backend: str, document: str) -> SQLCondition | None:
    """``flt`` as a condition over ``document`` for the named backend, or ``None``.

    ``None`` for an unknown backend, a filter with no SQL form at all (the condition
    would be ``TRUE``, which saves nothing), or one too complex to send.
    """
    make = BACKENDS.get(backend)
    if make is None:
        return None
    try:
        bound = bound_of(flt.spec, flt.dialect, make(document))
    except (TooComplex, RecursionError):
        return None
    if bound.where == TRUE and not bound.exact:
        return None
    return SQLCondition.of(bound)
