"""A throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` into a temporary folder.

:func:`find_binaries` looks for ``initdb``, ``pg_ctl`` and ``postgres`` on ``PATH`` and in
``/usr/lib/postgresql/<version>/bin`` (newest version first); :class:`PostgresServer`
initialises a cluster in a temporary folder, starts it on a free port of 127.0.0.1 (no
other address, its unix socket inside the folder), tuned for tests rather than
durability (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off), and stops it
with ``pg_ctl stop -m immediate`` and removes the folder in :meth:`PostgresServer.stop`.

PostgreSQL refuses to run as root: a root process runs the server programs as the
``postgres`` user (the folder is made theirs), as the Debian package's own scripts do.

What makes a server impossible here (no binaries; root and no ``postgres`` user) raises
:class:`PostgresUnavailable`, whose message says how to fix it; the pytest plugin
(``pg_conftest_plugin``) turns it into a skip, or into a failure when
``TASKENGINE_REQUIRE_POSTGRES=1``. An installed server that fails to start raises
:class:`ServerFailed` with its log, an error in every case.

Run ``python tests/pg_server.py`` to start a server, print its DSN and the start time, and
stop it on Enter.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DSN_VARIABLE",
    "INSTALL_HINT",
    "REQUIRE_VARIABLE",
    "Binaries",
    "PostgresServer",
    "PostgresUnavailable",
    "ServerFailed",
    "find_binaries",
]

DSN_VARIABLE = "TASKENGINE_TEST_POSTGRES"
"""A DSN of an existing server to test against instead of starting one."""

REQUIRE_VARIABLE = "TASKENGINE_REQUIRE_POSTGRES"
"""Set to ``1`` (as ``.ci/run`` does) to fail, not skip, when no server can be provided."""

INSTALL_HINT = (
    "install the Debian package postgresql (apt-get install postgresql) "
    f"or set {DSN_VARIABLE}=postgresql://…"
)

SERVER_USER = "postgres"
"""The unprivileged user a root process runs the server as."""

DATABASE = "taskengine_test"
"""The database created in a fresh server for the session."""

START_TIMEOUT = 30.0
"""Seconds to wait for the server to accept connections."""

_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_VERSIONED_ROOT = Path("/usr/lib/postgresql")

# Durability off (a crash loses the throwaway cluster anyway); only loopback and the
# folder's own socket, so parallel runs and other users' servers never meet.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be provided here; the message says what to do about it."""


class ServerFailed(RuntimeError):
    """A server program failed although it is installed (a bug to see, not to skip)."""


