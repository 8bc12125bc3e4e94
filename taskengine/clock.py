"""Where the engine gets the time: the real clock, or a hand-driven one for tests.

Every timestamp the engine records (``startedAt``, ``finishedAt``, ``expiresAt``) and
every retention or schedule decision comes from one :class:`Clock`. Waiting (worker
idle time, ``wait`` timeouts) uses real time regardless, so a :class:`ManualClock`
never makes a test sleep.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol

from taskengine._values import utc_ms

__all__ = ["Clock", "ManualClock", "SystemClock", "utc_ms"]


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> datetime:
        """The current time, an aware UTC datetime."""


class SystemClock:
    """The real wall clock (UTC)."""

    def now(self) -> datetime:
        """The current time, an aware UTC datetime truncated to milliseconds."""
        return utc_ms(datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to; thread-safe.

    Args:
        start: the initial time (naive = UTC); default 2026-01-01T00:00:00Z.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = utc_ms(start or datetime(2026, 1, 1, tzinfo=timezone.utc))

    def now(self) -> datetime:
        """The clock's current time."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (a timedelta or seconds); return the new time.

        Raises:
            ValueError: ``delta`` is negative (time never runs backwards here).
        """
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError(f"cannot move a clock backwards (delta {step})")
        with self._lock:
            self._now = utc_ms(self._now + step)
            return self._now

    def set(self, moment: datetime) -> None:
        """Move the clock to ``moment`` (naive = UTC), which must not be in its past.

        Raises:
            ValueError: ``moment`` is earlier than the clock's current time.
        """
        target = utc_ms(moment)
        with self._lock:
            if target < self._now:
                raise ValueError(f"cannot move a clock backwards ({self._now} -> {target})")
            self._now = target

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()})"
