"""The servers that run the WSGI app: waitress for production, ``wsgiref`` for the rest.

:func:`make_waitress_server` is the production server ``taskengine serve`` runs (waitress,
the ``taskengine[server]`` extra: a bounded thread pool, a deep listen backlog, timeouts for
slow or half-sent requests, chunked request bodies); :func:`make_server` is ``wsgiref`` with
a thread per request and no dependency, for tests, embedding, and as the benchmarks'
bare-server baseline. Both take any WSGI app; this module imports nothing of the package,
and :mod:`taskengine.http` re-exports its public names.
"""

from __future__ import annotations

import ipaddress
import socketserver
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgiref_make_server

__all__ = [
    "DEFAULT_THREADS",
    "DEFAULT_TIMEOUT",
    "DRAIN_LIMIT",
    "ThreadingWSGIServer",
    "is_loopback",
    "make_server",
    "make_waitress_server",
    "stop_waitress_server",
]

DEFAULT_THREADS = 16
"""Request threads of :func:`make_waitress_server`: requests are short, but many wait on a
SQLite commit, and other requests run meanwhile (16 beat 4 and 8 in ``bench_load.py``)."""

DEFAULT_TIMEOUT = 30
"""Seconds a connection may sit idle, or send a request this slowly, before it is closed."""

DRAIN_LIMIT = 64 * 1024 * 1024
"""The largest request body :func:`make_waitress_server` passes to the app (64 MiB).

The app reads and drops an oversized body up to this size before its 413, so that the
client reads the 413 in the app's envelope instead of a connection reset; past it waitress
answers 413 itself.
"""


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """``wsgiref``'s server with a thread per request, so slow clients don't block others."""

    daemon_threads = True
    # Rebinding right after a restart must not fail on sockets still in TIME_WAIT.
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    timeout = 60  # a client that stops sending mid-body cannot hold a thread forever


class _QuietHandler(_Handler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (``quiet=True``)."""


def make_server(
    app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0, *, quiet: bool = False
) -> ThreadingWSGIServer:
    """A threaded ``wsgiref`` server bound to ``host:port`` (port 0 = any free port).

    Call ``serve_forever()`` on it (in a thread, for tests) and ``shutdown()`` then
    ``server_close()`` to stop. The bound port is ``server.server_port``.

    Args:
        quiet: do not log every request to stderr.
    """
    handler = _QuietHandler if quiet else _Handler
    server = _wsgiref_make_server(
        host, port, app, server_class=ThreadingWSGIServer, handler_class=handler
    )
    assert isinstance(server, ThreadingWSGIServer)
    return server


def make_waitress_server(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    threads: int = DEFAULT_THREADS,
    timeout: int = DEFAULT_TIMEOUT,
    connection_limit: int = 1000,
    backlog: int = 2048,
) -> Any:
    """A waitress server for ``app`` bound to ``host:port`` (port 0 = any free port).

    Needs the ``server`` extra (``pip install 'taskengine[server]'``). Call ``run()`` on it
    (it returns on Ctrl-C, or after :func:`stop_waitress_server` from another thread). The
    bound port is ``server.effective_port``.

    Args:
        threads: requests handled at once; more connections wait in waitress' queue.
        timeout: seconds after which an idle connection, or one still sending its request
            (a half-sent body), is closed.
        connection_limit: open connections accepted at once; more wait in the backlog.
        backlog: the listen queue (the kernel may cap it: ``net.core.somaxconn``).

    Raises:
        ImportError: waitress is not installed.
        OSError: the address cannot be bound.
    """
    import waitress.server

    return waitress.server.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        channel_timeout=timeout,
        # Idle channels are only looked at every cleanup_interval seconds.
        cleanup_interval=max(1, min(timeout, 30)),
        connection_limit=connection_limit,
        backlog=backlog,
        # Up to the app's drain limit the app answers 413 itself, in its own envelope.
        max_request_body_size=DRAIN_LIMIT,
        ident="taskengine",
        expose_tracebacks=False,
    )


def stop_waitress_server(server: Any) -> None:
    """Stop a :func:`make_waitress_server` server whose ``run()`` is in another thread.

    Every socket is closed from inside the server's own loop (closing them from this
    thread would race with it), which makes ``run()`` return; then the request threads
    finish their current request and end.
    """

    # waitress (3.0.x) has no public way to stop run() from another thread: run() returns
    # only on KeyboardInterrupt/SystemExit in its own thread, or once its socket map is
    # empty. The server's close() closes just the listening socket (and the trigger), so
    # run() would go on serving every open keep-alive connection until it times out; and
    # calling it from this thread races with the loop. So the loop itself is asked, through
    # the trigger (waitress' own wake-up channel, whose pull_trigger(thunk) runs thunk in
    # the loop thread), to close every channel in the map, the way waitress'
    # MultiSocketServer.close() does with wasyncore.close_all().
    def close_all() -> None:
        for channel in list(server._map.values()):
            try:
                channel.close()
            except OSError:  # its descriptor is already gone: nothing left to close
                pass

    try:
        server.trigger.pull_trigger(close_all)
    except OSError:
        # The trigger's pipe is already closed (seen once in about 25 full test runs,
        # cause not found): the loop can no longer be woken, so close what is left here,
        # which empties its map and ends it.
        close_all()
    server.task_dispatcher.shutdown()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.x, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
