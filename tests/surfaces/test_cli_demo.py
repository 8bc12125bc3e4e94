"""`taskengine demo`: sample data, one task of each type, a summary; --replace."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
from cli_runner import executable, run_cli

from taskengine.cli import EXIT_BAD_INPUT, EXIT_OK
from taskengine.storage.sqlite import SQLiteStorage


def test_demo_runs_every_task_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` builds the sample data, runs the four task types and prints a summary."""
    path = tmp_path / "demo.db"
    code, out, _ = run_cli(capsys, "demo", "--items", "2000", "--db", str(path))
    assert code == EXIT_OK, out
    for name in ("COPY_FIELD_DATA", "EDIT_FIELD_DATA", "UPDATE_PUBLISH_STATUS", "DELETE_BY_QUERY"):
        assert any(line.startswith(name) and "COMPLETED" in line for line in out.splitlines())
    header = next(line for line in out.splitlines() if line.startswith("TASK"))
    assert header.split() == [
        "TASK",
        "WHAT",
        "WHERE",
        "MATCHED",
        "CHANGED",
        "FAILED",
        "TIME",
        "STATUS",
    ]
    starts = [header.index(name) for name in header.split()] + [None]

    def cells(line: str) -> dict[str, str]:
        spans = itertools.pairwise(starts)
        return {name: line[a:b].strip() for name, (a, b) in zip(header.split(), spans, strict=True)}

    rows = {r["TASK"]: r for r in map(cells, out.splitlines()) if r["STATUS"] == "COMPLETED"}
    copy_row = rows["COPY_FIELD_DATA"]
    assert (copy_row["WHERE"], copy_row["MATCHED"], copy_row["CHANGED"]) == (
        "products/LIVE",
        "2,000",
        "2,000",  # every LIVE item matched and changed
    )
    delete_row = rows["DELETE_BY_QUERY"]
    assert delete_row["WHERE"] == "products/SANDBOX"
    left = re.search(r"([\d,]+) SANDBOX items left", out)
    assert left is not None
    deleted = 200 - int(left.group(1).replace(",", ""))  # the sandbox starts with a tenth
    assert (delete_row["MATCHED"], delete_row["CHANGED"]) == (f"{deleted:,}", f"{deleted:,}")
    assert "in 0.0 s" not in out
    assert " 1 items" not in out
    with SQLiteStorage(path) as storage:
        item = storage.get_item("products", "LIVE", "item-000001")
        assert item is not None
        assert item["titleBackup"] == item["title"] == "Product 1"
        info = storage.collection_info("products")
        assert info.sandbox_enabled
        assert info.publish_plugin
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(path), "--json")
    assert json.loads(out)["metadata"]["total"] == 4


def test_demo_is_repeatable_on_the_same_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the demo again on one file needs --replace, which rebuilds the collection."""
    path = str(tmp_path / "demo.db")
    assert run_cli(capsys, "demo", "--items", "10", "--db", path)[0] == EXIT_OK
    code, out, err = run_cli(capsys, "demo", "--items", "20", "--db", path)
    assert code == EXIT_BAD_INPUT
    assert "--replace" in err
    code, out, _ = run_cli(capsys, "demo", "--items", "10", "--db", path, "--replace")
    assert code == EXIT_OK
    assert "products: 10 LIVE items" in out


def test_demo_leaves_an_existing_products_collection_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --replace, the demo refuses a file whose `products` is the user's own data."""
    path = tmp_path / "shop.db"
    items = tmp_path / "items.jsonl"
    items.write_text('{"_id": "mine", "precious": true}\n')
    code, _, _ = run_cli(
        capsys, "import", "--db", str(path), "--collection", "products", str(items)
    )
    assert code == EXIT_OK
    code, out, err = run_cli(capsys, "demo", "--items", "10", "--db", str(path))
    assert code == EXIT_BAD_INPUT
    assert "already has a collection 'products' (1 LIVE items)" in err
    assert "Created collection" not in out
    with SQLiteStorage(path) as storage:
        assert storage.get_item("products", "LIVE", "mine") == {"_id": "mine", "precious": True}
        assert not storage.collection_info("products").sandbox_enabled
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(path), "--json")
    assert json.loads(out)["metadata"]["total"] == 0


def test_installed_command_runs_the_demo_in_a_temporary_file(tmp_path: Path) -> None:
    """The installed `taskengine demo --items 2000` works from an empty folder."""
    result = subprocess.run(
        [executable(), "demo", "--items", "2000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("COMPLETED") >= 8  # one progress line and one row per task
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone
