"""CP object names (cp mode): one distinct FencedLock / ISemaphore / AtomicLong per lock name.

The CP subsystem does not keep an object name as given: the client strips whitespace from both ends
(Python ``str.strip``; the members trim with Java's ``String.trim``, every character up to U+0020), and
``@`` separates a CP group name. So a lock name is escaped before it becomes ``<prefix>/<name>``:

* ``%`` and ``@`` anywhere -> ``%25`` and ``%40`` (as since the first release);
* the whitespace at the END of the object name (Python whitespace and every character up to U+0020)
  -> ``%XX`` per UTF-8 byte, so nothing is left to strip (the prefix keeps the start stripped-proof).

Every other character is kept, so every name without trailing whitespace maps to the same object as
before this escaping existed. Escaping is reversible (percent-decode), hence two different names never
share an object.
"""

from __future__ import annotations

__all__ = ["object_name"]


def _strippable(char: str) -> bool:
    return char.isspace() or char <= " "


def _percent(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))


def object_name(prefix: str, name: str, suffix: str = "") -> str:
    """The CP object for lock ``name`` (``suffix`` e.g. ``#3``, ``#fence`` for semaphores)."""
    text = f"{prefix}/{name.replace('%', '%25').replace('@', '%40')}{suffix}"
    kept = len(text)
    while kept and _strippable(text[kept - 1]):
        kept -= 1
    return text[:kept] + _percent(text[kept:])
