"""Task ownership across processes: engines on one SQLite file killed, paused and cancelled.

Every engine here is a child process (tests/ownership_child.py) sharing one SQLite file
for items and tasks, so a batch, its fence check and its checkpoint commit in one
transaction. The parent never runs a task: it reads committed progress and leases from
the file and decides from them when to kill (SIGKILL), pause (SIGSTOP), resume or
cancel, never from how long something took. Every wait is bounded by ``PATIENCE`` and
every child still running at the end of a test is killed (the ``engines`` fixture).

The task types are the built-in ones, whose writes are not idempotent (``addItems``
appends): an item edited twice, or a batch lost, shows in the file.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from taskengine import SQLiteStorage, SQLiteTaskStore, Task, TaskEngine, TaskStatus
from taskengine._ownership import _DEAD_CHECK_EVERY as DEAD_CHECK_EVERY
from taskengine.taskstore import Lease

#: Bounds every wait of a test (each one far longer than the work it waits for).
PATIENCE = 60.0
CHILD = Path(__file__).parent.parent / "ownership_child.py"
SCHEDULER_ROLE = "service:taskengine.tasktypes._publish_schedule.PublishScheduler:0"

_T = TypeVar("_T")


# -- the engine processes ---------------------------------------------------------------


class Engine:
    """One engine process, its stdout read line by line by a thread."""

    owner: str
    """The engine's lease owner id (``host:pid:hex``), known once it said ``ready``."""

    def __init__(self, name: str, process: subprocess.Popen[str], stderr: Path) -> None:
        self.name = name
        self.process = process
        self.stderr = stderr
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.reader.start()

    def wait_ready(self) -> Engine:
        """Wait until the engine has started; learn its owner id."""
        self.owner = self.expect("ready").split()[1]
        return self

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def pid(self) -> int:
        """The process id (also in :attr:`owner`)."""
        return self.process.pid

    def expect(self, prefix: str, timeout: float = PATIENCE) -> str:
        """The next line starting with ``prefix`` (earlier ones are kept in :attr:`lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.0, remaining))
            except queue.Empty:
                pytest.fail(f"{self.name} did not say {prefix!r} within {timeout}s")
            if line is None:
                pytest.fail(f"{self.name} exited before saying {prefix!r}: {self.errors()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def send(self, command: str) -> None:
        """One command line to the engine."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def owned(self) -> list[str]:
        """The ids of the tasks the engine holds a lease on, as it says now."""
        self.send("owned")
        return self.expect("owned").split()[1:]

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(PATIENCE)

    def stop(self) -> None:
        """Stop the engine cleanly (it releases its leases) and check it exited 0."""
        self.send("stop")
        self.expect("stopped")
        assert self.process.wait(PATIENCE) == 0, self.errors()

    def errors(self) -> str:
        """What the process logged to stderr so far."""
        return self.stderr.read_text(encoding="utf-8", errors="replace")


