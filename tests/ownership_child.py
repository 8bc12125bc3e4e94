"""One ``TaskEngine`` process for tests/core/test_ownership_processes.py.

Run as ``python tests/ownership_child.py '<json config>'``. The engine works on the SQLite
file ``config["path"]`` (items and tasks in one file, so each batch and its checkpoint
commit together), adopts every task no live engine owns, and is driven by lines on
stdin; it answers on stdout, one line per message:

* it says ``ready <owner>`` once started (``owner`` is the engine's lease owner id);
* ``go`` releases a paused batch, ``owned`` asks for ``owned <task ids>`` (the tasks it
  holds a lease on now), ``stop`` (or the end of stdin) stops the engine, which then says
  ``stopped`` and exits 0.

Config keys: ``path``; ``lease`` and ``poll`` (seconds); ``batch`` and ``workers``;
``tick`` (the housekeeping interval); and the test hooks, all off by default:

* ``plain``: the engine loads the built-in task types itself (no test code in the engine;
  ``pause_at`` and ``report`` need the test's executor wrapper and do nothing then);
* ``pause_at``: after this process's n-th committed batch, the worker stops at the door
  of its next batch (in ``storage.atomic()``, before the transaction begins), says
  ``paused <n>`` and waits for ``go``: it holds no transaction and no lock of the file,
  and it has passed the batch loop's own look at a lost lease, so what it does next is
  scan, apply and reach the batch's fence;
* ``report``: say ``apply <items>`` whenever the executor applies a batch (inside the
  batch's transaction) and ``committed <n> <items written>`` after every committed batch;
* ``stamp``: the storage stamps every item it writes with ``flips`` (one more on every
  committed write of the item) and ``flippedAt`` (``time.time()``), in the same
  transaction as the write, so the file itself says how often an item was written.

Warnings (a lost lease, a failed renewal) are logged to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import attrs

from taskengine import SQLiteStorage, SQLiteTaskStore, TaskEngine
from taskengine.storage import Environment, WriteResult
from taskengine.storage.base import Storage
from taskengine.tasktype import BatchChanges, Executor, Plan, TaskOptions
from taskengine.tasktypes import default_task_types

#: Bounds every wait of the child, so a forgotten child cannot hang anything for long.
PATIENCE = 120.0

_SAY = threading.Lock()


def say(line: str) -> None:
    """One line to the parent (threads never interleave their lines)."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class HookedStorage(SQLiteStorage):
    """``SQLiteStorage`` with the test hooks: stamped writes, a pause before a batch."""

    def __init__(self, path: str, counter: Counter, *, stamp: bool) -> None:
        super().__init__(path)
        self.counter = counter
        self.stamp = stamp

    def replace_items(
        self,
        collection: str,
        environment: Environment | str,
        items: Sequence[Mapping[str, Any]],
    ) -> WriteResult:
        """Write the items (with ``flips`` one more and ``flippedAt`` now, to stamp)."""
        if self.stamp:
            moment = time.time()
            items = [
                {**item, "flips": item.get("flips", 0) + 1, "flippedAt": moment} for item in items
            ]
        return super().replace_items(collection, environment, items)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """The storage's transaction, entered once a pause at its door is over."""
        self.counter.at_door()
        with super().atomic():
            yield


class Hooked:
    """An executor that reports (and may pause after) each committed batch of ``inner``."""

    def __init__(self, inner: Executor, counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        """The inner plan."""
        return self.inner.plan(options, storage)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        """The inner changes (reported)."""
        if self.counter.report:
            say(f"apply {len(items)}")
        return self.inner.apply(plan, items)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        """Tell the inner executor, then report and maybe pause (see the module docstring)."""
        self.inner.committed(plan, changes, written)
        self.counter.committed(len(written.done))


@attrs.define
class Counter:
    """This process's committed batches, over every task type; the pause point."""

    pause_at: int
    report: bool
    go: threading.Event = attrs.field(factory=threading.Event)
    batches: int = 0
    _armed: int | None = None  # the thread to stop at its next transaction's door
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def committed(self, written: int) -> None:
        """Count one committed batch and report it; at ``pause_at``, arm the pause."""
        with self._lock:
            self.batches += 1
            number = self.batches
            if number == self.pause_at:
                self._armed = threading.get_ident()
        if self.report:
            say(f"committed {number} {written}")

    def at_door(self) -> None:
        """Before a transaction: the armed thread says ``paused <n>`` and waits for ``go``."""
        with self._lock:
            if self._armed != threading.get_ident():
                return
            self._armed = None
            number = self.batches
        say(f"paused {number}")
        self.go.wait(PATIENCE)


def open_engine(config: Mapping[str, Any], counter: Counter) -> tuple[TaskEngine, SQLiteStorage]:
    """The engine the config asks for, on its own connection to the file."""
    storage = (
        HookedStorage(config["path"], counter, stamp=config.get("stamp", False))
        if config.get("stamp") or counter.pause_at
        else SQLiteStorage(config["path"])
    )
    settings: dict[str, Any] = {
        "task_store": SQLiteTaskStore(storage),
        "lease": timedelta(seconds=config.get("lease", 2.0)),
        "poll_interval": config.get("poll", 0.1),
        "batch_size": config.get("batch", 500),
        "set_batch_size": config.get("batch", 500),  # kill points land batch by batch
        "workers": config.get("workers", 1),
        "tick_interval": config.get("tick", 1.0),
        "adopt": True,
        "retry_delay": 0.01,
    }
    if config.get("plain"):
        return TaskEngine(storage, **settings), storage
    return hooked_engine(storage, counter, settings), storage


def hooked_engine(storage: Any, counter: Counter, settings: Mapping[str, Any]) -> TaskEngine:
    """An engine whose built-in task types report to ``counter`` (and pause at its
    mark), with the built-in services registered."""
    builtin = default_task_types()
    types = [
        attrs.evolve(task_type, executor=Hooked(task_type.executor, counter))
        for task_type in builtin.task_types
    ]
    engine = TaskEngine(storage, task_types=types, **settings)
    for service in builtin.services:
        engine.register_service(service)
    return engine


def run_child(
    argv: Sequence[str],
    opener: Callable[[Mapping[str, Any], Counter], tuple[TaskEngine, Any]],
    *,
    timestamps: bool = False,
) -> int:
    """Open the engine ``opener`` makes from the JSON config in ``argv[1]``, start it,
    obey stdin (``go``, ``owned``, ``stop``), stop; see the module docstring."""
    config = json.loads(argv[1])
    stamp = "%(asctime)s " if timestamps else ""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format=f"{stamp}{config.get('name', 'child')} %(levelname)s %(name)s: %(message)s",
    )
    counter = Counter(pause_at=config.get("pause_at", 0), report=config.get("report", False))
    engine, storage = opener(config, counter)
    engine.start()
    say(f"ready {engine.owner}")
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            counter.go.set()
        elif command == "owned":
            say(" ".join(["owned", *engine.owned()]))
        elif command == "stop":
            break
    counter.go.set()  # a paused worker must not keep stop() waiting
    engine.stop(timeout=PATIENCE)
    storage.close()
    say("stopped")
    return 0


def main(argv: Sequence[str]) -> int:
    """Start the engine, obey stdin, stop; see the module docstring."""
    return run_child(argv, open_engine)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
