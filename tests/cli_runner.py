"""The `taskengine` command as the tests run it: in-process, as the installed script, and
the databases they run it on (shared by `tests/surfaces/test_cli*.py`)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from taskengine.cli import EXIT_OK, main
from taskengine.engine import TaskEngine
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import Task
from taskengine.taskstore import SQLiteTaskStore

_T = TypeVar("_T")

COPY_TASK = {
    "type": "COPY_FIELD_DATA",
    "copyFieldDataOptions": {
        "dataCollectionId": "Items",
        "sourceFieldKey": "name",
        "targetFieldKey": "nameCopy",
    },
}
"""A task copying `name` to `nameCopy` on every LIVE item of `Items`."""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run main(argv) in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def executable() -> str:
    """The installed console script."""
    found = shutil.which("taskengine", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("the taskengine console script is not installed next to the interpreter")
    return found


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed `taskengine` command in a new process (without $TASKENGINE_TOKEN)."""
    env = {k: v for k, v in os.environ.items() if k != "TASKENGINE_TOKEN"}
    return subprocess.run(
        [executable(), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def write(path: Path, data: Any) -> Path:
    """Write JSON (or raw text) to ``path``."""
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write items as JSON Lines."""
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def item_count(db: Path, collection: str = "Items", environment: str = "LIVE") -> int:
    """How many items a collection holds."""
    with SQLiteStorage(db) as storage:
        return storage.count(collection, environment).value


def task_total(capsys: pytest.CaptureFixture[str], db: Path) -> int:
    """How many tasks the database holds, as `tasks list --json` reports."""
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(db), "--json")
    assert code == EXIT_OK
    total: int = json.loads(out)["metadata"]["total"]
    return total


def line_reader(stream: IO[str]) -> queue.Queue[str]:
    """The lines of ``stream`` as a thread reads them, then ``""`` at its end."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # end of stream

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str], text: str) -> str:
    """The first line read that contains ``text`` (bounded: 60 s per line)."""
    seen: list[str] = []
    while True:
        line = lines.get(timeout=60)
        if line == "":
            pytest.fail(f"the process ended before printing {text!r}: {seen[-20:]}")
        seen.append(line)
        if text in line:
            return line


def read_until(lines: queue.Queue[str], text: str) -> list[str]:
    """The lines read up to the first that contains ``text``, that one included (bounded:
    60 s per line)."""
    seen: list[str] = []
    while not seen or text not in seen[-1]:
        line = lines.get(timeout=60)
        if line == "":
            pytest.fail(f"the process ended before printing {text!r}: {seen[-20:]}")
        seen.append(line)
    return seen


def rest_of(lines: queue.Queue[str]) -> str:
    """Every line still to come from a :func:`line_reader`, up to the stream's end."""
    rest: list[str] = []
    while (line := lines.get(timeout=60)) != "":
        rest.append(line)
    return "".join(rest)


