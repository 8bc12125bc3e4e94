"""``taskengine worker --workers N``: N worker processes under one supervisor.

Each worker process is a ``taskengine worker --workers 1`` of its own: its own engine,
connections and GIL, so independent tasks run on several cores at once. The supervisor
only starts them, prefixes their lines with ``[n]``, restarts one that exits while it
should run (a crash, a SIGKILL), and on SIGINT or SIGTERM asks each to stop (one SIGTERM:
each checkpoints, releases its tasks and exits 0) and waits for them.

The worker processes run in sessions of their own, so a Ctrl-C in a terminal reaches only
the supervisor, which passes it on once. Each is given the supervisor's pid and exits by
itself, its tasks released, when the supervisor is gone (even after a SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TextIO

from taskengine.cli._common import EXIT_OK, display_db, split_password
from taskengine.cli._watch import stop_signals

__all__ = ["EXIT_WORKER_FAILED", "LossyOutput", "parent_gone", "supervise"]

_RESTART_FIRST = 0.5  # seconds before restarting a process that exited unasked
_RESTART_MOST = 30.0  # the longest wait between restarts of one that keeps exiting
_STEADY = 10.0  # a process that ran this long before exiting restarts after the first wait
_LOOK_EVERY = 0.1  # seconds between the supervisor's looks at its processes
EXIT_WORKER_FAILED = 1
"""The supervisor's exit code when a worker process did not stop cleanly."""


def parent_gone(parent: int | None) -> bool:
    """Whether the supervisor with pid ``parent`` is gone (a worker process then stops)."""
    return parent is not None and os.getppid() != parent


class LossyOutput:
    """A worker process's output: lines to the supervisor's pipe, dropped once the pipe
    is gone (its supervisor was killed), so the process still stops cleanly."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lost = False

    def write(self, text: str) -> int:
        """Write ``text`` unless the pipe broke; return its length either way."""
        if not self._lost:
            try:
                self._out.write(text)
            except OSError:  # BrokenPipeError and the like: nobody reads any more
                self._lost = True
        return len(text)

    def flush(self) -> None:
        """Flush unless the pipe broke."""
        if not self._lost:
            try:
                self._out.flush()
            except OSError:
                self._lost = True


class _Process:
    """One supervised worker process: its command, its ``Popen``, its restart backoff."""

    def __init__(
        self,
        number: int,
        command: tuple[list[str], dict[str, str]],
        out: TextIO,
        lock: threading.Lock,
    ) -> None:
        self.number = number
        self.command, self.env = command
        self.out = out
        self.lock = lock
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0
        self.backoff = _RESTART_FIRST
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,  # a terminal's Ctrl-C reaches only the supervisor
        )
        self.started = time.monotonic()
        self.restart_at = None
        assert self.proc.stdout is not None
        threading.Thread(
            target=self._copy,
            args=(self.proc.stdout,),
            name=f"taskengine-worker-{self.number}-output",
            daemon=True,
        ).start()

    def _copy(self, stream: IO[str]) -> None:
        """Copy the process's lines to the supervisor's output, prefixed with ``[n]``."""
        for line in stream:
            self.line(line.rstrip("\n"))

    def line(self, text: str) -> None:
        with self.lock:
            self.out.write(f"[{self.number}] {text}\n")
            self.out.flush()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def supervise(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``args.workers`` worker processes until SIGINT or SIGTERM; see the module."""
    lock = threading.Lock()
    processes = [
        _Process(number, _command(args), out, lock) for number in range(1, args.workers + 1)
    ]
    with stop_signals() as stop:
        for process in processes:
            process.start()
        with lock:
            out.write(
                f"Supervisor {os.getpid()}: {args.workers} worker processes on "
                f"{display_db(args.db)}, {args.threads} task(s) at a time each; "
                "Ctrl-C or SIGTERM stops them.\n"
            )
            out.flush()
        while not stop.is_set():
            now = time.monotonic()
            for process in processes:
                _keep_running(process, now)
            stop.wait(_LOOK_EVERY)
        for process in processes:
            process.stop()
        failed = 0
        for process in processes:
            if process.proc is None:
                continue
            code = process.proc.wait()
            if code not in (EXIT_OK, -signal.SIGTERM):
                failed += 1
                process.line(f"exited with code {code} while stopping")
    with lock:
        out.write(f"Stopped {args.workers} worker processes.\n")
        out.flush()
    return EXIT_OK if failed == 0 else EXIT_WORKER_FAILED


def _keep_running(process: _Process, now: float) -> None:
    """Restart ``process`` once it exited unasked, after a backoff that grows while it
    keeps exiting soon after starting."""
    code = process.exited()
    if code is None:
        return
    if process.restart_at is None:
        if now - process.started >= _STEADY:
            process.backoff = _RESTART_FIRST  # it ran a while: not a crash loop
        wait = process.backoff
        process.backoff = min(wait * 2, _RESTART_MOST)  # the next wait, if it exits soon
        process.restart_at = now + wait
        process.line(f"exited with code {code}; restarting in {wait:g} s")
    elif now >= process.restart_at:
        process.start()


def _command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one worker process: this worker's options
    with ``--workers 1``; a DSN's password goes into the environment, not the command
    line (which ``ps`` shows)."""
    db, password = split_password(args.db)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    command = [
        sys.executable,
        "-m",
        "taskengine",
        "worker",
        "--db",
        db,
        "--workers",
        "1",
        "--threads",
        str(args.threads),
        "--lease",
        repr(args.lease),
        "--poll",
        repr(args.poll),
        "--parent",
        str(os.getpid()),
    ]
    if args.batch_size is not None:
        command += ["--batch-size", str(args.batch_size)]
    if args.quiet:
        command.append("--quiet")
    return command, env
