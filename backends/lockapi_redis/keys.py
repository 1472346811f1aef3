"""Key layout: every key of one name shares a hash tag, so one script touches one cluster slot.

A name ``N`` becomes the hash tag ``{E}``, where ``E`` is ``N`` with ``\\`` written as ``\\\\`` and
``}`` written as ``\\]``. Redis hashes the text between the first ``{`` of a key and the first ``}``
after it; the prefix contains no brace and ``E`` contains no ``}``, so the tag is exactly ``E`` (a ``{``
inside ``E`` is harmless) and the whole name decides the slot. The escaping is reversible, which is how
``iter_done`` recovers names from keys.

Every key of a name is ``P:{E}`` (prefix ``P``, escaped name ``E``) plus the suffix of its ROLE, and
:data:`ROLES` is the one table of roles: the scripts name the keys they touch by role
(:mod:`lockapi_redis.scripts`), and :meth:`Keys.of` turns roles into key names. The layout is part of
the stored data: changing a suffix orphans every existing lock, counter and marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockapi.spi import ConfigError

ROLES: dict[str, tuple[str, str]] = {
    # role: (suffix, what the key holds and how long it lives)
    "lock": (":lock", 'string "<token>:<holder>" with PX ttl (deleted on release, expires)'),
    "fence": (":fence", "string counter of the lock's fencing tokens (expires fence_ttl after the last grant)"),
    "queue": (":queue", "list of fair waiters, FIFO (empty: deleted; PEXPIREAT the last waiter's deadline)"),
    "qtime": (":qtime", "zset waiter -> queue deadline, ms by the server clock (same)"),
    "channel": (":ch", "pub/sub channel: a lease on the name was released"),
    "sem": (":sem", 'zset "<token>:<holder>" -> expiry in ms (empty: deleted; PEXPIREAT the last expiry)'),
    "sfence": (":sfence", "string counter of the semaphore's tokens (as fence)"),
    "schannel": (":sch", "pub/sub channel: a permit of the name was returned"),
    "done": (":done", 'done marker "1" with PX ttl'),
}
"""Key role -> (suffix after ``P:{E}``, content and lifetime). docs/backends/redis.md has the same table."""

SUFFIX = {role: suffix for role, (suffix, _) in ROLES.items()}
DONE_SUFFIX = SUFFIX["done"]


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


def suffixes(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The key suffixes of ``roles``; ValueError names a role missing from :data:`ROLES`."""
    unknown = [role for role in roles if role not in SUFFIX]
    if unknown:
        raise ValueError(f"unknown key roles {unknown}; known: {sorted(SUFFIX)}")
    return tuple(SUFFIX[role] for role in roles)


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
        """``P:{E}``: every key of ``name`` is this plus the suffix of its role."""
        return f"{self.prefix}:{{{escape(name)}}}"

    def of(self, name: str, suffixes: tuple[str, ...]) -> list[str]:
        """The keys of ``name`` for these suffixes (``suffixes(roles)``), in order."""
        base = self.base(name)
        return [base + suffix for suffix in suffixes]

    def key(self, name: str, role: str) -> str:
        """The key of ``name`` in ``role`` (a key of :data:`ROLES`)."""
        return self.base(name) + SUFFIX[role]

    def done(self, name: str) -> str:
        return self.base(name) + DONE_SUFFIX

    def channel(self, name: str, *, semaphore: bool = False) -> str:
        """The pub/sub channel announcing that ``name``'s lock (or a permit) became free."""
        return self.base(name) + (SUFFIX["schannel"] if semaphore else SUFFIX["channel"])

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
