"""The errors of the PostgreSQL parts: every psycopg error becomes one of these.

Both are kinds of ``StorageError`` (``taskengine.errors``), raised ``from`` the driver's
exception::

    StorageError
    └── PostgresError              a PostgreSQL operation failed (action, location, SQLSTATE)
        └── TransactionConflict    serialization failure or deadlock: run it again

Nothing here imports psycopg at run time, so :func:`missing_extra` can explain its absence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from taskengine.errors import StorageError

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresError", "TransactionConflict", "driver_error", "missing_extra"]

_CONFLICTS = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


class PostgresError(StorageError):
    """A PostgreSQL operation failed; the driver's exception is the ``__cause__``.

    Attributes:
        action: what was being done (``"connect"``, ``"read"``, ``"commit"``, ...).
        location: the server and database (``postgresql://user@host:port/db``), no password.
        detail: the server's or the driver's message.
        sqlstate: the server's SQLSTATE code, or ``None`` (e.g. the connection failed).
        retryable: whether running the transaction again may succeed.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self, action: str, location: str, detail: str, sqlstate: str | None = None
    ) -> None:
        self.action = action
        self.location = location
        self.detail = detail
        self.sqlstate = sqlstate
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        super().__init__(f"PostgreSQL could not {action} on {location}: {detail}{code}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.action, self.location, self.detail, self.sqlstate))


class TransactionConflict(PostgresError):
    """A serialization failure (SQLSTATE 40001) or deadlock (40P01): the transaction was
    rolled back, and running it again may succeed."""

    retryable: ClassVar[bool] = True


def driver_error(action: str, location: str, exc: psycopg.Error) -> PostgresError:
    """The :class:`PostgresError` (or :class:`TransactionConflict`) for a driver error."""
    sqlstate = exc.sqlstate
    kind = TransactionConflict if sqlstate in _CONFLICTS else PostgresError
    detail = str(exc).strip() or type(exc).__name__
    return kind(action, location, detail, sqlstate)


def missing_extra(exc: ImportError) -> ModuleNotFoundError:
    """The error to raise when psycopg or its pool cannot be imported."""
    return ModuleNotFoundError(
        f"PostgreSQL support needs the 'postgres' extra ({exc.name} is not installed): "
        "pip install 'taskengine[postgres]'",
        name=exc.name,
    )
