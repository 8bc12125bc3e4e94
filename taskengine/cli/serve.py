"""``taskengine serve``: the REST API (docs/http.md) and the dashboard (docs/dashboard.md, at
``/``) on waitress, running tasks in-process.

Its engine adopts tasks, as ``worker``'s does: unfinished tasks no live engine owns resume
at start, and tasks other processes create or leave behind are found by polling; Ctrl-C or
SIGTERM checkpoints the running ones and releases them, so another engine on the file (or
the next start) continues them (see docs/durability.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any, TextIO

from taskengine.cli._common import (
    DB_HELP,
    EXIT_OK,
    CommandError,
    count_unfinished,
    display_db,
    open_engine,
    port,
    positive,
)
from taskengine.cli._owners import take_census

__all__ = ["add_command", "run_command"]


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and its options to the ``taskengine`` subcommands."""
    from taskengine.http import DEFAULT_THREADS, DEFAULT_TIMEOUT

    serve = commands.add_parser(
        "serve",
        help="serve the REST API and the dashboard (and run tasks) over a SQLite file or "
        "PostgreSQL database",
        description="Serve the Background Tasks REST API, and the dashboard page at /, on "
        "the waitress server (the "
        "'taskengine[server]' extra). Unfinished tasks no live engine owns resume, and "
        "tasks other processes leave or create are taken up; on Ctrl-C or SIGTERM running "
        "tasks are checkpointed and released, for another engine or the next start. "
        "Without a token only loopback addresses are allowed.",
    )
    serve.add_argument("--db", required=True, help=DB_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    serve.add_argument(
        "--port", type=port, default=8080, help="0-65535, default 8080; 0 = any free port"
    )
    serve.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (default: $TASKENGINE_TOKEN)"
    )
    serve.add_argument("--workers", type=positive, default=2, help="task workers (default 2)")
    serve.add_argument(
        "--threads",
        type=positive,
        default=DEFAULT_THREADS,
        help=f"requests handled at once (default {DEFAULT_THREADS})",
    )
    serve.add_argument(
        "--timeout",
        type=positive,
        default=DEFAULT_TIMEOUT,
        help="close a connection idle, or still sending its request, after this many seconds "
        f"(default {DEFAULT_TIMEOUT})",
    )
    serve.add_argument("--quiet", action="store_true", help="do not log requests")
    serve.add_argument("--batch-size", type=positive, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine serve`` with parsed ``args`` until Ctrl-C or SIGTERM; returns 0.

    Raises:
        CommandError: waitress is missing, a non-loopback host without a token, or the
            address cannot be listened on (exit 2).
    """
    from taskengine.dashboard import make_dashboard_app
    from taskengine.http import (
        is_loopback,
        make_waitress_server,
        stop_waitress_server,
    )

    try:
        import waitress  # noqa: F401
    except ImportError:
        raise CommandError(
            "'taskengine serve' runs on the waitress server, which is not installed: "
            "pip install 'taskengine[server]'"
        ) from None
    token = args.token or os.environ.get("TASKENGINE_TOKEN") or None
    if token is None and not is_loopback(args.host):
        raise CommandError(
            f"refusing to serve on {args.host} without a token: anyone who can reach it could "
            "create and cancel tasks; pass --token (or TASKENGINE_TOKEN), or use the default "
            "--host 127.0.0.1"
        )
    if args.quiet:
        logging.getLogger("waitress").setLevel(logging.ERROR)
    with open_engine(args.db, workers=args.workers, batch_size=args.batch_size) as (
        engine,
        _storage,
    ):
        census = take_census(engine)  # before the engine starts and resumes them
        app = make_dashboard_app(engine, token=token)  # the task API, and the page at /
        try:
            server = make_waitress_server(
                app if args.quiet else _access_log(app, err),
                args.host,
                args.port,
                threads=args.threads,
                timeout=args.timeout,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
        engine.start()
        previous = _install_sigterm()
        loop = threading.Thread(target=server.run, name="taskengine-http", daemon=True)
        try:
            # Ctrl-C and SIGTERM raise KeyboardInterrupt in this thread; the server's loop
            # runs in another one, so wherever the signal lands it stops the same way.
            loop.start()
            host = str(server.effective_host)
            shown = f"[{host}]" if ":" in host else host
            note = census.owned_note()
            out.write(
                f"Resumed {len(census.waiting)} unfinished task(s) from {display_db(args.db)}.\n"
                + ("" if note is None else note + "\n")
                + f"Serving the task API on http://{shown}:{server.effective_port}/cms/v1/tasks "
                f"and the dashboard on http://{shown}:{server.effective_port}/ "
                f"({'token required' if token else 'no token, loopback only'}); "
                "Ctrl-C stops.\n"
            )
            out.flush()
            while loop.is_alive():
                loop.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            stop_waitress_server(server)
            loop.join(10)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        engine.stop()
        left = count_unfinished(engine)
        out.write(
            f"Stopped. {left} unfinished task(s) were checkpointed; they resume when "
            f"'taskengine worker', 'serve' or 'run --resume' opens {display_db(args.db)} "
            "(at once in one already running on it).\n"
        )
        return EXIT_OK


def _access_log(app: Any, err: TextIO) -> Any:
    """``app`` writing one line per request to ``err`` (method, path, status)."""

    def logged(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            err.write(
                f"{environ.get('REMOTE_ADDR', '-')} {environ.get('REQUEST_METHOD', '?')} "
                f"{environ.get('PATH_INFO', '')} {status.split(' ', 1)[0]}\n"
            )
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def _install_sigterm() -> Any:
    """On SIGTERM, stop serving like Ctrl-C does (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)
