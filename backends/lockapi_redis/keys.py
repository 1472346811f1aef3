"""Key layout: every key of one name shares a hash tag, so one script touches one cluster slot.

A name ``N`` becomes the hash tag ``{E}``, where ``E`` is ``N`` with ``\\`` written as ``\\\\`` and
``}`` written as ``\\]``. Redis hashes the text between the first ``{`` of a key and the first ``}``
after it; the prefix contains no brace and ``E`` contains no ``}``, so the tag is exactly ``E`` (a ``{``
inside ``E`` is harmless) and the whole name decides the slot. The escaping is reversible, which is how
``iter_done`` recovers names from keys.

Keys for prefix ``P`` and name ``N`` (``E`` = escaped ``N``)::

    P:{E}:lock      string "<token>:<holder>" with PX ttl          (deleted on release, expires)
    P:{E}:fence     string counter of the lock's fencing tokens    (expires fence_ttl after the last grant)
    P:{E}:queue     list of fair waiters, FIFO                     (empty -> deleted, PEXPIRE)
    P:{E}:qtime     zset waiter -> queue deadline (ms, server clock) (same)
    P:{E}:ch        pub/sub channel: a lease on N was released
    P:{E}:sem       zset "<token>:<holder>" -> expiry (ms)         (empty -> deleted, PEXPIREAT)
    P:{E}:sfence    string counter of the semaphore's tokens       (same)
    P:{E}:sch       pub/sub channel: a permit of N was returned
    P:{E}:done      done marker "1" with PX ttl
"""

from __future__ import annotations

from dataclasses import dataclass

from lockapi.spi import ConfigError

DONE_SUFFIX = ":done"


def escape(name: str) -> str:
    """The hash-tag text of ``name`` (contains no ``}``)."""
    if "\\" in name:
        name = name.replace("\\", "\\\\")
    if "}" in name:
        name = name.replace("}", "\\]")
    return name


def unescape(tag: str) -> str:
    """Inverse of :func:`escape`."""
    if "\\" not in tag:
        return tag
    out: list[str] = []
    chars = iter(tag)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append("}" if nxt == "]" else nxt)
        else:
            out.append(char)
    return "".join(out)


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ConfigError(
                f"option 'prefix' must be non-empty and contain no '{{' or '}}': {self.prefix!r}")

    def base(self, name: str) -> str:
        """``P:{E}`` — append ``:lock``, ``:fence``, ... to get a key."""
        return f"{self.prefix}:{{{escape(name)}}}"

    def done(self, name: str) -> str:
        return self.base(name) + DONE_SUFFIX

    def lock_channel(self, name: str) -> str:
        return self.base(name) + ":ch"

    def semaphore_channel(self, name: str) -> str:
        return self.base(name) + ":sch"

    def done_pattern(self) -> str:
        """SCAN MATCH pattern of every done marker under this prefix."""
        return glob_escape(self.prefix + ":{") + "*" + glob_escape("}" + DONE_SUFFIX)

    def name_of_done(self, key: str) -> str | None:
        """The name whose done marker is ``key``, or None if ``key`` is not one."""
        head = self.prefix + ":{"
        tail = "}" + DONE_SUFFIX
        if not (key.startswith(head) and key.endswith(tail)) or len(key) < len(head) + len(tail) + 1:
            return None
        tag = key[len(head):-len(tail)]
        return None if "}" in tag else unescape(tag)
