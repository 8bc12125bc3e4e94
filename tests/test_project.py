"""The project's own promises: public API, docs, tooling, and the newcomer's commands."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import taskengine

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_unique() -> None:
    """`taskengine.__all__` is sorted and names each export once."""
    names = list(taskengine.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_all_names_exist() -> None:
    """Every name in `__all__` is an attribute of the package."""
    missing = [name for name in taskengine.__all__ if not hasattr(taskengine, name)]
    assert missing == []


def test_public_names_are_exported() -> None:
    """Every public class or function bound in the package namespace is listed in `__all__`."""
    public = {
        name
        for name, value in vars(taskengine).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public - set(taskengine.__all__) == set()


def test_public_names_have_docstrings() -> None:
    """Every exported class and function, and every public method of an exported class, has a
    docstring."""
    undocumented: list[str] = []
    for name in taskengine.__all__:
        value = getattr(taskengine, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not inspect.getdoc(value):
            undocumented.append(name)
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if attr.startswith("_") or not callable(member):
                    continue
                if not (member.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^(python3 -m venv .*)$", text, flags=re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` runs the README's test command word for word."""
    commands = _readme_commands()
    test_commands = [c for c in commands if "pytest" in c]
    assert len(test_commands) == 1
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_commands[0] in ci


def test_readme_has_the_demo_command() -> None:
    """The README's main command installs the project and runs `taskengine demo`."""
    commands = _readme_commands()
    assert any(c.rstrip().endswith("taskengine demo") for c in commands)


def test_version_is_defined_once() -> None:
    """The version in pyproject.toml is the package's `__version__`."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"', text, flags=re.MULTILINE)
    assert match is not None
    assert match.group(1) == taskengine.__version__


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}; install '.[test]'")
    return found


@pytest.mark.slow
def test_ruff_is_clean() -> None:
    """`ruff check` finds nothing in the package, the tests and the benchmarks."""
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "taskengine", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    """`mypy --strict` finds nothing in the package."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "taskengine"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_states_the_unit_of_progress_in_percent() -> None:
    """The README's API table says that `ProgressInPercent` is a 0..1 fraction."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if "`ProgressInPercent`" in line)
    assert "fraction from 0 to 1" in row
