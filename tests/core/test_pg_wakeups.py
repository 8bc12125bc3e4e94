"""Engines hear the task store's notifications: wake-ups, cancels and waits without polling.

First the notification protocol on its own (payloads, stores without notifications, a
listener that cannot connect, ``listen=False``), with a fake notifying store; then engines
on a real PostgreSQL server, with another process creating, cancelling and finishing
tasks. Every engine under test polls every 30 s with a lease of 5 minutes (its owner
thread looks for work every 30 s), so only a notification explains what it does within
seconds. Waits are bounded and decided by progress: the engine's ``listening`` flag, its
log, the task in the store, the listener's backend in ``pg_stat_activity``.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from reference_tasks import edit_task
from test_engine_ownership import Gate, edit_executor, fill, gated_types, tags

from taskengine import (
    MemoryStorage,
    MemoryTaskStore,
    PostgresTaskStore,
    SQLiteStorage,
    SQLiteTaskStore,
    TaskEngine,
    TaskStatus,
)
from taskengine.errors import StorageError
from taskengine.task import Failure, RawOptions, Task
from taskengine.taskstore import NOTICE_CANCEL, NOTICE_DONE, NOTICE_NEW, read_notice

WAIT = 30.0  # seconds: a bound for what should take milliseconds
POLL = 30.0  # the engines' poll interval: far longer than any latency asserted here
LEASE = timedelta(minutes=5)  # lease / 6 > POLL: the owner thread looks every POLL
PROMPT = 5.0  # seconds: "at once" on a loaded 2-core machine, still far below POLL
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def quiet_engine(storage: Any, store: Any, **settings: Any) -> TaskEngine:
    """An engine that polls every 30 s, with a 5-minute lease."""
    settings.setdefault("batch_size", 10)
    return TaskEngine(storage, task_store=store, poll_interval=POLL, lease=LEASE, **settings)


# -- the protocol, with a fake notifying store ----------------------------------------


class FakeNotices:
    """A listener of :class:`FakeNotifyingStore`: payloads from a queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[str | Exception | None] = queue.Queue()
        self.closed = False

    def get(self, timeout: float | None = None) -> SimpleNamespace | None:
        if self.closed:
            return None
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Exception):
            raise item
        return None if item is None else SimpleNamespace(payload=item)

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


class FakeNotifyingStore(MemoryTaskStore):
    """A memory store with ``listen()``; the test sends the notices (``tell``), refuses
    the first ``refusals`` listens, or breaks the current connection (``drop``)."""

    def __init__(self, refusals: int = 0) -> None:
        super().__init__()
        self.refusals = refusals
        self.listeners: list[FakeNotices] = []
        self.reads: dict[str, int] = {}

    def get(self, task_id: str) -> Task | None:
        self.reads[task_id] = self.reads.get(task_id, 0) + 1
        return super().get(task_id)

    def listen(self) -> FakeNotices:
        if self.refusals > 0:
            self.refusals -= 1
            raise StorageError("the server refused the connection")
        listener = FakeNotices()
        self.listeners.append(listener)
        return listener

    def open_listeners(self) -> list[FakeNotices]:
        return [listener for listener in self.listeners if not listener.closed]

    def tell(self, payload: str) -> None:
        for listener in self.open_listeners():
            listener.queue.put(payload)

    def drop(self) -> None:
        for listener in self.open_listeners():
            listener.queue.put(StorageError("connection lost"))


