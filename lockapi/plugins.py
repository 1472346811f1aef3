"""Backend discovery: plugins are entry points in the group ``lockapi.backends``, loaded with stevedore.

The entry point's name is the URL scheme. ``scheme+driver`` URLs (``postgresql+psycopg``) resolve to the
full scheme if a plugin registered it (``redis+sentinel``), else to the part before the ``+``.

A backend with variants registers each as ``scheme+variant`` (``hazelcast+cp``). The option
``mode=variant`` on a ``scheme://`` URL (or in the options) selects the same plugin, so URLs written as
``hazelcast://...?mode=cp`` keep working; a ``mode`` that names no registered variant is left for the
backend to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stevedore
import stevedore.exception

from lockapi.errors import ConfigError
from lockapi.spi import DEFAULT_TIMEOUT, Backend, BackendConfig, Options, redact_url

BACKENDS_GROUP = "lockapi.backends"
VARIANT_OPTION = "mode"
"""The option that may name a registered ``scheme+variant`` plugin (see the module docstring)."""
COMMANDS_GROUP = "lockapi.commands"


def installed_schemes() -> list[str]:
    """The URL schemes of every installed backend plugin (without importing them)."""
    return sorted({ep.name for ep in entry_points(group=BACKENDS_GROUP)})


@dataclass(frozen=True)
class ParsedURL:
    scheme: str
    """The scheme as written, lower-cased (e.g. ``postgresql+psycopg``)."""
    plugin: str
    """The entry-point name it resolved to (e.g. ``postgresql``)."""
    base: str
    """The URL without its query string."""
    query: dict[str, str]


def parse_url(url: object) -> ParsedURL:
    """Split ``url`` and find the plugin for its scheme; :class:`ConfigError` if there is none."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"a lock backend URL looks like scheme://..., got {redact_url(str(url))!r}; "
            f"installed schemes: {', '.join(installed_schemes()) or 'none'}"
        )
    base, _, query_string = url.partition("?")  # textually: urlunsplit would rewrite sqlite:////abs paths
    try:
        urlsplit(url)
        query = dict(parse_qsl(query_string, keep_blank_values=True, strict_parsing=bool(query_string)))
    except ValueError as exc:
        raise ConfigError(f"cannot parse URL {redact_url(url)!r}: {exc}") from None
    scheme = url.split("://", 1)[0].lower()
    schemes = installed_schemes()
    plugin = scheme if scheme in schemes else scheme.split("+", 1)[0]
    if plugin not in schemes:
        raise ConfigError(
            f"no lock backend is installed for scheme {scheme!r}; installed: {', '.join(schemes) or 'none'}. "
            "Backends are extras: pip install 'lockapi[redis]' (or sql, hazelcast, all)"
        )
    return ParsedURL(scheme, plugin, base, query)


def load_plugin(group: str, plugin: str, base: type) -> Any:
    """Load the class registered for ``plugin`` in ``group``; it must subclass ``base``."""
    try:
        driver: stevedore.DriverManager[Any] = stevedore.DriverManager(group, plugin, invoke_on_load=False)
    except stevedore.exception.NoMatches:
        raise ConfigError(
            f"no lock backend is installed for scheme {plugin!r}; installed: {', '.join(installed_schemes())}"
        ) from None
    except Exception as exc:  # a plugin that fails to import: say which extra to install
        extra = _EXTRAS.get(plugin.split("+", 1)[0])
        hint = f"install its extra: pip install 'lockapi[{extra}]'" if extra else "reinstall the plugin's package"
        raise ConfigError(f"the {plugin!r} backend is registered but cannot be loaded ({exc}); {hint}") from exc
    cls = driver.driver
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"entry point {plugin!r} in {group} is not a {base.__module__}.{base.__qualname__}")
    return cls


def backend_class(plugin: str) -> type[Backend]:
    """Load the backend class registered for ``plugin``."""
    cls: type[Backend] = load_plugin(BACKENDS_GROUP, plugin, Backend)
    return cls


_EXTRAS = {"redis": "redis", "rediss": "redis", "sqlite": "sql", "postgresql": "sql", "postgres": "sql",
           "mysql": "sql",
           "mariadb": "sql", "hazelcast": "hazelcast"}
"""The pip extra that brings each first-party backend's client library."""


def backend_config(url: str, options: dict[str, Any] | None) -> BackendConfig:
    """The :class:`BackendConfig` for ``url`` and ``options`` (core's options read, no I/O): the plugin
    is the URL's scheme, or the ``scheme+variant`` a ``mode`` option names."""
    parsed = parse_url(url)
    values = {**parsed.query, **(options or {})}
    plugin = variant_plugin(parsed.plugin, values)
    merged = Options(values, source="option")
    timeout = merged.float("timeout", DEFAULT_TIMEOUT)
    return BackendConfig(url=parsed.base, scheme=plugin, options=merged, timeout=timeout)


def open_backend(url: str, options: dict[str, Any] | None = None) -> Backend:
    """Construct the backend for ``url``. Options: the URL query string, overridden by ``options``.

    Every option is checked (by core and by the plugin) before any connection is made.
    """
    config = backend_config(url, options)
    return backend_class(config.scheme)(config)


def variant_plugin(plugin: str, options: dict[str, Any]) -> str:
    """``plugin+<mode>`` if ``options`` has ``mode`` naming a registered variant (the option is then
    consumed: removed from ``options``); else ``plugin`` unchanged."""
    variant = options.get(VARIANT_OPTION)
    if isinstance(variant, str) and variant:
        candidate = f"{plugin}+{variant.lower()}"
        if candidate in installed_schemes():
            del options[VARIANT_OPTION]
            return candidate
    return plugin


def command_plugins() -> list[Any]:
    """The ``register(subparsers)`` functions of CLI command plugins (group ``lockapi.commands``)."""
    manager: stevedore.ExtensionManager[Any] = stevedore.ExtensionManager(COMMANDS_GROUP, invoke_on_load=False,
                                         on_load_failure_callback=lambda *_: None)
    return [ext.plugin for ext in manager]