class Binaries:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` of one version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"<Binaries {self.directory}>"

    def path(self, program: str) -> str:
        """The full path of ``program`` in this directory."""
        return str(self.directory / program)


def _version_key(directory: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name)) or (0,)


def find_binaries(path: str | None = None, versioned_root: Path = _VERSIONED_ROOT) -> Binaries:
    """The server programs: a ``PATH`` directory that has all three, else the newest
    ``<versioned_root>/<version>/bin``.

    Raises:
        PostgresUnavailable: no directory holds all three programs.
    """
    search = os.environ.get("PATH", "") if path is None else path
    for entry in search.split(os.pathsep):
        if not entry:
            continue
        found = [shutil.which(program, path=entry) for program in _PROGRAMS]
        if all(found):
            # Debian links initdb into PATH from postgresql-common wrappers; the real
            # binaries sit beside the resolved postgres.
            return Binaries(Path(os.path.realpath(str(found[2]))).parent)
    candidates = sorted(versioned_root.glob("*/bin"), key=_version_key, reverse=True)
    for directory in candidates:
        if all(os.access(directory / program, os.X_OK) for program in _PROGRAMS):
            return Binaries(directory)
    raise PostgresUnavailable(
        "PostgreSQL server programs (initdb, pg_ctl, postgres) were not found on PATH or in "
        f"{versioned_root}/*/bin: {INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable_by_others(directory: Path) -> bool:
    return all(os.stat(part).st_mode & 0o001 for part in [directory, *directory.parents])


class PostgresServer:
    """One throwaway cluster: :meth:`start` it, use :attr:`dsn`, then :meth:`stop` it.

    Also a context manager. ``stop`` is idempotent and also registered with ``atexit``,
    so an interrupted session does not leave a server running.

    Args:
        binaries: the server programs (default: :func:`find_binaries`).
        listen: addresses to listen on besides 127.0.0.1 (the host end of a test's
            network link; the DSN still names 127.0.0.1).
        trust: client networks (``10.0.0.2/32``) allowed in without a password besides
            loopback, added to ``pg_hba.conf``.

    Attributes:
        dsn: ``postgresql://postgres@127.0.0.1:<port>/taskengine_test`` once started.
        start_seconds: how long :meth:`start` took (initdb, start, first connection).
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        listen: Sequence[str] = (),
        trust: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries if binaries is not None else find_binaries()
        self.listen = tuple(listen)
        self.trust = tuple(trust)
        self.folder: Path | None = None
        self.port = 0
        self.dsn = ""
        self.start_seconds = 0.0
        self._running = False
        self._user: pwd.struct_passwd | None = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        assert self.folder is not None, "the server was not started"
        return self.folder / "data"

    def start(self, attempts: int = 3) -> None:
        """initdb, start on a free loopback port, wait until it accepts connections, and
        create the session database.

        Raises:
            PostgresUnavailable: the server cannot run here (root, and no ``postgres``
                user to run it as).
            ServerFailed: initdb or the start failed (the server log is quoted).
        """
        started = time.monotonic()
        self._user = self._server_user()
        self.folder = self._make_folder()
        atexit.register(self.stop)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            )
            for attempt in range(attempts):
                self.port = _free_port()
                self._configure()
                # Another process may take the port between choosing and binding it.
                try:
                    self._run(
                        "pg_ctl",
                        "start",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self._log),
                        "-w",
                        "-t",
                        str(int(START_TIMEOUT)),
                    )
                    break
                except ServerFailed:
                    if attempt == attempts - 1 or "already in use" not in self._log_tail():
                        raise
            self._running = True
            base = f"postgresql://postgres@127.0.0.1:{self.port}"
            with self._connect_when_ready(f"{base}/postgres") as conn:
                conn.execute(f"CREATE DATABASE {DATABASE} TEMPLATE template0")
            self.dsn = f"{base}/{DATABASE}"
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and remove its folder. Idempotent."""
        if self._running:
            self._running = False
            with contextlib.suppress(ServerFailed):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    @property
    def _log(self) -> Path:
        assert self.folder is not None
        return self.folder / "server.log"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _server_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"the tests run as root, PostgreSQL refuses to, and there is no {SERVER_USER!r} "
                f"user to run it as: create one (useradd --system {SERVER_USER}; the Debian "
                f"package postgresql does), run the tests as another user, or set "
                f"{DSN_VARIABLE}=postgresql://…"
            ) from None

    def _make_folder(self) -> Path:
        base = Path(tempfile.gettempdir())
        if self._user is not None and not _traversable_by_others(base):
            base = Path("/tmp")
        folder = Path(tempfile.mkdtemp(prefix="taskengine-pg-", dir=base))
        if self._user is not None:
            os.chown(folder, self._user.pw_uid, self._user.pw_gid)
        return folder

    def _configure(self) -> None:
        settings = {
            **_SETTINGS,
            "listen_addresses": "'" + ",".join(["127.0.0.1", *self.listen]) + "'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
        }
        # The last setting of a name wins, so appending again on a retry is enough.
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# taskengine tests\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        if self.trust:
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in self.trust)

    def _run(self, program: str, *args: str) -> None:
        options: dict[str, Any] = {}
        if self._user is not None:
            options = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        result = subprocess.run(
            [self.binaries.path(program), *args],
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
            **options,
        )
        if result.returncode != 0:
            raise ServerFailed(
                f"{program} {' '.join(args[:1])} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{self._log_tail()}"
            )

    @contextlib.contextmanager
    def _connect_when_ready(self, dsn: str) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerFailed(
                        f"PostgreSQL did not accept connections within {START_TIMEOUT:g} s: "
                        f"{exc}\n--- server log ---\n{self._log_tail()}"
                    ) from exc
                time.sleep(0.05)
        with conn:
            yield conn


def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` (from ``template0``) on the server of ``dsn``; its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        # PostgreSQL 15's default strategy (WAL_LOG) takes 2-3 times as long for a
        # database as small as template0.
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{strategy}')
    return make_conninfo(dsn, dbname=name)


def drop_database(dsn: str, name: str) -> None:
    """Drop database ``name`` on the server of ``dsn``, closing its open connections."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _main(argv: Sequence[str]) -> None:
    with PostgresServer() as server:
        print(f"{server.dsn}  (started in {server.start_seconds:.2f} s; Enter stops it)")
        if "--no-wait" not in argv:
            input()


if __name__ == "__main__":
    _main(sys.argv[1:])