def test_notice_payloads_name_the_task_and_what_happened() -> None:
    """A bare id is a new task (or an old-style cancel); ``"<id> cancel"`` and ``"<id>
    done"`` name their kind; any other last word is part of a bare id."""
    assert read_notice("0b1c") == ("0b1c", NOTICE_NEW)
    assert read_notice("0b1c cancel") == ("0b1c", NOTICE_CANCEL)
    assert read_notice("0b1c done") == ("0b1c", NOTICE_DONE)
    assert read_notice("my task") == ("my task", NOTICE_NEW)
    assert read_notice("a b done") == ("a b", NOTICE_DONE)
    assert read_notice(" done") == (" done", NOTICE_NEW)
    assert read_notice("done") == ("done", NOTICE_NEW)
    assert read_notice("") == ("", NOTICE_NEW)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_stores_without_notifications_start_no_listener(kind: str, tmp_path: Path) -> None:
    """Memory and SQLite stores offer no ``listen()``: a started engine polls, as before,
    and runs no listener thread."""
    if kind == "memory":
        storage: Any = MemoryStorage()
        store: Any = MemoryTaskStore()
    else:
        storage = SQLiteStorage(tmp_path / "tasks.db")
        store = SQLiteTaskStore(storage)
    engine = TaskEngine(storage, task_store=store, poll_interval=0.05)
    engine.start()
    try:
        assert not hasattr(store, "listen")
        assert engine.running
        assert not engine.listening
        names = [thread.name for thread in threading.enumerate()]
        assert "taskengine-listener" not in names
    finally:
        engine.stop()
        if kind == "sqlite":
            storage.close()


def test_listen_false_never_listens() -> None:
    """``TaskEngine(listen=False)`` polls only, even on a store that notifies."""
    store = FakeNotifyingStore()
    engine = quiet_engine(MemoryStorage(), store, listen=False)
    engine.start()
    try:
        assert not engine.listening
        assert store.listeners == []
    finally:
        engine.stop()


def test_a_listener_that_cannot_connect_retries_and_then_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused twice, the engine logs, tries again after 0.1 s then 0.2 s, and once
    listening it looks for work at once: a task created meanwhile (never notified) runs."""
    store = FakeNotifyingStore(refusals=2)
    storage = MemoryStorage()
    fill(storage, 20)
    creator = quiet_engine(storage, store)  # never started: it only creates
    engine = quiet_engine(storage, store)
    with caplog.at_level(logging.WARNING, logger="taskengine.engine"):
        engine.start()
        try:
            task = creator.create_task(edit_task(operations={"addItems": ["z"]}))
            done = engine.wait(task.id, WAIT)
            assert engine.listening
        finally:
            engine.stop()
    assert done.status is TaskStatus.COMPLETED
    refused = [r for r in caplog.records if "cannot listen" in r.getMessage()]
    assert len(refused) == 2
    assert "0.1 s" in refused[0].getMessage()
    assert "0.2 s" in refused[1].getMessage()
    assert store.open_listeners() == []


def test_a_dropped_listener_reconnects_and_notices_flow_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection lost while listening is logged and opened again; notices then wake the
    engine as before, and stop() closes the new listener."""
    store = FakeNotifyingStore()
    storage = MemoryStorage()
    fill(storage, 20)
    creator = quiet_engine(storage, store)
    engine = quiet_engine(storage, store)
    with caplog.at_level(logging.WARNING, logger="taskengine.engine"):
        engine.start()
        try:
            wait_for(lambda: engine.listening, "the first listener")
            store.drop()
            wait_for(lambda: len(store.listeners) == 2 and engine.listening, "a new listener")
            task = creator.create_task(edit_task(operations={"addItems": ["z"]}))
            store.tell(task.id)
            done = engine.wait(task.id, WAIT)
        finally:
            engine.stop()
    assert done.status is TaskStatus.COMPLETED
    assert any("lost the task store's notifications" in r.getMessage() for r in caplog.records)
    assert store.open_listeners() == []


