"""What both Hazelcast modes share: settings read from the URL, and done markers in an IMap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

from lockapi.spi import Backend, BackendConfig

from .done import DoneMarkers
from .settings import Settings, read_settings

__all__ = ["HazelcastBackend"]


class HazelcastBackend(Backend):
    """The base of :class:`~lockapi_hazelcast.MapBackend` (entry point ``hazelcast``) and
    :class:`~lockapi_hazelcast.CPBackend` (``hazelcast+cp``); not a backend by itself."""

    mode: ClassVar[str]
    """``map`` or ``cp``: what the ``mode`` option may say for this class (it selects the class)."""
    settings: Settings
    _done: DoneMarkers
    """Done markers live in the IMap ``P.done`` in every mode; each mode's ``__init__`` sets this."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = read_settings(config, self.mode)
        self.where = f"hazelcast {config.redacted_url} (mode={self.mode})"

    # -- done markers (the same IMap in every mode) --------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._done.mark(name, ttl)

    def done(self, names: Sequence[str]) -> set[str]:
        return self._done.live(names)

    def iter_done(self) -> Iterator[tuple[str, float]]:
        return self._done.iterate()
