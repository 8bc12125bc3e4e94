"""The services an engine runs beside its tasks: each started once, then ticked when due.

A :class:`~taskengine.tasktype.Service` (the publish-status scheduler) is handed the
engine's item storage when the engine becomes its leader, and ``now`` from the engine's
clock on every tick; it answers when it is next due, so the housekeeping thread can
sleep until then. Started outside the engine lock: a service may read storage for a
while. Of the engines sharing a task store, only the leader of a service runs it.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from taskengine.storage.base import Storage
    from taskengine.tasktype import Service, TaskType

__all__ = ["Services", "load_plugin"]

_log = logging.getLogger("taskengine.engine")


@attrs.define
class _Slot:
    service: Service
    role: str
    started: bool = False
    due: datetime | None = None
    synced: float = 0.0


Lead = Callable[[str, datetime], "tuple[bool, bool]"]
"""``lead(role, now) -> (leading, just became leader)``: the engine's leader leases."""


class Services:
    """The engine's services, in registration order; thread-safe.

    Each service runs in one engine at a time on a shared task store: the engine holding
    the leader lease of the service's role (``service:<class>:<n>``). An engine starts a
    service (``service.start(storage)``, which rebuilds what it keeps in memory from
    storage) when it becomes its leader, ticks it while it leads, and, when other
    processes may write the store (``resync`` is set), starts it again every ``resync``
    so that work other engines stored (scheduled dates) is picked up.
    """

    def __init__(self, storage: Storage, *, resync: timedelta | None = None) -> None:
        self._storage = storage
        self._resync = None if resync is None else resync.total_seconds()
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._on = False

    def add(self, service: Service) -> bool:
        """Add a service; return whether the engine runs (it is started on the next tick)."""
        with self._lock:
            kind = f"{type(service).__module__}.{type(service).__qualname__}"
            same = sum(1 for slot in self._slots if slot.role.startswith(f"service:{kind}:"))
            self._slots.append(_Slot(service, f"service:{kind}:{same}"))
            return self._on

    def activate(self) -> None:
        """The engine runs: services are started (by their leader) from the next tick on."""
        with self._lock:
            self._on = True

    def tick(self, now: datetime, lead: Lead, *, raise_errors: bool) -> None:
        """Tick every service this engine leads with ``now`` (starting it first when it
        just became the leader); remember when each is next due."""
        with self._lock:
            slots = list(self._slots) if self._on else []
        for slot in slots:
            try:
                leading, gained = lead(slot.role, now)
                if not leading:
                    slot.started, slot.due = False, None
                    continue
                clock = time.monotonic()
                if (
                    gained
                    or not slot.started
                    or (self._resync is not None and clock - slot.synced >= self._resync)
                ):
                    slot.service.start(self._storage)
                    slot.started, slot.synced = True, clock
                slot.due = slot.service.tick(now)
            except Exception:
                if raise_errors:
                    raise
                _log.exception("service %r failed", slot.service)

    def seconds_until_due(self, now: datetime, longest: float) -> float:
        """Seconds from ``now`` until the next service is due, at most ``longest``."""
        wait = longest
        with self._lock:
            dues = [slot.due for slot in self._slots if slot.due is not None]
        for due in dues:
            wait = min(wait, max(0.0, (due - now).total_seconds()))
        return wait


def load_plugin(name: str) -> tuple[list[TaskType], list[Service]]:
    """Call the ``"module:function"`` plug-in ``name``; return its task types and services.

    The function takes no arguments and returns an object with ``task_types`` and
    ``services`` (such as :class:`taskengine.tasktypes.BuiltinTypes`).
    """
    module_name, _, function_name = name.partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module_name), function_name)
    found = factory()
    return list(found.task_types), list(found.services)
