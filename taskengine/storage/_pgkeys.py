"""Item ids and collection names as PostgreSQL ``text``, in code point order.

PostgreSQL ``text`` cannot hold U+0000, which a Python ``str`` (and so an ``_id``) may
contain. Keys are therefore stored escaped: U+0000 becomes U+0001 U+0001 and U+0001
becomes U+0001 U+0002; every other character stands for itself. The code words are
prefix-free and ordered like the characters they replace (U+0001 U+0001 < U+0001 U+0002 <
any other character), so comparing escaped keys compares the original strings: with
``COLLATE "C"`` (byte order of UTF-8, which is code point order) an index on the escaped
column orders ids exactly as Python's ``sorted`` does. Ids without either character (all
but the strangest) are stored as they are, so the column stays readable and queryable.

A string holding a lone surrogate cannot be sent to the server at all (it has no UTF-8
form); no stored key can equal it, and :func:`lower_bound` gives the key range that a
scan cursor holding one stands for.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskengine._values import encodable

__all__ = ["key", "keys", "lower_bound", "unkey"]

_ESCAPED = ("\x00", "\x01")


def key(text: str) -> str:
    """The stored form of an encodable ``text``."""
    if "\x01" in text or "\x00" in text:
        return text.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")
    return text


def keys(texts: Iterable[str]) -> list[str]:
    """The stored form of each of ``texts`` (all encodable), in order."""
    texts = list(texts)
    joined = "".join(texts)
    if "\x01" not in joined and "\x00" not in joined:
        return texts  # the common case, checked in C
    return [key(text) for text in texts]


def unkey(stored: str) -> str:
    """The original string of a stored key."""
    if "\x01" in stored:
        # Left to right, every U+0001 starts a code word, so the first replacement never
        # matches across two of them.
        return stored.replace("\x01\x01", "\x00").replace("\x01\x02", "\x01")
    return stored


def lower_bound(after: str) -> tuple[str, bool]:
    """``(bound, inclusive)`` such that stored key ``k`` is above ``after`` exactly when
    ``k > bound`` (or ``k >= bound`` when ``inclusive``).

    ``after`` may be any string; one with a lone surrogate is replaced by the smallest
    encodable string above it: its part before the first surrogate, then U+E000 (the
    first code point above the surrogates), included. No stored key holds a surrogate,
    so none lies between the two.
    """
    if after.isascii() or encodable(after):
        return key(after), False
    cut = next(n for n, char in enumerate(after) if "\ud800" <= char <= "\udfff")
    return key(after[:cut]) + "\ue000", True
