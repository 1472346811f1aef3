"""What both Hazelcast modes share (blocking API): settings read from the URL, and done markers in an IMap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from lockapi.spi import Backend, BackendConfig

from . import done
from .client import ClientHolder
from .settings import Settings, describe, read_settings

__all__ = ["HazelcastBackend"]


class HazelcastBackend(Backend):
    """The base of :class:`~lockapi_hazelcast.MapBackend` (entry point ``hazelcast``) and
    :class:`~lockapi_hazelcast.CPBackend` (``hazelcast+cp``); not a backend by itself."""

    mode: ClassVar[str]
    """``map`` or ``cp``: what the ``mode`` option may say for this class (it selects the class)."""
    settings: Settings
    _holder: ClientHolder
    """Runs the plans of :mod:`.protocol`; each mode's ``__init__`` sets it (with the IMap ``done``)."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = read_settings(config, self.mode)
        self.where = describe(config, self.mode)

    # -- done markers (the IMap P.done in every mode) ------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._holder.run(done.mark(name, ttl))

    def done(self, names: Sequence[str]) -> set[str]:
        return self._holder.run(done.live(names))

    def iter_done(self) -> Iterator[tuple[str, float]]:
        names = self._holder.run(done.listed())
        for start in range(0, len(names), done.VIEW_BATCH):
            yield from self._holder.run(done.remaining(names[start:start + done.VIEW_BATCH]))
