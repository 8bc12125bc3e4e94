"""The test PostgreSQL server's helpers: finding the programs, skipping or failing without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pg_conftest_plugin import unavailable
from pg_server import INSTALL_HINT, REQUIRE_VARIABLE, PostgresUnavailable, find_binaries


def _install(directory: Path, programs: tuple[str, ...] = ("initdb", "pg_ctl", "postgres")) -> Path:
    directory.mkdir(parents=True)
    for program in programs:
        path = directory / program
        path.write_text("#!/bin/sh\n", encoding="utf-8")
        path.chmod(0o755)
    return directory


def test_missing_programs_say_what_to_install(tmp_path: Path) -> None:
    """With no server programs anywhere, the error names the package and the variable."""
    _install(tmp_path / "path", ("initdb", "pg_ctl"))  # no postgres: not a server
    with pytest.raises(PostgresUnavailable) as caught:
        find_binaries(path=str(tmp_path / "path"), versioned_root=tmp_path / "none")
    message = str(caught.value)
    assert message.endswith(INSTALL_HINT)
    assert "apt-get install postgresql" in message
    assert "TASKENGINE_TEST_POSTGRES=postgresql://" in message


def test_path_comes_before_versioned_directories(tmp_path: Path) -> None:
    """A PATH directory holding all three programs wins over /usr/lib/postgresql."""
    on_path = _install(tmp_path / "bin")
    _install(tmp_path / "lib" / "16" / "bin")
    found = find_binaries(path=str(on_path), versioned_root=tmp_path / "lib")
    assert found.directory == on_path


def test_newest_version_is_chosen(tmp_path: Path) -> None:
    """Among versioned directories the highest version wins, compared as numbers."""
    root = tmp_path / "lib"
    for version in ("9.6", "15", "13"):
        _install(root / version / "bin")
    (root / "17" / "bin").mkdir(parents=True)  # a client-only install: no server
    found = find_binaries(path="", versioned_root=root)
    assert found.directory == root / "15" / "bin"


def test_unavailable_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TASKENGINE_REQUIRE_POSTGRES, an unavailable server skips the test."""
    monkeypatch.delenv(REQUIRE_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        unavailable("no server")


@pytest.mark.parametrize("value", ["1", "yes"])
def test_unavailable_fails_when_required(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """With TASKENGINE_REQUIRE_POSTGRES set (not 0), an unavailable server fails the test."""
    monkeypatch.setenv(REQUIRE_VARIABLE, value)
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_VARIABLE} is set.*no server"):
        unavailable("no server")


def test_required_zero_still_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKENGINE_REQUIRE_POSTGRES=0 means not required."""
    monkeypatch.setenv(REQUIRE_VARIABLE, "0")
    with pytest.raises(pytest.skip.Exception):
        unavailable("no server")


def test_session_server_is_loopback_only(postgres_dsn: str) -> None:
    """The session's server listens on 127.0.0.1 only, with no fsync (or is the given DSN)."""
    import psycopg

    if os.environ.get("TASKENGINE_TEST_POSTGRES"):
        pytest.skip("a given server is configured by whoever runs it")
    with psycopg.connect(postgres_dsn) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'fsync', 'synchronous_commit', 'full_page_writes')"
            ).fetchall()
        )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
