"""Sample databases the command's tests share (builders in ``cli_runner``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import make_big_db, make_shop_db


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    """'Items' (publish plugin, 30 items, 10 on Halloween) and 'Plain' (see make_shop_db)."""
    return make_shop_db(tmp_path)


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """20,000 items in 'Items' (see make_big_db)."""
    return make_big_db(tmp_path)
