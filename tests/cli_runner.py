"""The `taskengine` command as the tests run it: in-process, as the installed script, and
the databases they run it on (shared by `tests/surfaces/test_cli*.py`)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from taskengine.cli import EXIT_OK, main
from taskengine.storage.sqlite import SQLiteStorage

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
