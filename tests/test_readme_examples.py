"""Every Python example in the README runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    """The README shows Python usage (so the next test checks something)."""
    assert len(_python_blocks()) >= 1


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python blocks run in order, in one namespace, in an empty folder.

    Blocks that read ``DATABASE_URL`` need a PostgreSQL server: the next test runs them.
    """
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for number, block in enumerate(_python_blocks(), start=1):
        if _needs_postgres(block):
            continue  # run by test_readme_postgres_examples_run, with a server
        code = compile(block, f"README.md python block {number}", "exec")
        exec(code, namespace)
    assert os.getcwd() == str(tmp_path)


def _needs_postgres(block: str) -> bool:
    return "DATABASE_URL" in block


def test_readme_postgres_examples_run(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's PostgreSQL blocks run as written against a fresh database."""
    blocks = [block for block in _python_blocks() if _needs_postgres(block)]
    assert blocks, "the README shows PostgreSQL usage"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", pg_database)
    for number, block in enumerate(blocks, start=1):
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(block, f"README.md PostgreSQL block {number}", "exec"), namespace)
