"""Lock families: the bounded label every metric carries instead of the raw lock name.

A raw name (``invoice:42``) would make one time series per invoice. The family groups names: by
default the part before the first unescaped ``:`` (``invoice``), which for job locks is the job name
(the job API escapes ``:`` and ``\\`` in job names, see :mod:`lockapi.jobs`); a name without ``:`` is
its own family. Applications with other naming schemes pass their own function.

Whatever the function, at most ``limit`` distinct families are reported; names of any further family
are reported as :data:`OTHER`, with one warning in the log, so a bad function cannot explode the
number of series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lockapi.errors import InvalidArgument, InvalidArgumentType

log = logging.getLogger(__name__)

OTHER = "_other"
"""The family of every name past the ``limit`` (or whose family function failed)."""
DEFAULT_LIMIT = 200
"""Most distinct families reported per instrumentation."""
_CACHE = 4096
"""Names whose family is remembered (the cache is emptied when full: names are unbounded)."""

FamilyFunction = Callable[[str], str]


def lock_family(name: str) -> str:
    """The default family of ``name``: the part before its first unescaped ``:``, unescaped
    (``invoice:42`` -> ``invoice``; the job lock ``a\\:b:7`` -> ``a:b``); else ``name`` itself."""
    colon = name.find(":")
    if colon < 0:
        return name
    if "\\" not in name[:colon]:
        return name[:colon]
    out: list[str] = []
    escaped = False
    for char in name:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            break
        else:
            out.append(char)
    return "".join(out)


class Families:
    """``family(name)`` through ``function``, bounded to ``limit`` distinct values. Thread-safe."""

    def __init__(self, function: FamilyFunction | None = None, limit: int = DEFAULT_LIMIT) -> None:
        if function is not None and not callable(function):
            raise InvalidArgumentType(f"name_label must be a function name -> str, got {type(function).__name__}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"the family limit must be an int >= 1, got {limit!r}")
        self._function = function or lock_family
        self._limit = limit
        self._known: set[str] = set()
        self.cache: dict[str, str] = {}
        """name -> family of the names seen lately (a hot path may look here first, then call)."""
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, name: str) -> str:
        family = self.cache.get(name)
        if family is not None:
            return family
        try:
            family = self._function(name)
        except Exception:
            log.exception("lockapi: the lock family function failed for a name; reported as %r", OTHER,
                          extra={"lockapi_event": "family_failed"})
            family = OTHER
        if not isinstance(family, str) or not family:
            family = OTHER
        with self._lock:
            if family not in self._known:
                if len(self._known) >= self._limit:
                    self._overflow(family)
                    family = OTHER
                else:
                    self._known.add(family)
            if len(self.cache) >= _CACHE:
                self.cache.clear()
            self.cache[name] = family
        return family

    def _overflow(self, family: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("lockapi: more than %d lock families; further ones (e.g. %r) are reported as %r. "
                        "Pass name_label= a function that groups names into fewer families",
                        self._limit, family, OTHER,
                        extra={"lockapi_event": "family_limit", "lockapi_limit": self._limit})
