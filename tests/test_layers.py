"""The import contracts in pyproject.toml hold, and lint-imports catches a broken one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

from import_graph import LAYERS, PACKAGE, cycles, import_graph, layer_of, upward_imports

ROOT = PACKAGE.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` (installed next to this Python) in ``cwd``."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports not found next to {sys.executable}: install '.[test]'")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def declared_exceptions() -> set[tuple[str, str]]:
    """The ``importer -> imported`` pairs the layers contract ignores."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["id"] == "layers"]
    pairs = (entry.split(" -> ") for entry in layers.get("ignore_imports", []))
    return {(importer, imported) for importer, imported in pairs}


def test_the_package_keeps_every_import_contract() -> None:
    """lint-imports finds every contract in pyproject.toml kept."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_imports_fails_on_an_import_against_the_layers(tmp_path: Path) -> None:
    """A lower module importing a higher one breaks a layers contract: lint-imports fails."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "high.py").write_text("from layered import low\n")
    (package / "low.py").write_text("from layered import high\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = layered\n\n"
        "[importlinter:contract:layers]\nname = high over low\ntype = layers\n"
        "layers =\n    layered.high\n    layered.low\n"
    )
    result = lint_imports(tmp_path, "--config", str(tmp_path / ".importlinter"))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_every_module_sits_in_a_layer() -> None:
    """Each module of the package belongs to one of the declared layers (the root aside)."""
    unplaced = [m for m in import_graph() if m not in ("taskengine", "taskengine.__main__")]
    assert [m for m in unplaced if layer_of(m) is None] == []


def test_upward_imports_are_only_the_declared_exceptions() -> None:
    """Counted over the ast, every upward import is one the layers contract lists as ignored."""
    assert set(upward_imports(import_graph())) <= declared_exceptions()


def test_the_package_has_no_import_loop() -> None:
    """No module imports itself through others, type-checking and deferred imports included."""
    assert cycles(import_graph()) == []


def test_the_counting_script_sees_the_layers_of_the_contract() -> None:
    """tests/import_graph.py and pyproject.toml name the same layers, top to bottom."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["id"] == "layers"]
    declared = [tuple(n.strip() for n in layer.split("|")) for layer in layers["layers"]]
    assert declared == [tuple(layer) for layer in LAYERS]
