"""The ``taskengine`` argument parser: the root, one subcommand per command module.

Each command module (:mod:`~taskengine.cli.demo`, :mod:`~taskengine.cli.import_`,
:mod:`~taskengine.cli.run`, :mod:`~taskengine.cli.tasks`, :mod:`~taskengine.cli.worker`,
:mod:`~taskengine.cli.serve`)
adds its own subparser with ``add_command``, which also sets the ``handler`` that
``main()`` calls, and may set a ``check``: a function of the parsed arguments returning
a usage problem (or ``None``) for rules argparse cannot state, such as "a task file or
``--resume``", reported like any other usage error. They are imported when the parser is
built, inside ``main()``, not when ``taskengine.cli`` is.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from taskengine.cli._common import EXIT_BAD_INPUT, exit_codes_epilog

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2.

    A command that takes a subcommand and got none (``taskengine``, ``taskengine tasks``)
    shows its usage, which lists the subcommands, above that line.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and where to find help; exit 2."""
        usage = ""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and str(action.metavar) in message:
                usage = self.format_usage()
        line = f"{self.prog}: error: {message} (see '{self.prog} --help')\n"
        self.exit(EXIT_BAD_INPUT, usage + line)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, then apply this parser's own ``check`` (see the module docstring)."""
        parsed, extras = super().parse_known_args(args, namespace)
        check = self._defaults.get("check")
        if check is not None:
            problem = check(parsed)
            if problem is not None:
                self.error(problem)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    """The ``taskengine`` argument parser."""
    from taskengine import __version__
    from taskengine.cli import demo, import_, run, serve, tasks, worker

    parser = _Parser(
        prog="taskengine",
        description="Run bulk data operations as background tasks over a SQLite database.",
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"taskengine {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in (demo, import_, run, tasks, worker, serve):  # the order --help lists them in
        command.add_command(commands)
    _add_debug(parser)
    return parser


_DEBUG_HELP = "on an internal error, show the traceback (exit code 5 either way)"


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` before or after the command name (``taskengine --debug run``, ``run
    --debug``); a subcommand's copy defaults to "not given" so it never resets the other."""
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    child.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
                    )
                    pending.append(child)
