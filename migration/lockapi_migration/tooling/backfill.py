"""``lockapi migrate backfill``: copy H's live done markers (with their remaining ttl) to R, and move
R's fencing counters of those names above H's.

Markers written while the fleet is in shadow or later already go to both backends; backfill covers the
ones written before. Run it when every live node is in shadow or later (it refuses otherwise), then it
records the ``backfill_done`` milestone (its START time: markers written after it are in both anyway).
Fencing counters are probed per name on H (the live lease's token, or one short grant with a fresh
holder id, released at once) and R's counter is floored to it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from lockapi.spi import Backend, Capability, ConfigError, LockError
from lockapi_migration.fleet import live_nodes
from lockapi_migration.phases import Phase
from lockapi_migration.records.store import BACKFILL_DONE, RecordStore

PROBE_TTL = 5.0


@dataclass
class BackfillResult:
    """What one backfill did: markers copied, fencing counters moved, counters it could not probe."""

    markers: int = 0
    fences: int = 0
    busy: int = 0
    """Names whose counter could not be probed (held, and H cannot inspect the token)."""


def probe_fence(source: Backend, name: str) -> int | None:
    """H's latest token for ``name``: the live lease's, or a fresh grant's (released at once)."""
    info = source.inspect(name)
    if info is not None:
        return info.token
    holder = f"lockapi-migrate-backfill:{secrets.token_hex(8)}"
    attempt = source.try_acquire(name, holder, PROBE_TTL)
    if attempt.token is None:
        return None
    source.release(name, holder, attempt.token)
    return attempt.token


def backfill(source: Backend, target: Backend, store: RecordStore | None, *, fences: bool = True) -> BackfillResult:
    """Copy markers (and fences) from ``source`` (H) to ``target`` (R); record the milestone in ``store``."""
    if Capability.ITER_DONE not in source.capabilities:
        raise ConfigError(f"{source.config.redacted_url} cannot list its done markers (no ITER_DONE): wait "
                          "done_ttl after shadow began instead of backfilling")
    if store is not None:
        early = [n.node for n in live_nodes(store) if Phase.parse(n.phase) is Phase.OFF]
        if early:
            raise ConfigError(f"nodes still in phase off write markers to H only: {', '.join(early)}; "
                              "move every node to shadow before the backfill")
    fences = fences and Capability.ADMIN in target.capabilities
    started = time.time()
    result = BackfillResult()
    for name, left in list(source.iter_done()):
        if left <= 0:
            continue
        target.mark_done(name, left)
        result.markers += 1
        if fences:
            try:
                token = probe_fence(source, name)
            except LockError:
                token = None
            if token is None:
                result.busy += 1
            else:
                target.set_fence_floor(name, token)
                result.fences += 1
    if store is not None:
        store.set_milestone(BACKFILL_DONE, started)
    return result
