"""Task-store conformance checks: leader leases (``lead``, ``resign``, ``leader_of``)."""

from __future__ import annotations
