"""PgDatabase's connections notice a dead peer: TCP keepalives and a user timeout on both ends.

Unless the DSN sets them, every connection (pooled, and a listener's) asks libpq for
keepalives (idle 10 s, 3 probes 5 s apart) and a 30 s TCP user timeout, and sets the
server's ``tcp_keepalives_*`` and ``tcp_user_timeout`` for its session, so that a server
ends the session of a client that vanished mid-transaction (its locks go with it). What
this buys in a real partition is shown by tests/core/test_pg_partition.py. JIT is off
for the session the same way, unless set.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from taskengine.storage._pgdatabase import PgDatabase


def client_settings(conn: Any) -> dict[str, str]:
    """The keepalive parameters libpq uses on ``conn``."""
    return {
        option.keyword.decode(): (option.val or b"").decode()
        for option in conn.pgconn.info
        if option.keyword.decode().startswith(("keepalives", "tcp_user_timeout"))
    }


def server_settings(conn: Any) -> dict[str, tuple[str, str]]:
    """The session's keepalive settings on the server: name -> (value, source)."""
    rows = conn.execute(
        "SELECT name, setting, source FROM pg_settings"
        " WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval',"
        " 'tcp_keepalives_count', 'tcp_user_timeout')"
    ).fetchall()
    return {name: (value, source) for name, value, source in rows}


def over_tcp(conn: Any) -> None:
    """Skip when the session is not over TCP (a Unix socket ignores these settings)."""
    if conn.execute("SELECT inet_server_addr()").fetchone()[0] is None:
        pytest.skip("the test server is reached over a Unix socket")


def test_connections_keep_alive_on_both_ends_by_default(pg_database: str) -> None:
    """A pooled connection and a listener's: libpq keepalives and user timeout, and the
    same on the server's end of the session."""
    with PgDatabase(pg_database) as database:
        listener = database.listen(["nothing"])
        with database.read() as conn:
            over_tcp(conn)
            connections = [conn, listener._conn]  # the listener's own connection
            for each in connections:
                assert client_settings(each) == {
                    "keepalives": "1",
                    "keepalives_idle": "10",
                    "keepalives_interval": "5",
                    "keepalives_count": "3",
                    "tcp_user_timeout": "30000",
                }
                assert server_settings(each) == {
                    "tcp_keepalives_idle": ("10", "session"),
                    "tcp_keepalives_interval": ("5", "session"),
                    "tcp_keepalives_count": ("3", "session"),
                    "tcp_user_timeout": ("30000", "session"),
                }


def test_the_dsn_overrides_them(pg_database: str) -> None:
    """Parameters in the DSN win, for libpq's and for the server's (in ``options``)."""
    dsn = make_conninfo(
        pg_database,
        keepalives_idle=2,
        tcp_user_timeout=7000,
        options="-c tcp_keepalives_idle=1 -c tcp_user_timeout=4000",
    )
    with PgDatabase(dsn) as database, database.read() as conn:
        over_tcp(conn)
        assert client_settings(conn)["keepalives_idle"] == "2"
        assert client_settings(conn)["tcp_user_timeout"] == "7000"
        assert client_settings(conn)["keepalives_count"] == "3"
        assert server_settings(conn) == {
            "tcp_keepalives_idle": ("1", "client"),
            "tcp_keepalives_interval": ("5", "session"),
            "tcp_keepalives_count": ("3", "session"),
            "tcp_user_timeout": ("4000", "client"),
        }


def jit(conn: Any) -> tuple[str, str]:
    """The session's ``jit`` setting and its source."""
    row = conn.execute("SELECT setting, source FROM pg_settings WHERE name = 'jit'").fetchone()
    return (str(row[0]), str(row[1]))


def test_jit_is_off_unless_the_dsn_sets_it(pg_database: str) -> None:
    """A set-based batch's per-row expressions are costed past ``jit_above_cost``, and
    compiling them cost a third of a batch: sessions run without JIT, unless asked."""
    with PgDatabase(pg_database) as database, database.read() as conn:
        assert jit(conn) == ("off", "session")
    asked = make_conninfo(pg_database, options="-c jit=on")
    with PgDatabase(asked) as database, database.read() as conn:
        assert jit(conn) == ("on", "client")
