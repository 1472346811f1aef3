"""The conformance suite on memory://."""

from __future__ import annotations

import itertools

import pytest

from lockapi.testing import LockConformance

_stores = itertools.count()


class TestMemoryConformance(LockConformance):
    short_ttl = 0.5
    margin = 1.0

    @pytest.fixture
    def lock_url(self) -> str:
        return f"memory://conformance-{next(_stores)}"
