"""The ``hazelcast`` entry point: :class:`HazelcastBackend` builds the backend of the chosen ``mode``."""

from __future__ import annotations

from typing import Any, ClassVar

from lockapi.spi import Backend, BackendConfig

from ._settings import MODES, Settings, read_settings


class HazelcastBackend(Backend):
    """``HazelcastBackend(config)`` returns the backend for ``mode`` (``map`` default, or ``cp``).

    Each mode is a subclass registered with ``class X(HazelcastBackend, mode="...")``.
    """

    _modes: ClassVar[dict[str, type[HazelcastBackend]]] = {}
    settings: Settings

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
