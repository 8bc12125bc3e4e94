"""One ``TaskEngine`` process on a PostgreSQL database, for the scale-out and partition tests.

Run as ``python tests/pg_engine_child.py '<json config>'``. The engine keeps items and
tasks in the database ``config["dsn"]`` (a ``PostgresStorage`` and a ``PostgresTaskStore``
sharing one ``PgDatabase``, so each batch and its checkpoint commit together), adopts
every task no live engine owns, and is driven by lines on stdin; it answers on stdout, one
line per message (as tests/ownership_child.py does, whose hooks it reuses):

* it says ``ready <owner>`` once started (``owner`` is the engine's lease owner id);
* ``go`` releases a paused batch, ``owned`` asks for ``owned <task ids>`` (the tasks it
  holds a lease on now), ``stop`` (or the end of stdin) stops the engine, which then says
  ``stopped`` and exits 0.

Config keys: ``dsn``; ``name`` (also the connections' ``application_name``, so the parent
can find this process's sessions in ``pg_stat_activity``); ``lease`` and ``poll``
(seconds); ``batch``, ``workers``, ``listen`` (the engine's ``listen``); and the hooks
of tests/ownership_child.py, off by default: ``report`` (say ``apply <items>`` when a
batch is applied, inside its transaction, and ``committed <n> <items>`` after each
committed batch) and ``pause_at`` (after the n-th committed batch, the worker says
``paused <n>`` at the door of its next transaction, outside any, and waits for ``go``).
Without hooks the engine runs the built-in task types as they are.

Warnings (a lost lease, a failed renewal, storage errors) are logged to stderr.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ownership_child import Counter, hooked_engine, run_child
from psycopg.conninfo import make_conninfo

from taskengine import PostgresStorage, PostgresTaskStore, TaskEngine


class PausingStorage(PostgresStorage):
    """``PostgresStorage`` whose transactions wait at their door while a pause is armed."""

    def __init__(self, dsn: str, counter: Counter) -> None:
        super().__init__(dsn)
        self.counter = counter

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """The storage's transaction, entered once a pause at its door is over."""
        self.counter.at_door()
        with super().atomic():
            yield


def open_engine(config: Mapping[str, Any], counter: Counter) -> tuple[TaskEngine, PostgresStorage]:
    """The engine the config asks for, on its own connections to the database."""
    dsn = make_conninfo(config["dsn"], application_name=config.get("name", "child"))
    hooked = bool(counter.report or counter.pause_at)
    storage = PausingStorage(dsn, counter) if hooked else PostgresStorage(dsn)
    settings: dict[str, Any] = {
        "task_store": PostgresTaskStore(storage),
        "lease": timedelta(seconds=config.get("lease", 2.0)),
        "poll_interval": config.get("poll", 0.1),
        "batch_size": config.get("batch", 100),
        "set_batch_size": config.get("batch", 100),  # kill points land batch by batch
        "workers": config.get("workers", 1),
        "tick_interval": config.get("tick", 1.0),
        "listen": config.get("listen", False),
        "adopt": True,
        "retry_delay": 0.01,
    }
    if not hooked:
        return TaskEngine(storage, **settings), storage
    return hooked_engine(storage, counter, settings), storage


def main(argv: Sequence[str]) -> int:
    """Start the engine, obey stdin, stop; see the module docstring."""
    return run_child(argv, open_engine, timestamps=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
