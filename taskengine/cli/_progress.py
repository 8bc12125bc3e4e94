"""A running task on the terminal: its progress line, Ctrl-C cancelling it, its exit code.

``run`` and ``demo`` create a task and follow it here until it ends (see docs/cli.md and,
for the states, docs/lifecycle.md); ``run --resume`` shows the tasks it resumes with the
same :class:`ProgressPrinter`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from taskengine.cli._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    count,
)

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.task import Task

__all__ = ["ProgressPrinter", "ctrl_c_cancels", "exit_code_for", "follow_task"]


class ProgressPrinter:
    """Shows how far a task has got: a redrawn bar on a terminal, plain lines otherwise.

    Args:
        stream: where to write (the command's stderr for ``run``, stdout for ``demo``).
        label: what is running (``"DELETE_BY_QUERY"``).
        tty: draw a bar redrawn in place; ``None`` = ``stream.isatty()``.
        interval: seconds between plain lines when not on a terminal.
        done_before: items the task had processed before it was followed from here (a
            resumed task): left out of the rate.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        tty: bool | None = None,
        interval: float = 1.0,
        done_before: int = 0,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = _isatty(stream) if tty is None else tty
        self.interval = interval
        self.done_before = done_before
        self._started = time.monotonic()
        self._last_line = self._started  # the first plain line comes after one interval
        self._drawn = False

    def update(self, task: Task) -> None:
        """Show ``task``'s counters (at most once per ``interval`` off a terminal)."""
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self._text(task, now) + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif now - self._last_line >= self.interval and not task.is_finished:
            self._last_line = now
            self.stream.write(self._text(task, now) + "\n")
            self.stream.flush()

    def end_line(self) -> None:
        """End a bar drawn in place, so that other text starts on a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False

    def finish(self, task: Task) -> None:
        """Show the final state and end the line."""
        now = time.monotonic()
        text = self._text(task, now)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _text(self, task: Task, now: float) -> str:
        done = task.items_succeeded + task.items_failed
        total = max(task.estimated_item_count, done)
        elapsed = max(now - self._started, 1e-9)
        if task.is_finished:
            fraction = 1.0 if task.status.value == "COMPLETED" else (done / total if total else 0)
        else:
            fraction = done / total if total else 0.0
        state = task.status.value
        if task.cancel_requested and not task.is_finished:
            state = "CANCELLING"
        elif task.is_finished and _is_cancelled(task):
            state = "CANCELLED"
        counts = f"{done:,}/{count(total, 'item')}"
        if task.items_failed:
            counts += f" ({task.items_failed:,} failed)"
        rate = f"{max(0, done - self.done_before) / elapsed:,.0f} items/s"
        if self.tty:
            width = 28
            filled = round(fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            return f"{self.label:<22} [{bar}] {fraction * 100:5.1f}%  {counts}  {rate}  {state}"
        return f"{self.label}: {fraction * 100:.0f}% {counts}, {rate}, {state}"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _is_cancelled(task: Task) -> bool:
    failures = task.failures
    return task.status.value == "FAILED" and bool(failures) and failures[0].code == "CANCELLED"


def exit_code_for(task: Task) -> int:
    """The exit code for a task's outcome (see ``EXIT_CODES``); NEW/RUNNING give 0."""
    status = task.status.value
    if status == "COMPLETED":
        return EXIT_ITEM_FAILURES if task.items_failed else EXIT_OK
    if status == "FAILED":
        return EXIT_CANCELLED if _is_cancelled(task) else EXIT_FAILED
    return EXIT_OK


def follow_task(
    engine: TaskEngine,
    task_id: str,
    printer: ProgressPrinter | None,
    *,
    poll: float = 0.1,
    interrupt: threading.Event | None = None,
) -> Task:
    """Poll ``task_id`` until it is finished, showing progress; return the final task.

    A Ctrl-C while waiting (``interrupt`` set by :func:`ctrl_c_cancels`, or a
    ``KeyboardInterrupt``) cancels the task and keeps waiting for it to end; a second
    Ctrl-C gives up waiting and raises ``KeyboardInterrupt``.
    """
    cancelling = False
    while True:
        try:
            if interrupt is not None and interrupt.is_set() and not cancelling:
                raise KeyboardInterrupt
            task = engine.get_task(task_id)
            if printer is not None:
                printer.update(task)
            if task.is_finished:
                if printer is not None:
                    printer.finish(task)
                return task
            engine.wait(task_id, timeout=poll)
        except KeyboardInterrupt:
            if cancelling:
                raise
            cancelling = True
            if printer is not None:
                printer.stream.write("\nCtrl-C: cancelling the task (Ctrl-C again to quit)\n")
                printer.stream.flush()
            engine.cancel_task(task_id)


@contextlib.contextmanager
def ctrl_c_cancels() -> Iterator[threading.Event]:
    """While active, a first Ctrl-C only sets the yielded event (a second one raises).

    This keeps a Ctrl-C from landing between creating a task and following it: the
    follower sees the event and cancels the task. Outside the main thread (where signal
    handlers cannot be set) the event is never set and Ctrl-C behaves as usual.
    """
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def handler(signum: int, frame: object) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