@pytest.mark.parametrize("payload", ["{id} cancel", "{id}"], ids=["cancel", "bare-id"])
def test_a_cancel_notice_for_a_held_task_is_read_back_and_stops_it(
    payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``cancel`` notice, or a bare id (a cancel from a store that named no kinds), of a
    task the engine holds makes it read the task; the cancel found stops the runner before
    its next batch. A notice of a cancel nobody requested changes nothing."""
    gate = Gate(edit_executor(), pause_after=1)
    store = FakeNotifyingStore()
    storage = MemoryStorage()
    fill(storage, 100)
    owner = quiet_engine(storage, store, task_types=gated_types(gate))
    other = quiet_engine(storage, store)  # never started
    owner.start()
    try:
        wait_for(lambda: owner.listening, "the owner to listen")
        task = owner.create_task(edit_task(operations={"addItems": ["z"]}))
        assert gate.reached.wait(WAIT)
        with caplog.at_level(logging.DEBUG, logger="taskengine.engine"):
            reads = store.reads[task.id]
            store.tell(payload.format(id=task.id))  # nobody asked: a hint, read and ignored
            wait_for(lambda: store.reads[task.id] > reads, "the owner to read the task")
            other.cancel_task(task.id)
            store.tell(payload.format(id=task.id))
            wait_for(
                lambda: any("cancel was requested" in r.getMessage() for r in caplog.records),
                "the owner to hear the cancel",
            )
        heard = [r for r in caplog.records if "cancel was requested" in r.getMessage()]
        gate.release.set()
        ended = owner.wait(task.id, WAIT)
    finally:
        gate.release.set()
        owner.stop()
    assert len(heard) == 1
    assert (ended.status, ended.items_succeeded, gate.batches) == (TaskStatus.FAILED, 10, 1)


# -- engines on PostgreSQL, with another process -------------------------------------

CHILD = """
    import sys
    from taskengine import MemoryStorage, PostgresTaskStore, TaskEngine

    dsn, count = sys.argv[1], int(sys.argv[2])
    storage = MemoryStorage()
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"{i:05d}", "tags": []} for i in range(count)])
    store = PostgresTaskStore(dsn)
    engine = TaskEngine(storage, task_store=store, batch_size=10)  # never started
    spec = {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items", "fieldKey": "tags", "operations": {"addItems": ["x"]}
        },
    }
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "create":
            print("created", engine.create_task(spec).id, flush=True)
        elif command == "cancel":
            task = engine.cancel_task(args[0])
            print("cancelled", task.status.value, int(task.cancel_requested), flush=True)
        elif command == "run":
            print("ran", engine.run_until_idle(), flush=True)
    store.close()
"""


class Child:
    """Another process with an engine (never started) on the same database: it creates,
    cancels and runs tasks when asked, over its own items (``count`` of them)."""

    def __init__(self, dsn: str, count: int = 20) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), dsn, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.answer() == "ready"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def answer(self) -> str:
        try:
            return self.lines.get(timeout=WAIT)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"the child process did not answer: {self.close()}") from None

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> str:
        """End the process (its stdin closes); return what it wrote to stderr."""
        process = self.process
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdin.close()
        try:
            process.wait(WAIT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(WAIT)
        self.reader.join(WAIT)
        process.stdout.close()
        err = process.stderr.read()
        process.stderr.close()
        return err


@pytest.fixture
def child(pg_database: str) -> Iterator[Child]:
    """Another process on the test's database (20 items of its own)."""
    started = Child(pg_database)
    try:
        yield started
    finally:
        err = started.close()
    assert started.process.returncode == 0, err


