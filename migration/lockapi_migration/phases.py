"""Migration phases, the backends each phase must hold, and the rule for which phases may coexist.

A(p) is the set of backends a node in phase ``p`` must hold before it enters a critical section. Two nodes
exclude each other only if their A sets intersect, so a fleet may only ever span two ADJACENT phases
(adjacent phases share a required backend: off/shadow/dual share H, dual/cutover/done share R).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from lockapi.spi import ConfigError

H = "h"
"""Label of the source backend (the one in use before the migration)."""
R = "r"
"""Label of the target backend."""


class Phase(enum.Enum):
    """A migration phase, in rollout order; :attr:`required` is the set of backends a lease needs."""

    OFF = "off"
    SHADOW = "shadow"
    DUAL = "dual"
    CUTOVER = "cutover"
    DONE = "done"

    @property
    def index(self) -> int:
        return ORDER.index(self)

    @property
    def required(self) -> frozenset[str]:
        """A(p): the labels of the backends a lease needs in this phase."""
        return REQUIRED[self]

    @property
    def primary(self) -> str:
        """The backend whose decision the application sees (R from dual on)."""
        return H if self.index < Phase.DUAL.index else R

    @property
    def shadow(self) -> str | None:
        """The backend operations are mirrored to in the background (shadow: R, cutover: H)."""
        return {Phase.SHADOW: R, Phase.CUTOVER: H}.get(self)

    @property
    def opens(self) -> frozenset[str]:
        """The backends a node in this phase connects to."""
        return self.required | ({self.shadow} if self.shadow else set())

    def next(self) -> Phase | None:
        return ORDER[self.index + 1] if self.index + 1 < len(ORDER) else None

    @classmethod
    def parse(cls, value: object) -> Phase:
        if isinstance(value, Phase):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(
                f"migration phase must be one of {', '.join(p.value for p in ORDER)}; got {value!r}"
            ) from None


ORDER = list(Phase)
REQUIRED: dict[Phase, frozenset[str]] = {
    Phase.OFF: frozenset({H}),
    Phase.SHADOW: frozenset({H}),
    Phase.DUAL: frozenset({H, R}),
    Phase.CUTOVER: frozenset({R}),
    Phase.DONE: frozenset({R}),
}


def adjacent(a: Phase, b: Phase) -> bool:
    """True if nodes in ``a`` and ``b`` may run at the same time (equal or neighbouring phases)."""
    return abs(a.index - b.index) <= 1


def exclusive(a: Phase, b: Phase) -> bool:
    """True if a node in ``a`` and a node in ``b`` exclude each other (their A sets intersect)."""
    return bool(a.required & b.required)


def blockers(phase: Phase, live: Mapping[str, Phase]) -> dict[str, Phase]:
    """The live nodes (node id -> phase) that forbid starting a node in ``phase``."""
    return {node: other for node, other in live.items() if not adjacent(phase, other)}


def census(phases: Iterable[Phase]) -> dict[Phase, int]:
    """How many nodes are in each phase, in phase order (phases with no node omitted)."""
    counts: dict[Phase, int] = {}
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    return {p: counts[p] for p in ORDER if p in counts}
