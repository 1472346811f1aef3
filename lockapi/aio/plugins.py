"""Async backend discovery: native async backends are entry points in ``lockapi.async_backends``, under
the scheme of their sync backend; a scheme without one is served by its sync backend, adapted."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from lockapi.aio.spi import AsyncBackend, SyncBackendAdapter
from lockapi.plugins import backend_class, backend_config, load_plugin

ASYNC_BACKENDS_GROUP = "lockapi.async_backends"


def async_backend_class(plugin: str) -> type[AsyncBackend] | None:
    """The native async backend registered for ``plugin``, or None."""
    if not any(ep.name == plugin for ep in entry_points(group=ASYNC_BACKENDS_GROUP)):
        return None
    cls: type[AsyncBackend] = load_plugin(ASYNC_BACKENDS_GROUP, plugin, AsyncBackend)
    return cls


def open_async_backend(url: str, options: dict[str, Any] | None = None) -> AsyncBackend:
    """Construct the async backend for ``url``: the plugin's native one, else its sync backend adapted
    (:class:`lockapi.aio.spi.SyncBackendAdapter`). Options are checked before any connection is made."""
    config = backend_config(url, options)
    native = async_backend_class(config.scheme)
    if native is not None:
        return native(config)
    return SyncBackendAdapter(config, backend_class(config.scheme))
