"""``LISTEN``/``NOTIFY`` receiving: a :class:`Listener` on a dedicated connection.

PostgreSQL delivers a notification to every session listening on its channel when the
sending transaction commits; a listener's connection is in autocommit mode and outside
any pool, so it never holds a transaction open and never waits behind other work.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple, TypeAlias

from taskengine.storage._pgerrors import driver_error, missing_extra

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise missing_extra(exc) from exc

__all__ = ["Listener", "Notification"]

Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

# How long a waiting Listener.get holds the connection before it looks at close() again:
# close() (an engine's stop) waits for it. At 0.2 s, a worker process that ran a task of
# one second spent a fifth of that more stopping; woken 20 times a second, an idle
# listener costs microseconds of CPU.
_SLICE = 0.05


class Notification(NamedTuple):
    """One ``NOTIFY`` received by a :class:`Listener`."""

    channel: str
    payload: str
    pid: int
    """The server process id of the sending session."""


class Listener:
    """Notifications of some channels, received on a dedicated autocommit connection.

    Made by ``PgDatabase.listen``. Safe to share between threads: :meth:`get` returns
    each notification once, to one caller. :meth:`close` (from any thread) ends the waits
    in progress within a fraction of a second. Iterating yields notifications until the
    listener is closed.

    Args:
        conn: an autocommit connection, the listener's alone from now on (closed by
            :meth:`close`, also when ``LISTEN`` fails).
        channels: the channels to listen to, names exactly as ``NOTIFY`` sends them.
        location: the server and database, for error messages.

    Raises:
        PostgresError: a ``LISTEN`` failed.
    """

    def __init__(self, conn: Connection, channels: tuple[str, ...], location: str) -> None:
        self.channels = channels
        self.location = location
        self._lock = threading.Lock()
        self._pending: deque[Notification] = deque()
        self._closed = False
        self._conn = conn
        try:
            for channel in channels:
                self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            self._conn.close()
            raise driver_error(f"listen to {channel!r}", self.location, exc) from exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Listener {list(self.channels)} on {self.location} {state}>"

    def __enter__(self) -> Listener:
        """Use as a context manager: the listener is closed on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the listener."""
        self.close()

    def __iter__(self) -> Iterator[Notification]:
        """Every notification, as it arrives, until the listener is closed."""
        while (notification := self.get()) is not None:
            yield notification

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (directly or by the database's close)."""
        return self._closed

    def get(self, timeout: float | None = None) -> Notification | None:
        """The next notification, waiting up to ``timeout`` seconds (``None``: until one
        arrives); ``None`` when none came in time or the listener is closed.

        Raises:
            PostgresError: the connection failed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._pending:
                    return self._pending.popleft()
                if self._closed:
                    return None
                left = _SLICE if deadline is None else deadline - time.monotonic()
                try:
                    for notify in self._conn.notifies(
                        timeout=max(0.0, min(left, _SLICE)), stop_after=1
                    ):
                        self._pending.append(Notification(*notify))
                except psycopg.Error as exc:
                    raise driver_error("wait for notifications", self.location, exc) from exc
                if self._pending:
                    return self._pending.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """Stop listening and close the connection. Idempotent."""
        self._closed = True  # read by waiting get() calls between slices
        with self._lock:
            self._pending.clear()
            if not self._conn.closed:
                self._conn.close()
