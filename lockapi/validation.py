"""Argument checks shared by every entry point. They run before any I/O, so a rejected call writes nothing."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from lockapi.errors import InvalidArgument, InvalidArgumentType, InvalidName, InvalidNameType

MAX_NAME_BYTES = 1024
"""Longest accepted name, in bytes of UTF-8."""

MAX_TTL = 10 * 365 * 24 * 3600.0
"""Longest accepted ttl (ten years): every backend can represent it."""

MAX_PERMITS = 2**31 - 1


def check_name(name: object, what: str = "lock name") -> str:
    """Return ``name`` if it is a usable name, else raise :class:`InvalidName`."""
    # The common case in three cheap tests: an ASCII str is valid UTF-8 of len() bytes.
    if type(name) is str and name.isascii() and 0 < len(name) <= MAX_NAME_BYTES and "\x00" not in name:
        return name
    if not isinstance(name, str):
        raise InvalidNameType(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise InvalidName(f"{what} must not be empty")
    if "\x00" in name:
        raise InvalidName(f"{what} must not contain NUL characters (\\x00)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidName(f"{what} is not valid Unicode text (lone surrogate at {exc.start})") from None
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"{what} is {size} bytes of UTF-8; the limit is {MAX_NAME_BYTES}")
    return name


def check_names(names: object) -> list[str]:
    """Return ``names`` as a list of distinct valid names (order kept), else raise."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise InvalidArgumentType(f"names must be an iterable of str, got {type(names).__name__}")
    return list(dict.fromkeys(check_name(n) for n in names))


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentType(f"{what} must be a number of seconds, got {type(value).__name__}")
    return float(value)


def check_ttl(ttl: object, what: str = "ttl") -> float:
    """Return ``ttl`` as float seconds if 0 < ttl <= MAX_TTL, else raise (``what`` names it)."""
    # The common case first (exact types: bool is not a number here; NaN and inf fail the comparison).
    if type(ttl) is float:
        if 0.0 < ttl <= MAX_TTL:
            return ttl
    elif type(ttl) is int and 0 < ttl <= MAX_TTL:
        return float(ttl)
    value = _number(ttl, what)
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds > 0, got {ttl!r}")
    if value > MAX_TTL:
        raise InvalidArgument(f"{what} must be at most {MAX_TTL:.0f} seconds (10 years), got {ttl!r}")
    return value


def check_wait(wait: object) -> float | None:
    """Return ``wait`` as float seconds, or None for "forever" (``None`` or ``math.inf``)."""
    if wait is None:
        return None
    if type(wait) is float and 0.0 <= wait < math.inf:  # the common case (NaN fails the comparison)
        return wait
    value = _number(wait, "wait")
    if math.isnan(value) or value < 0:
        raise InvalidArgument(f"wait must be None (forever) or a number of seconds >= 0, got {wait!r}")
    return None if math.isinf(value) else value


def check_permits(permits: object) -> int:
    """Return ``permits`` if it is an int in 1..MAX_PERMITS, else raise."""
    if isinstance(permits, bool) or not isinstance(permits, int):
        raise InvalidArgumentType(f"permits must be an int, got {type(permits).__name__}")
    if not 1 <= permits <= MAX_PERMITS:
        raise InvalidArgument(f"permits must be between 1 and {MAX_PERMITS}, got {permits}")
    return permits


def check_at_most(at_most: float | None, ttl: float, auto_renew: bool) -> float | None:
    """``at_most`` as float seconds (None: no cap); it needs ``auto_renew`` and must be >= ``ttl``."""
    if at_most is None:
        return None
    cap = check_ttl(at_most, "at_most")
    if not auto_renew:
        raise InvalidArgument("at_most caps auto-renewal: pass auto_renew=True (or a ttl of at_most instead)")
    if cap < ttl:
        raise InvalidArgument(f"at_most ({cap:g} s) must be at least the ttl ({ttl:g} s)")
    return cap


C = TypeVar("C")


def check_callback(on_lost: C) -> C:
    """``on_lost`` if it is callable or None, else :class:`InvalidArgumentType`."""
    if on_lost is not None and not callable(on_lost):
        raise InvalidArgumentType(f"on_lost must be callable or None, got {type(on_lost).__name__}")
    return on_lost