def listener_pids(dsn: str) -> list[int]:
    """Server process ids of the sessions listening on the test's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN %%' AND pid <> pg_backend_pid() ORDER BY pid"
        ).fetchall()
    return [int(row[0]) for row in rows]


def make_task(task_id: str) -> Task:
    return Task(
        id=task_id,
        type="COUNT_ITEMS",
        options_key="countItemsOptions",
        options=RawOptions("things", {"dataCollectionId": "things"}),
        created_at=T0,
    )


def test_postgres_payloads_say_new_cancel_and_done(pg_database: str) -> None:
    """insert notifies the bare id, a cancel request ``"<id> cancel"``, an update that
    finishes the task and a save of a finished task ``"<id> done"``; other changes and
    rolled-back ones notify nothing."""
    store = PostgresTaskStore(pg_database)

    def got() -> str | None:
        notice = listener.get(WAIT)
        return None if notice is None else notice.payload

    def finish_and_roll_back() -> None:
        with store.transaction():
            store.update("c", lambda task: task.finished(TaskStatus.COMPLETED, T0, LEASE))
            raise RuntimeError("rolled back")

    try:
        with store.listen() as listener:
            store.insert(make_task("a"))
            assert got() == "a"
            store.update("a", lambda task: task.started(T0, 1))
            store.update("a", lambda task: task.cancel_was_requested())
            assert got() == "a cancel"
            cancelled = Failure.cancelled()
            store.update("a", lambda task: task.finished(TaskStatus.FAILED, T0, LEASE, cancelled))
            assert got() == "a done"
            store.insert(make_task("b"))
            assert got() == "b"
            store.save(make_task("b").started(T0, 1).finished(TaskStatus.COMPLETED, T0, LEASE))
            assert got() == "b done"
            store.insert(make_task("c"))
            assert got() == "c"
            lease = store.claim("c", "me", T0, LEASE)
            assert lease is not None
            running = make_task("c").started(T0, 1)
            store.save(running, lease, now=T0)
            with pytest.raises(RuntimeError):
                finish_and_roll_back()
            assert listener.get(0.3) is None
            store.save(running.finished(TaskStatus.COMPLETED, T0, LEASE), lease, now=T0)
            assert got() == "c done"
            assert listener.get(0.3) is None
    finally:
        store.close()


def test_an_idle_engine_starts_a_task_created_by_another_process_at_once(
    pg_database: str, child: Child
) -> None:
    """An idle engine polling every 30 s runs a task another process creates within
    seconds: it heard the insert."""
    store = PostgresTaskStore(pg_database)
    engine = quiet_engine(MemoryStorage(), store)
    fill(engine.storage, 20)
    engine.start()
    try:
        wait_for(lambda: engine.listening, "the engine to listen")  # it has caught up too
        task_id = child.ask("create").split()[1]
        done = engine.wait(task_id, WAIT)
    finally:
        engine.stop()
        store.close()
    assert done.started_at is not None
    started = (done.started_at - done.created_at).total_seconds()  # one machine's clock
    print(f"\nwake-up: started {started * 1000:.0f} ms after the other process created it")
    assert started < PROMPT
    assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 20)
    assert tags(engine.storage) == [["x"]] * 20  # this engine ran it


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "polling"])
def test_a_cancel_from_another_process_stops_the_owner_before_its_next_batch(
    pg_database: str, child: Child, caplog: pytest.LogCaptureFixture, listen: bool
) -> None:
    """The owner, held between two batches, hears a cancel written by another process and
    ends the task without running another batch; polling only (the control), it learns
    of the cancel from its next batch's update, one batch later."""
    gate = Gate(edit_executor(), pause_after=1)
    store = PostgresTaskStore(pg_database)
    owner = quiet_engine(MemoryStorage(), store, task_types=gated_types(gate), listen=listen)
    fill(owner.storage, 100)
    owner.start()
    try:
        if listen:
            wait_for(lambda: owner.listening, "the owner to listen")
        task = owner.create_task(edit_task(operations={"addItems": ["z"]}))
        assert gate.reached.wait(WAIT)  # batch 1 committed; the owner is between batches
        with caplog.at_level(logging.DEBUG, logger="taskengine.engine"):
            asked = time.monotonic()
            assert child.ask(f"cancel {task.id}") == "cancelled RUNNING 1"
            if listen:
                wait_for(
                    lambda: any(
                        task.id in r.getMessage() and "cancel was requested" in r.getMessage()
                        for r in caplog.records
                    ),
                    "the owner to hear the cancel",
                )
                heard = time.monotonic() - asked
                print(f"\ncancel heard {heard * 1000:.0f} ms after the other process asked")
        gate.release.set()
        ended = owner.wait(task.id, WAIT)
    finally:
        gate.release.set()
        owner.stop()
        store.close()
    assert ended.status is TaskStatus.FAILED
    assert [failure.code for failure in ended.failures] == ["CANCELLED"]
    batches = 1 if listen else 2
    assert gate.batches == batches
    assert ended.items_succeeded == 10 * batches
    assert sum(item == ["z"] for item in tags(owner.storage)) == 10 * batches


