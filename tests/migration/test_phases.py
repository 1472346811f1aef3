"""The phase table and the coexistence rule."""

from __future__ import annotations

import itertools

import pytest
from lockapi_migration.phases import ORDER, H, Phase, R, adjacent, blockers, exclusive

from lockapi.spi import ConfigError


def test_required_sets_follow_the_spec() -> None:
    assert [p.required for p in ORDER] == [{H}, {H}, {H, R}, {R}, {R}]
    assert [p.primary for p in ORDER] == [H, H, R, R, R]
    assert [p.shadow for p in ORDER] == [None, R, None, H, None]


def test_adjacent_phases_always_exclude_each_other() -> None:
    for a, b in itertools.product(ORDER, ORDER):
        if adjacent(a, b):
            assert exclusive(a, b), (a, b)
    # ...and skipping a phase can put two nodes on disjoint backends.
    assert not exclusive(Phase.SHADOW, Phase.CUTOVER)
    assert not exclusive(Phase.OFF, Phase.DONE)


def test_blockers_name_the_non_adjacent_nodes() -> None:
    live = {"a": Phase.OFF, "b": Phase.SHADOW, "c": Phase.DUAL}
    assert blockers(Phase.SHADOW, live) == {}
    assert blockers(Phase.DUAL, live) == {"a": Phase.OFF}
    assert blockers(Phase.CUTOVER, live) == {"a": Phase.OFF, "b": Phase.SHADOW}


def test_parse_rejects_unknown_phases() -> None:
    assert Phase.parse(" Dual ") is Phase.DUAL
    with pytest.raises(ConfigError, match="off, shadow, dual, cutover, done"):
        Phase.parse("half")
