"""The ranges of a ``TaskEngine``'s settings, checked before anything is built.

:func:`check_settings` owns every rule on the engine's constructor arguments (their
meaning is documented on :class:`~taskengine.engine.TaskEngine`): all of them are checked,
and every violation is reported at once, named by its argument name.
"""

from __future__ import annotations

from datetime import timedelta

from taskengine.errors import InvalidRequest, Violation

__all__ = ["check_settings"]


def check_settings(
    *,
    workers: int,
    batch_size: int,
    set_batch_size: int | None,
    set_batch_seconds: float,
    retention: timedelta,
    max_retries: int,
    retry_delay: float,
    tick_interval: float,
    lease: timedelta,
    poll_interval: float,
    adopt: bool,
    owner: str | None,
    listen: bool,
) -> None:
    """Check a ``TaskEngine``'s settings (see its arguments); return if all are in range.

    Raises:
        InvalidRequest: one :class:`~taskengine.errors.Violation` per setting out of
            range, named by its argument name (``workers``, ``lease``, ...).
    """
    problems: list[Violation] = []
    for name, value, low in (
        ("workers", workers, 1),
        ("batch_size", batch_size, 1),
        ("max_retries", max_retries, 0),
        *([] if set_batch_size is None else [("set_batch_size", set_batch_size, 1)]),
    ):
        if type(value) is not int or value < low:
            problems.append(Violation(name, f"must be an integer >= {low}, got {value!r}"))
    if not isinstance(retention, timedelta) or retention < timedelta(0):
        problems.append(Violation("retention", "must be a non-negative timedelta"))
    for name, number in (("retry_delay", retry_delay), ("tick_interval", tick_interval)):
        if not isinstance(number, (int, float)) or isinstance(number, bool) or number < 0:
            problems.append(Violation(name, "must be a non-negative number of seconds"))
    if (
        not isinstance(set_batch_seconds, (int, float))
        or isinstance(set_batch_seconds, bool)
        or not 0 < set_batch_seconds <= 3600
    ):
        problems.append(Violation("set_batch_seconds", "must be a number of seconds in (0, 3600]"))
    if (
        not isinstance(poll_interval, (int, float))
        or isinstance(poll_interval, bool)
        or not 0 < poll_interval <= 3600
    ):
        problems.append(Violation("poll_interval", "must be a number of seconds in (0, 3600]"))
    if not isinstance(lease, timedelta) or lease < timedelta(milliseconds=10):
        problems.append(Violation("lease", "must be a timedelta of at least 10 ms"))
    for name, flag in (("adopt", adopt), ("listen", listen)):
        flag_value: object = flag
        if type(flag_value) is not bool:
            problems.append(Violation(name, "must be True or False"))
    if owner is not None and (type(owner) is not str or not owner.strip()):
        problems.append(Violation("owner", "must be a non-empty string"))
    if problems:
        raise InvalidRequest(problems)