def test_wait_in_another_engine_returns_when_the_task_finishes(
    pg_database: str, child: Child
) -> None:
    """``wait()`` in an engine polling every 30 s returns within seconds of another process
    finishing the task: it heard ``"<id> done"`` and read the task once more."""
    reads: list[TaskStatus] = []
    first_read = threading.Event()

    class CountingStore(PostgresTaskStore):
        def get(self, task_id: str) -> Task | None:
            task = super().get(task_id)
            if task is not None and task_id == watched:
                reads.append(task.status)
                first_read.set()
            return task

    store = CountingStore(pg_database)
    waiter = quiet_engine(MemoryStorage(), store, adopt=False)
    waiter.start()
    result: dict[str, Any] = {}
    try:
        wait_for(lambda: waiter.listening, "the waiter to listen")
        watched = child.ask("create").split()[1]

        def wait() -> None:
            result["task"] = waiter.wait(watched, WAIT)
            result["at"] = time.time()

        thread = threading.Thread(target=wait)
        thread.start()
        assert first_read.wait(WAIT)  # the waiter read the NEW task and waits now
        assert child.ask("run") == "ran 1"
        thread.join(WAIT)
    finally:
        waiter.stop()
        store.close()
    assert result["task"].status is TaskStatus.COMPLETED
    returned = result["at"] - result["task"].finished_at.timestamp()  # one machine's clock
    print(f"\nwait() returned {returned * 1000:.0f} ms after the other process finished")
    assert returned < PROMPT
    assert reads[0] is TaskStatus.NEW
    assert reads[-1] is TaskStatus.COMPLETED


def test_the_listener_reconnects_after_the_server_ends_its_session(
    pg_database: str, child: Child, caplog: pytest.LogCaptureFixture
) -> None:
    """``pg_terminate_backend`` of the listening session: the engine logs it, listens again
    on a new session, and the next task another process creates starts at once."""
    store = PostgresTaskStore(pg_database)
    engine = quiet_engine(MemoryStorage(), store)
    fill(engine.storage, 20)
    engine.start()
    try:
        wait_for(lambda: engine.listening and len(listener_pids(pg_database)) == 1, "a listener")
        (first,) = listener_pids(pg_database)
        with caplog.at_level(logging.WARNING, logger="taskengine.engine"):
            with psycopg.connect(pg_database, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (first,))
            wait_for(
                lambda: engine.listening and len(set(listener_pids(pg_database)) - {first}) == 1,
                "a new listening session",
            )
            wait_for(lambda: first not in listener_pids(pg_database), "the old session to end")
        (second,) = listener_pids(pg_database)
        task_id = child.ask("create").split()[1]
        done = engine.wait(task_id, WAIT)
    finally:
        engine.stop()
        store.close()
    assert second != first
    assert any("lost the task store's notifications" in r.getMessage() for r in caplog.records)
    assert done.started_at is not None
    started = (done.started_at - done.created_at).total_seconds()
    print(f"\nafter the reconnect: started {started * 1000:.0f} ms after it was created")
    assert started < PROMPT
    assert (done.status, done.items_succeeded) == (TaskStatus.COMPLETED, 20)


def test_stop_closes_the_listener_and_start_opens_a_new_one(pg_database: str) -> None:
    """stop() ends the listener thread and its session promptly; start() listens again."""
    store = PostgresTaskStore(pg_database)
    engine = quiet_engine(MemoryStorage(), store)
    try:
        for _ in range(2):
            engine.start()
            wait_for(lambda: engine.listening and len(listener_pids(pg_database)) == 1, "listening")
            began = time.monotonic()
            engine.stop()
            stopped = time.monotonic() - began
            assert stopped < 2.0
            assert not engine.listening
            names = [thread.name for thread in threading.enumerate()]
            assert "taskengine-listener" not in names
            wait_for(lambda: listener_pids(pg_database) == [], "the listener's session to end")
    finally:
        engine.stop()
        store.close()
