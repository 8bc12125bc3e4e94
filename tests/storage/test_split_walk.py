"""``split_by_walk``, the SQL adapters' split points: the law over any sorted keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taskengine.storage._estimate import split_by_walk


@given(st.lists(st.text(max_size=4), unique=True, max_size=300), st.integers(0, 70))
def test_points_end_equal_shares(keys: list[str], parts: int) -> None:
    """Point ``k`` is the last key of the ``k``-th of ``parts`` equal shares (the shares'
    sizes differ by at most one); none for fewer keys than parts, or one part."""
    keys.sort()

    def after(key: str, offset: int) -> str | None:
        at = keys.index(key) + 1 + offset
        return keys[at] if at < len(keys) else None

    points = split_by_walk(len(keys), parts, lambda n: keys[n] if n < len(keys) else None, after)
    if parts < 2 or len(keys) < parts:
        assert points == []
        return
    assert points == [keys[len(keys) * k // parts - 1] for k in range(1, parts)]