class Engines:
    """Starts engine processes on one file; kills every one still running at the end."""

    child = CHILD
    """The engine process's script (its config is its one argument)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Engine] = []

    def start(
        self, name: str, *, wait: bool = True, prefix: Sequence[str] = (), **config: Any
    ) -> Engine:
        """An engine process with ``config`` (see :attr:`child`), run under ``prefix``,
        once ready (or at once, without ``wait``)."""
        stderr = self.folder / f"{name}.stderr"
        with stderr.open("w") as errors:
            process = subprocess.Popen(
                [*prefix, sys.executable, str(self.child), json.dumps({"name": name, **config})],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        engine = Engine(name, process, stderr)
        self.started.append(engine)
        try:
            return engine.wait_ready() if wait else engine
        except BaseException:
            process.kill()
            process.wait()
            raise

    def kill_all(self) -> None:
        """SIGKILL every engine still running (a stopped one too); close the pipes."""
        for engine in self.started:
            engine.kill()
            engine.reader.join(PATIENCE)  # it reads to the end of the dead process's output
            for stream in (engine.process.stdin, engine.process.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    """A starter of engine processes; every one still running is killed afterwards."""
    started = Engines(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# -- the file and what the parent reads from it -------------------------------------------


def edit_task(collection: str, mark: str, field: str = "tags") -> dict[str, Any]:
    """``EDIT_FIELD_DATA`` appending ``mark`` to ``field`` of every item."""
    return {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": collection,
            "fieldKey": field,
            "operations": {"addItems": [mark]},
        },
    }


def copy_task(collection: str) -> dict[str, Any]:
    """``COPY_FIELD_DATA`` from ``src`` to ``dst`` on every item."""
    return {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": collection,
            "sourceFieldKey": "src",
            "targetFieldKey": "dst",
        },
    }


def build(path: Path, items: int, specs: list[dict[str, Any]]) -> list[str]:
    """The collection ``Items`` (``items`` items, one bulk insert) and NEW tasks; their ids."""
    storage = SQLiteStorage(path)
    try:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", [{"_id": f"i{k:07d}", "tags": [], "src": k} for k in range(items)]
        )
        creator = TaskEngine(storage, task_store=SQLiteTaskStore(storage))  # never started
        return [creator.create_task(spec).id for spec in specs]
    finally:
        storage.close()


class Reader:
    """The parent's view of the file: tasks, leases and items, as committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage = SQLiteStorage(path)
        self.store = SQLiteTaskStore(self.storage)

    def task(self, task_id: str) -> Task:
        """The task as last committed."""
        task = self.store.get(task_id)
        assert task is not None, f"task {task_id} is lost"
        return task

    def lease(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (``None`` when free)."""
        return self.store.lease_of(task_id)

    def items(self, collection: str = "Items") -> list[dict[str, Any]]:
        """Every item of the collection, in ``_id`` order."""
        return list(self.storage.find(collection, "LIVE"))

    def close(self) -> None:
        """Close the connection."""
        self.storage.close()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Callable[[Path], Reader]]:
    """Opens :class:`Reader` s (after the file is built); closes them afterwards."""
    opened: list[Reader] = []

    def open_reader(path: Path) -> Reader:
        opened.append(Reader(path))
        return opened[-1]

    try:
        yield open_reader
    finally:
        for each in opened:
            each.close()


def wait_for(what: str, condition: Callable[[], _T], timeout: float = PATIENCE) -> _T:
    """``condition()`` once it is truthy, looking every 2 ms; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)  # how often to look, not a guess at how long the work takes


def first_to_move(
    view: Reader, before: dict[str, int], wanted: dict[str, int]
) -> Callable[[], str | None]:
    """A condition: the id of a task that has counted ``wanted`` more items since
    ``before``, or finished."""

    def check() -> str | None:
        for task_id, count in before.items():
            task = view.task(task_id)
            if task.items_succeeded >= count + wanted[task_id] or task.is_finished:
                return task_id
        return None

    return check


def all_finished(view: Reader, ids: list[str]) -> Callable[[], list[Task] | None]:
    """A condition: the tasks once every one of them has finished."""

    def check() -> list[Task] | None:
        tasks = [view.task(task_id) for task_id in ids]
        return tasks if all(task.is_finished for task in tasks) else None

    return check


def count_published(view: Reader) -> int:
    """How many items of ``Pub`` hold no ``_publishDate`` any more."""
    return sum(1 for item in view.items("Pub") if "_publishDate" not in item)


def leading(view: Reader, owners: set[str], seen: int) -> Callable[[], Lease | None]:
    """A condition: the scheduler's live leader, once it is one of ``owners`` and more
    than ``seen`` dates have been applied."""

    def check() -> Lease | None:
        lease = view.store.leader_of(SCHEDULER_ROLE)
        if lease is None or lease.owner not in owners or not lease.is_live(utcnow()):
            return None
        return lease if count_published(view) > seen else None

    return check


def pid_of(lease: Lease) -> int:
    """The process id in a lease's owner id (``host:pid:hex``)."""
    return int(lease.owner.rsplit(":", 2)[1])


def utcnow() -> datetime:
    """Now, aware UTC (the engines' system clock)."""
    return datetime.now(timezone.utc)


