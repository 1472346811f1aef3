"""The ``hazelcast`` entry point: :class:`HazelcastBackend` builds the backend of the chosen ``mode``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from lockapi.spi import Backend, BackendConfig

from ._done import DoneMarkers
from ._settings import MODES, Settings, read_settings


class HazelcastBackend(Backend):
    """``HazelcastBackend(config)`` returns the backend for ``mode`` (``map`` default, or ``cp``).

    Each mode is a subclass registered with ``class X(HazelcastBackend, mode="...")``.
    """

    _modes: ClassVar[dict[str, type[HazelcastBackend]]] = {}
    settings: Settings
    _done: DoneMarkers
    """Done markers live in the IMap ``P.done`` in every mode; each mode's ``__init__`` sets this."""

    def __init_subclass__(cls, *, mode: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._modes[mode] = cls

    def __new__(cls, config: BackendConfig) -> HazelcastBackend:
        if cls is HazelcastBackend:
            mode = config.options.str("mode", "map", choices=MODES) or "map"
            cls = cls._modes[mode]
        return super().__new__(cls)

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = read_settings(config)
        self.where = f"hazelcast {config.redacted_url} (mode={self.settings.mode})"

    # -- done markers (the same IMap in every mode) --------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._done.mark(name, ttl)

    def done(self, names: Sequence[str]) -> set[str]:
        return self._done.live(names)

    def iter_done(self) -> Iterator[tuple[str, float]]:
        return self._done.iterate()
