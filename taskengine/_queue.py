"""The engine's work queue: task ids waiting for a worker, each claimed by one at a time.

A task id may be queued more than once (created, then found again when the engine
recovers); a claimed id is skipped until its worker releases it, so two workers never
run the same task.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

__all__ = ["WorkQueue"]


class WorkQueue:
    """Task ids in arrival order, claimed and released by workers; thread-safe."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._queue: collections.deque[str] = collections.deque()
        self._claimed: set[str] = set()

    def put(self, task_id: str) -> None:
        """Queue a task and wake one waiting worker."""
        with self._ready:
            self._queue.append(task_id)
            self._ready.notify()

    def put_missing(self, task_ids: Iterable[str]) -> None:
        """Queue each of ``task_ids`` not queued yet, in order, and wake every worker."""
        with self._ready:
            queued = set(self._queue)
            for task_id in task_ids:
                if task_id not in queued:
                    self._queue.append(task_id)
            self._ready.notify_all()

    def claim(self) -> str | None:
        """The next queued task no worker holds, now claimed; ``None`` when there is none."""
        with self._ready:
            while self._queue:
                task_id = self._queue.popleft()
                if task_id not in self._claimed:
                    self._claimed.add(task_id)
                    return task_id
            return None

    def release(self, task_id: str) -> None:
        """Let go of a claimed task (its run ended)."""
        with self._ready:
            self._claimed.discard(task_id)

    def wait(self, stopping: threading.Event) -> None:
        """Block until something is queued or ``stopping`` is set (see :meth:`wake_all`)."""
        with self._ready:
            while not self._queue and not stopping.is_set():
                self._ready.wait()

    def wake_all(self) -> None:
        """Wake every waiting worker (to see that the engine stops)."""
        with self._ready:
            self._ready.notify_all()
