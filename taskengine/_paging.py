"""Paging through tasks: the bounds of ``TaskEngine.list_tasks`` and the page it returns.

Owns :class:`TaskPage` (re-exported by :mod:`taskengine.engine` and the package), the
largest ``limit`` and ``offset`` a list accepts (the same on every task store), and
:func:`check_paging`, which reports both out-of-range arguments at once.
"""

from __future__ import annotations

from typing import Any

import attrs

from taskengine._values import INT64_MAX
from taskengine.errors import InvalidRequest, Violation
from taskengine.task import Task

__all__ = ["MAX_OFFSET", "MAX_PAGE", "TaskPage", "check_paging"]

MAX_PAGE = 100
"""The largest ``limit`` :meth:`TaskEngine.list_tasks` accepts."""
MAX_OFFSET = INT64_MAX
"""The largest ``offset`` :meth:`TaskEngine.list_tasks` accepts (SQLite's largest integer)."""


@attrs.frozen
class TaskPage:
    """One page of :meth:`TaskEngine.list_tasks`: tasks newest first, and the total.

    Attributes:
        tasks: the tasks on this page.
        offset: how many newer tasks were skipped.
        total: how many tasks exist (not expired).
    """

    tasks: tuple[Task, ...]
    offset: int
    total: int

    def to_json(self) -> dict[str, Any]:
        """``{"tasks": [...], "metadata": {"count", "offset", "total"}}`` (ref)."""
        return {
            "tasks": [task.to_json() for task in self.tasks],
            "metadata": {"count": len(self.tasks), "offset": self.offset, "total": self.total},
        }


def check_paging(limit: int, offset: int) -> None:
    """Check the ``limit`` and ``offset`` of a list of tasks.

    Raises:
        InvalidRequest: ``limit`` not in ``1..MAX_PAGE`` (field ``paging.limit``) or
            ``offset`` not in ``0..MAX_OFFSET`` (field ``paging.offset``).
    """
    problems: list[Violation] = []
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        problems.append(Violation("paging.limit", f"must be an integer in 1..{MAX_PAGE}"))
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        problems.append(Violation("paging.offset", f"must be an integer in 0..{MAX_OFFSET}"))
    if problems:
        raise InvalidRequest(problems)