def make_items_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A database, made by `taskengine import`, whose 'Items' collection (publish plugin)
    holds 50 items i000..i049 with a `name` and a `tags` that is text, not an array."""
    path = tmp_path / "items.db"
    items = [{"_id": f"i{n:03d}", "name": f"n{n}", "tags": "text"} for n in range(50)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    code, out, err = run_cli(
        capsys,
        "import",
        "--db",
        str(path),
        "--collection",
        "Items",
        "--publish-plugin",
        str(source),
    )
    assert code == EXIT_OK, err
    assert "Imported 50 items" in out
    return path


def make_shop_db(tmp_path: Path) -> Path:
    """A db file with 'Items' (publish plugin): 30 items, 10 on Halloween, and 'Plain'."""
    path = tmp_path / "shop.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items", publish_plugin=True)
        storage.insert_items(
            "Items",
            "LIVE",
            [
                {
                    "_id": f"i{n:03d}",
                    "name": f"n{n}",
                    "tags": ["a"] if n % 2 else "text",
                    "holidays": ["Halloween"] if n < 10 else ["Easter"],
                }
                for n in range(30)
            ],
        )
        storage.create_collection("Plain")
        storage.insert_items("Plain", "LIVE", [{"_id": "p1", "name": "x"}])
    return path


def make_big_db(tmp_path: Path) -> Path:
    """A db file with 20,000 items in 'Items', so that a task runs long enough to stop."""
    path = tmp_path / "big.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items", "LIVE", ({"_id": f"i{n:06d}", "name": "x"} for n in range(20_000))
        )
    return path


# -- several processes on one file: tasks, leases, items ------------------------------------

EDIT_Z_TASK = {
    "type": "EDIT_FIELD_DATA",
    "editFieldDataOptions": {
        "dataCollectionId": "Items",
        "fieldKey": "tags",
        "operations": {"addItems": ["z"]},
    },
}
"""A task adding "z" to the `tags` array of every LIVE item of `Items` (not idempotent)."""


def make_tagged_db(tmp_path: Path, items: int) -> Path:
    """A db file whose 'Items' holds ``items`` items, each with a `name` and empty `tags`."""
    path = tmp_path / "tagged.db"
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items",
            "LIVE",
            ({"_id": f"i{n:06d}", "name": f"n{n}", "tags": []} for n in range(items)),
        )
    return path


def all_items(db: Path, collection: str = "Items") -> list[dict[str, Any]]:
    """Every LIVE item of a collection, in `_id` order."""
    found: list[dict[str, Any]] = []
    with SQLiteStorage(db) as storage:
        cursor = None
        while True:
            page = storage.scan(collection, "LIVE", after=cursor, limit=5000)
            found.extend(page.items)
            if page.cursor is None or not page.items:
                return found
            cursor = page.cursor


@contextlib.contextmanager
def task_store(db: Path) -> Iterator[SQLiteTaskStore]:
    """The file's task store, opened by the test (to read tasks and leases, or claim)."""
    store = SQLiteTaskStore(db)
    try:
        yield store
    finally:
        store.close()


def queue_task(db: Path, spec: dict[str, Any]) -> str:
    """Create a task in the file from this process, run by no one; return its id."""
    storage = SQLiteStorage(db)
    store = SQLiteTaskStore(storage)
    try:
        return TaskEngine(storage, task_store=store).create_task({"task": spec}).id
    finally:
        store.close()
        storage.close()


def wait_until(check: Callable[[], _T | None], what: str, timeout: float = 60) -> _T:
    """The first true answer of ``check()``, asked again and again (bounded: ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.01)  # the cadence of the looks; what ends the wait is what they see


def batch_done(store: SQLiteTaskStore, task_id: str) -> Task | None:
    """The task once it has committed at least one batch (``None`` before)."""
    task = store.get(task_id)
    return task if task is not None and task.items_succeeded > 0 else None


def newest_task_id(store: SQLiteTaskStore) -> str | None:
    """The id of the newest task in the store, if any."""
    tasks, _ = store.page(1, 0)
    return tasks[0].id if tasks else None


def owner_id(pid: int) -> str:
    """An engine id naming process ``pid`` of this host (as ``new_owner_id`` makes them)."""
    return f"{socket.gethostname()}:{pid}:0badc0de"


def exited_pid() -> int:
    """The pid of a process of this host that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


class Running:
    """A `taskengine` process started by :func:`started`, and its output as threads read it.

    Attributes:
        proc: the process.
        out: its stdout lines, then ``""`` at the end (as :func:`line_reader` gives them).
        err: its stderr lines, the same way.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        assert proc.stderr is not None
        self.proc = proc
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=_pump, args=(stream, lines), daemon=True)
            for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the process to end; its exit code and the rest of stdout and stderr."""
        out, err = rest_of(self.out), rest_of(self.err)
        return self.proc.wait(timeout=timeout), out, err

    def close(self) -> None:
        """Kill the process if it still runs; close its pipes once read to their end."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=60)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


@contextlib.contextmanager
def started(*args: str) -> Iterator[Running]:
    """The installed `taskengine` running in a new process (without $TASKENGINE_TOKEN),
    killed if it still runs at the end of the block."""
    env = {k: v for k, v in os.environ.items() if k != "TASKENGINE_TOKEN"}
    running = Running(
        subprocess.Popen(
            [executable(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    )
    try:
        yield running
    finally:
        running.close()


def assert_edited_and_copied_once(db: Path, items: int) -> None:
    """Every item got exactly one "z" (EDIT_Z_TASK) and its `name` in `nameCopy` (COPY_TASK)."""
    found = all_items(db)
    assert len(found) == items
    wrong = [item for item in found if item["tags"] != ["z"] or item["nameCopy"] != item["name"]]
    assert wrong == [], f"{len(wrong)} item(s) edited or copied other than once: {wrong[:3]}"
