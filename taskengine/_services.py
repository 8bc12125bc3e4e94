"""The services an engine runs beside its tasks: each started once, then ticked when due.

A :class:`~taskengine.tasktype.Service` (the publish-status scheduler) is handed the
engine's item storage when the engine first runs, and ``now`` from the engine's clock on
every tick; it answers when it is next due, so the housekeeping thread can sleep until
then. Started outside the engine lock: a service may read storage for a while.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime
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
    started: bool = False
    due: datetime | None = None


class Services:
    """The engine's services, in registration order; thread-safe."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._on = False

    def add(self, service: Service) -> bool:
        """Add a service; once the engine runs, start it at once. Return whether it started."""
        slot = _Slot(service)
        with self._lock:
            self._slots.append(slot)
            on = self._on
        if on:
            service.start(self._storage)
            slot.started = True
        return on

    def start(self, *, raise_errors: bool) -> None:
        """Start every service not started yet (an error is logged, or raised if asked)."""
        with self._lock:
            self._on = True
            slots = [slot for slot in self._slots if not slot.started]
        for slot in slots:
            try:
                slot.service.start(self._storage)
                slot.started = True
            except Exception:
                if raise_errors:
                    raise
                _log.exception("service %r failed to start", slot.service)

    def tick(self, now: datetime, *, raise_errors: bool) -> None:
        """Tick every started service with ``now``; remember when each is next due."""
        with self._lock:
            slots = list(self._slots)
        for slot in slots:
            if not slot.started:
                continue
            try:
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