def process_state(pid: int) -> str:
    """The one-letter state of a Linux process (``T`` stopped, ``Z`` zombie, ...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def write_lock_free(path: Path) -> bool:
    """Whether nobody holds the file's write lock (waiting up to 0.2 s for it)."""
    conn = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def pause(engine: Engine, path: Path) -> None:
    """SIGSTOP the engine at a moment it holds no write transaction on the file.

    A process stopped inside a transaction (its owner thread renewing a lease) would keep
    every other engine waiting on the write lock; such a stop is undone and tried again.
    """
    for _ in range(100):
        os.kill(engine.pid, signal.SIGSTOP)
        wait_for("the engine to stop", lambda: process_state(engine.pid) in "Tt", 10.0)
        if write_lock_free(path):
            return
        os.kill(engine.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("the engine always held the write lock when it was stopped")


# -- 1. a SIGKILL storm on four engines ---------------------------------------------------

STORM_ITEMS = 200_000
STORM_BATCH = 1_000
STORM_KILLS = 20
STORM_ENGINES = 4


@pytest.mark.slow
def test_sigkill_storm_on_four_engines_runs_an_edit_and_a_copy_exactly_once(
    tmp_path: Path, engines: Engines, reader: Callable[[Path], Reader]
) -> None:
    """Owners SIGKILLed 20 times mid-task: an EDIT and a COPY still process each item once.

    Four adopting engines share the file; each kill lands k (1-3) batches after the
    victim was picked and a replacement engine starts at once. Both tasks complete with
    exact counters, and every item holds one ``"z"`` and its copied field.
    """
    path = tmp_path / "storm.db"
    build(path, STORM_ITEMS, [])
    view = reader(path)
    config = {"path": str(path), "lease": 2.0, "poll": 0.1, "batch": STORM_BATCH, "plain": True}
    rng = random.Random(20260412)
    # By pid (the middle of a lease's owner id), so that a replacement counts as soon as
    # it claims a task: the parent does not wait for it to start.
    live = {
        engine.pid: engine
        for engine in [engines.start(f"storm-{n}", **config) for n in range(STORM_ENGINES)]
    }
    creator = TaskEngine(view.storage, task_store=view.store)  # never started
    ids = [creator.create_task(spec).id for spec in (edit_task("Items", "z"), copy_task("Items"))]
    kills = 0
    started = time.monotonic()
    prefer: str | None = None
    while kills < STORM_KILLS:
        assert time.monotonic() - started < PATIENCE, f"only {kills} kills within {PATIENCE}s"
        tasks = {task_id: view.task(task_id) for task_id in ids}
        assert not all(task.is_finished for task in tasks.values()), f"done after {kills} kills"
        owned = {}
        for task in tasks.values():
            lease = view.lease(task.id)
            if (
                task.status is TaskStatus.RUNNING
                and lease is not None
                and lease.is_live(utcnow())
                and pid_of(lease) in live
            ):
                owned[task.id] = lease
        if not owned:
            time.sleep(0.002)  # replacements are starting, or a claim is under way
            continue
        victim = prefer if prefer in owned else rng.choice(sorted(owned))
        lease = owned[victim]
        # The writers of one file take turns unfairly (SQLite's busy wait sleeps while
        # the other writer takes the lock again), so one task may run far ahead while
        # the victim waits: when the other task moves 3 batches first, its owner is
        # picked instead, so that every kill costs a few batches, whichever task moves.
        before = {task_id: task.items_succeeded for task_id, task in tasks.items()}
        wanted = dict.fromkeys(ids, 3 * STORM_BATCH)
        wanted[victim] = rng.randint(1, 3) * STORM_BATCH
        moved = wait_for(
            f"{live[pid_of(lease)].name} or another owner to commit batches",
            first_to_move(view, before, wanted),
        )
        if moved != victim:
            prefer = moved
            continue
        prefer = None
        now_held = view.lease(victim)
        if (
            view.task(victim).is_finished
            or now_held is None
            or (now_held.owner, now_held.token) != (lease.owner, lease.token)
        ):
            continue  # it ran to the end, or lost its lease: not a kill of an owner mid-task
        live.pop(pid_of(lease)).kill()
        if not view.task(victim).is_finished:  # else its last batch came before the kill
            kills += 1
        replacement = engines.start(f"storm-{len(engines.started)}", wait=False, **config)
        live[replacement.pid] = replacement

    at_last_kill = sum(view.task(task_id).items_succeeded for task_id in ids)
    finished = wait_for("both tasks to finish", all_finished(view, ids))
    for engine in live.values():
        engine.stop()
    for task in finished:
        assert task.status is TaskStatus.COMPLETED, task.failures
        assert (task.items_succeeded, task.items_failed) == (STORM_ITEMS, 0), task.type
        assert task.estimated_item_count == STORM_ITEMS
    assert view.store.unfinished() == []
    items = view.items()
    assert len(items) == STORM_ITEMS
    wrong = [item for item in items if item["tags"] != ["z"] or item.get("dst") != item["src"]]
    assert wrong == [], f"{len(wrong)} items not edited and copied exactly once: {wrong[:3]}"
    print(
        f"\n{kills} owners killed in {time.monotonic() - started:.1f}s;"
        f" {len(engines.started)} engine processes in all; the tasks were"
        f" {at_last_kill / (2 * STORM_ITEMS):.0%} done at the last kill"
    )


# -- 2. a paused owner is fenced out ------------------------------------------------------

PAUSE_ITEMS = 4_000
PAUSE_BATCH = 400
PAUSE_LEASE = 1.0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_paused_owner_is_fenced_out_after_another_engine_takes_its_task_over(
    tmp_path: Path, engines: Engines, reader: Callable[[Path], Reader]
) -> None:
    """A paused owner's task is taken over, and the resumed owner's batch is fenced out.

    A SIGSTOPped owner loses the task when its lease runs out; the new owner (a larger
    token) finishes it from the old owner's checkpoint. Resumed at the door of its next
    batch, the old owner scans and applies it, its fence refuses it, nothing is written,
    and it lets the task go.
    """
    path = tmp_path / "paused.db"
    (task_id,) = build(path, PAUSE_ITEMS, [edit_task("Items", "z")])
    view = reader(path)
    config = {
        "path": str(path),
        "lease": PAUSE_LEASE,
        "poll": 0.1,
        "batch": PAUSE_BATCH,
        "report": True,
    }
    first = engines.start("A", pause_at=3, **config)
    first.expect("paused 3")  # three batches committed; the worker waits at the fourth's door
    at_pause = view.task(task_id)
    assert at_pause.status is TaskStatus.RUNNING
    assert at_pause.items_succeeded == 3 * PAUSE_BATCH
    lease_a = view.lease(task_id)
    assert lease_a is not None
    assert lease_a.owner == first.owner
    pause(first, path)  # the whole process: its owner thread no longer renews the lease

    second = engines.start("B", pause_at=1, **config)
    second.expect("paused 1")  # B claimed the task once A's lease ran out; one batch ran
    lease_b = view.lease(task_id)
    assert lease_b is not None
    assert lease_b.owner == second.owner
    assert lease_b.token > lease_a.token
    assert view.task(task_id).items_succeeded == 4 * PAUSE_BATCH  # from A's checkpoint on
    second.send("go")
    done = wait_for("B to complete the task", lambda: view.task(task_id).is_finished)
    assert done
    finished = view.task(task_id)
    items = view.items()

    os.kill(first.pid, signal.SIGCONT)
    first.send("go")  # A's worker runs its fourth batch, which its fence refuses
    wait_for("A to let the task go", lambda: first.owned() == [])
    first.stop()
    second.stop()

    assert "lease lost" in first.errors(), first.errors()
    said = first.lines[first.lines.index("paused 3") + 1 :]
    batches = [line for line in said if line.startswith(("apply", "committed"))]
    assert batches == [f"apply {PAUSE_BATCH}"]  # one batch tried, none committed
    assert view.task(task_id) == finished  # A did not touch the task ...
    assert view.items() == items  # ... nor an item
    assert finished.status is TaskStatus.COMPLETED
    assert (finished.items_succeeded, finished.items_failed) == (PAUSE_ITEMS, 0)
    assert [item["tags"] for item in items] == [["z"]] * PAUSE_ITEMS


# -- 3. cancels from another process while engines run -----------------------------------

CANCEL_ITEMS = 10_000
CANCEL_BATCH = 100
CANCEL_TASKS = 12
CANCEL_PAUSES = (2, 3, 4)  # each engine's worker stops after this many committed batches


def test_cancels_from_another_process_stop_new_and_running_tasks_with_exact_counters(
    tmp_path: Path, engines: Engines, reader: Callable[[Path], Reader]
) -> None:
    """Cross-process cancels end NEW tasks unstarted and RUNNING ones with exact counters.

    Three engine processes run twelve edits; another process cancels some while NEW and
    some while RUNNING, first while every worker waits between two batches, then at
    moments chosen by progress. A task cancelled NEW never starts nor touches an item; a
    running one ends after at most one more batch, its counters equal to the items it
    marked; the others complete, and no task runs twice.
    """
    path = tmp_path / "cancel.db"
    marks = [f"m{n:02d}" for n in range(CANCEL_TASKS)]
    build(path, CANCEL_ITEMS, [])
    view = reader(path)
    # A lease far longer than any wait for the file's write lock: an owner that waits
    # between batches keeps its task (the takeover is another test's subject).
    config = {"path": str(path), "lease": 10.0, "poll": 0.1, "batch": CANCEL_BATCH}
    workers = [
        engines.start(f"worker-{n}", pause_at=pause, **config)
        for n, pause in enumerate(CANCEL_PAUSES)
    ]
    canceller = TaskEngine(view.storage, task_store=view.store)  # never started
    ids = [canceller.create_task(edit_task("Items", mark, "marks")).id for mark in marks]
    at_cancel: dict[str, Task] = {}
    rng = random.Random(20260413)

    # Every engine (one worker each) is held at the door of a batch, its task RUNNING,
    # so the nine other tasks cannot start: cancel three NEW ones and one RUNNING one.
    for engine in workers:
        engine.expect("paused")
    tasks = {task_id: view.task(task_id) for task_id in ids}
    running = sorted(
        task_id for task_id, task in tasks.items() if task.status is not TaskStatus.NEW
    )
    assert len(running) == len(workers), [task.status for task in tasks.values()]
    assert sorted(tasks[task_id].items_succeeded for task_id in running) == [
        pause * CANCEL_BATCH for pause in CANCEL_PAUSES
    ]
    waiting = sorted(task_id for task_id in ids if task_id not in running)
    held = rng.choice(running)
    for task_id in [held, *rng.sample(waiting, 3)]:
        at_cancel[task_id] = canceller.cancel_task(task_id)
    for engine in workers:
        engine.send("go")

    # Then, while they run: cancel once the total of committed items reaches a mark (a
    # task may be NEW, starting or running then), once the task itself committed k more
    # batches, or never.
    plans: dict[str, tuple[str, int]] = {}
    for n, task_id in enumerate(sorted(set(ids) - set(at_cancel))):
        if n % 3 == 0:
            plans[task_id] = ("never", 0)
        elif n % 3 == 1:
            plans[task_id] = ("total", rng.randint(20, 200) * CANCEL_BATCH)
        else:
            mark = tasks[task_id].items_succeeded + rng.randint(1, 30) * CANCEL_BATCH
            plans[task_id] = ("own", mark)
    deadline = time.monotonic() + PATIENCE
    while True:
        assert time.monotonic() < deadline, "the tasks did not finish in time"
        tasks = {task_id: view.task(task_id) for task_id in ids}
        if all(task.is_finished for task in tasks.values()):
            break
        total = sum(task.items_succeeded for task in tasks.values())
        for task_id, (kind, mark) in plans.items():
            if task_id in at_cancel or kind == "never":
                continue
            reached = total if kind == "total" else tasks[task_id].items_succeeded
            if reached >= mark:
                at_cancel[task_id] = canceller.cancel_task(task_id)
        time.sleep(0.002)
    for engine in workers:
        engine.stop()

    counts = dict.fromkeys(marks, 0)
    for item in view.items():
        assert len(item["marks"]) == len(set(item["marks"])), item  # no task ran twice
        for mark in item["marks"]:
            counts[mark] += 1
    outcomes = {"new": 0, "running": 0, "done": 0}
    for task_id, mark in zip(ids, marks, strict=True):
        task = view.task(task_id)
        was = at_cancel.get(task_id)
        if was is None or was.status is TaskStatus.COMPLETED:
            outcomes["done"] += 1
            assert task.status is TaskStatus.COMPLETED, (mark, task.failures)
            assert (task.items_succeeded, task.items_failed, counts[mark]) == (
                CANCEL_ITEMS,
                0,
                CANCEL_ITEMS,
            )
            continue
        assert task.status is TaskStatus.FAILED, mark
        assert task.failures[0].code == "CANCELLED", (mark, task.failures)
        if was.status is TaskStatus.FAILED:  # it was NEW: cancelled at once
            outcomes["new"] += 1
            assert task.started_at is None, mark
            assert (task.items_succeeded, task.items_failed, counts[mark]) == (0, 0, 0), mark
        else:  # it was RUNNING: cancelled at its next batch, its counters kept
            outcomes["running"] += 1
            assert was.cancel_requested, mark
            assert task.started_at is not None, mark
            assert task.items_failed == 0, mark
            assert task.items_succeeded == counts[mark], mark
            assert task.items_succeeded <= was.items_succeeded + CANCEL_BATCH, mark
    # The held task's owner ran exactly one more batch: the one that saw the cancel.
    assert view.task(held).items_succeeded == at_cancel[held].items_succeeded + CANCEL_BATCH
    assert outcomes["new"] >= 3, outcomes
    assert outcomes["running"] >= 1, outcomes
    assert view.store.unfinished() == []
    print(f"\ncancel outcomes: {outcomes}")


# -- 4. the publish scheduler's leader killed while dates are due -------------------------

SCHEDULE_PAST = 1_500  # items whose date has passed when the engines start
SCHEDULE_STEP = 0.5  # seconds between two groups of future dates
SCHEDULE_GROUPS = 12  # groups of future dates, the last one 6 s after the setup
SCHEDULE_GROUP = 100
SCHEDULE_LEASE = 1.0


@pytest.mark.skipif(not hasattr(SQLiteTaskStore, "lead"), reason="needs leader leases")
def test_killing_the_scheduler_leader_while_dates_are_due_applies_each_date_once(
    tmp_path: Path, engines: Engines, reader: Callable[[Path], Reader]
) -> None:
    """Scheduler leaders SIGKILLed with dates due: every date is applied once, never early.

    Three engines; the leader is killed twice, each time with dates due before another
    engine can lead. Every item ends PUBLISHED with its date removed, written exactly
    once (stamped in the write's own transaction) and never before its date.
    """
    path = tmp_path / "schedule.db"
    start = utcnow()
    dates: dict[str, datetime] = {}
    for k in range(SCHEDULE_PAST):
        dates[f"p{k:05d}"] = start - timedelta(minutes=1, seconds=k % 60)
    for group in range(SCHEDULE_GROUPS):
        for k in range(SCHEDULE_GROUP):
            dates[f"f{group:02d}{k:04d}"] = start + timedelta(seconds=SCHEDULE_STEP * (group + 1))
    storage = SQLiteStorage(path)
    try:
        storage.create_collection("Pub", publish_plugin=True)
        storage.insert_items(
            "Pub",
            "LIVE",
            [
                {"_id": item_id, "_publishStatus": "DRAFT", "_publishDate": when}
                for item_id, when in dates.items()
            ],
        )
    finally:
        storage.close()
    view = reader(path)
    config = {
        "path": str(path),
        "lease": SCHEDULE_LEASE,
        "poll": 0.1,
        "tick": 0.1,
        "plain": True,
        "stamp": True,
    }
    live = {}
    for n in range(3):
        engine = engines.start(f"sched-{n}", **config)
        live[engine.owner] = engine

    killed_at: list[tuple[float, list[str]]] = []
    seen = 0
    for _ in range(2):
        # A live leader of ours that applied dates since the last kill.
        leader = wait_for("a leader that applies dates", leading(view, set(live), seen))
        live.pop(leader.owner).kill()
        moment = time.time()
        # The dates left, due before the leader's lease (so its leadership) runs out.
        pending = [item["_id"] for item in view.items("Pub") if "_publishDate" in item]
        due = [
            item_id for item_id in pending if dates[item_id].timestamp() <= moment + SCHEDULE_LEASE
        ]
        assert due, "the leader was killed with no date due before another could lead"
        killed_at.append((moment, due))
        seen = len(dates) - len(pending)
        replacement = engines.start(f"sched-{len(engines.started)}", **config)
        live[replacement.owner] = replacement
    wait_for("every date to be applied", lambda: count_published(view) == len(dates))
    for engine in live.values():
        engine.stop()

    items = {item["_id"]: item for item in view.items("Pub")}
    assert sorted(items) == sorted(dates)
    for item_id, item in items.items():
        assert item["_publishStatus"] == "PUBLISHED", item
        assert "_publishDate" not in item, item
        assert item["flips"] == 1, item  # one committed write per date
        assert item["flippedAt"] >= dates[item_id].timestamp() - 0.001, item  # never early
    print(f"\ndates due when each leader was killed: {[len(due) for _, due in killed_at]}")
    assert view.store.leader_of(SCHEDULER_ROLE) is None  # the last leader resigned on stop


# -- 5. takeover of a killed owner's task -------------------------------------------------

TAKEOVER_ITEMS = 40_000
TAKEOVER_BATCH = 500
TAKEOVER_POLL = 0.1
TAKEOVER_MARGIN = 1.5


@pytest.mark.parametrize(
    "lease",
    [
        pytest.param(2.0, id="lease-runs-out"),
        # Far longer than the look for exited owners: the pid check must free the task.
        pytest.param(60.0, id="owner-exited"),
    ],
)
def test_idle_engine_finishes_a_killed_owners_task_from_its_checkpoint_in_time(
    tmp_path: Path, engines: Engines, reader: Callable[[Path], Reader], lease: float
) -> None:
    """An idle engine finishes a SIGKILLed owner's task from its checkpoint, in bounded time.

    The idle engine (built-in types, no test code) goes on within lease + poll interval +
    a margin (with a long lease: the interval of its look for exited owners + poll +
    margin), and every item is edited exactly once.
    """
    bound = min(lease, DEAD_CHECK_EVERY) + TAKEOVER_POLL + TAKEOVER_MARGIN
    path = tmp_path / "takeover.db"
    build(path, TAKEOVER_ITEMS, [])
    view = reader(path)
    config = {
        "path": str(path),
        "lease": lease,
        "poll": TAKEOVER_POLL,
        "batch": TAKEOVER_BATCH,
        "plain": True,
    }
    started = {
        engine.owner: engine
        for engine in (engines.start(name, **config) for name in ("first", "second"))
    }
    # Both engines run before the task exists: whichever claims it is its only owner.
    task_id = (
        TaskEngine(view.storage, task_store=view.store).create_task(edit_task("Items", "z")).id
    )
    claimed = wait_for("an engine to claim the task", lambda: view.lease(task_id))
    owner = started.pop(claimed.owner)
    (idle,) = started.values()
    wait_for(
        "the owner to commit five batches",
        lambda: view.task(task_id).items_succeeded >= 5 * TAKEOVER_BATCH,
    )
    owner.kill()
    killed_at = time.monotonic()
    at_kill = view.task(task_id)  # final: the owner is gone
    assert at_kill.status is TaskStatus.RUNNING
    assert 0 < at_kill.items_succeeded < TAKEOVER_ITEMS
    assert at_kill.checkpoint == f"i{at_kill.items_succeeded - 1:07d}"
    resumed = wait_for(
        "the idle engine to commit a batch",
        lambda: (
            found
            if (found := view.task(task_id)).items_succeeded > at_kill.items_succeeded
            else None
        ),
        timeout=lease + PATIENCE,
    )
    took = time.monotonic() - killed_at
    finished = wait_for(
        "the task to finish",
        lambda: found if (found := view.task(task_id)).is_finished else None,
    )
    assert idle.owned() == []
    idle.stop()
    print(
        f"\ntakeover: first batch of the idle engine {took:.2f}s after the kill "
        f"(lease {lease}s, poll {TAKEOVER_POLL}s, bound {bound:.1f}s)"
    )
    assert took <= bound, took
    assert resumed.items_succeeded > at_kill.items_succeeded
    assert finished.status is TaskStatus.COMPLETED, finished.failures
    assert (finished.items_succeeded, finished.items_failed) == (TAKEOVER_ITEMS, 0)
    assert [item["tags"] for item in view.items()] == [["z"]] * TAKEOVER_ITEMS
