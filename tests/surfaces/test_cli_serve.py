"""`taskengine serve`: refuses what is unsafe or impossible, answers, stops cleanly."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import (
    COPY_TASK,
    executable,
    line_reader,
    make_items_db,
    run_cli,
    wait_for_line,
)

from taskengine.cli import EXIT_BAD_INPUT, EXIT_OK


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKENGINE_TOKEN", raising=False)


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """'Items' (publish plugin): 50 items (see make_items_db)."""
    return make_items_db(tmp_path, capsys)


def test_serve_refuses_public_host_without_token(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a token `serve` will not bind a non-loopback address."""
    monkeypatch.delenv("TASKENGINE_TOKEN", raising=False)
    code, _, err = run_cli(capsys, "serve", "--db", str(db), "--host", "0.0.0.0")
    assert code == EXIT_BAD_INPUT
    assert "without a token" in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_serve_answers_and_stops_on_ctrl_c(db: Path) -> None:
    """`serve` answers the API on its port and exits 0 on Ctrl-C."""
    proc = subprocess.Popen(
        [executable(), "serve", "--db", str(db), "--port", "0", "--quiet", "--token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = wait_for_line(line_reader(proc.stdout), "Serving")
        address = line.split("http://", 1)[1].split("/", 1)[0]
        conn = http.client.HTTPConnection(address, timeout=30)
        try:
            conn.request("GET", "/cms/v1/tasks", headers={"Authorization": "Bearer t"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["metadata"]["total"] == 0
        finally:
            conn.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == EXIT_OK, err


def test_serve_without_waitress_says_what_to_install(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without waitress installed `serve` names the extra to install and exits 2."""
    monkeypatch.setitem(sys.modules, "waitress", None)  # makes `import waitress` fail
    code, out, err = run_cli(capsys, "serve", "--db", str(db), "--port", "0")
    assert code == EXIT_BAD_INPUT
    assert "pip install 'taskengine[server]'" in err
    assert out == ""


@pytest.mark.parametrize(
    ("port", "reason"),
    [("99999", "0-65535, got 99999"), ("-1", "0-65535, got -1"), ("http", "'http'")],
)
def test_serve_rejects_a_bad_port(
    db: Path, capsys: pytest.CaptureFixture[str], port: str, reason: str
) -> None:
    """A port outside 0-65535, or not a number, is one clear usage error (exit 2)."""
    code, _, err = run_cli(capsys, "serve", "--db", str(db), f"--port={port}")
    assert code == EXIT_BAD_INPUT
    assert len(err.splitlines()) == 1, err
    assert err.startswith("taskengine serve: error: argument --port")
    assert reason in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to a child needs POSIX")
def test_serve_reports_resumed_and_checkpointed_tasks(
    big_db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`serve` says how many unfinished tasks it resumed, and on SIGTERM how many it left
    checkpointed, a number that matches the database afterwards."""
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"task": COPY_TASK}))
    for _ in range(2):
        code, _, err = run_cli(capsys, "run", "--db", str(big_db), "--no-wait", str(task_file))
        assert code == EXIT_OK, err
    proc = subprocess.Popen(
        [executable(), "serve", "--db", str(big_db), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = line_reader(proc.stdout)
        resumed = wait_for_line(lines, "unfinished task")
        wait_for_line(lines, "Serving")
        proc.send_signal(signal.SIGTERM)
        stopped = wait_for_line(lines, "Stopped.")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == EXIT_OK
    assert resumed.startswith(f"Resumed 2 unfinished task(s) from {big_db}.")
    left = int(stopped.split("Stopped. ", 1)[1].split(" ", 1)[0])
    assert "were checkpointed; they resume when" in stopped
    code, out, _ = run_cli(capsys, "tasks", "list", "--db", str(big_db), "--json")
    assert code == EXIT_OK
    unfinished = [t for t in json.loads(out)["tasks"] if t["status"] in ("NEW", "RUNNING")]
    assert len(unfinished) == left
