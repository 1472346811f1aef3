"""The one place where hazelcast-python-client failures become lockapi errors.

The members' exceptions arrive with the whole Java stack trace in their message. A lockapi error says
in ONE line what failed and what to do, with the first line of the member's message at most; the
client's exception is chained as ``__cause__`` for the full story (logs, debuggers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hazelcast.errors import HazelcastError

from lockapi.spi import BackendUnavailable, LockError, UnsupportedFeature

__all__ = ["SUMMARY_LENGTH", "no_answer", "summary", "translated"]

SUMMARY_LENGTH = 160
"""At most this many characters of the member's message go into a lockapi error."""

_NO_CP = ("licensed feature", "Enterprise feature", "CP Subsystem is not enabled")
"""How members without a usable CP subsystem word their refusal (5.5+ community, CP off)."""
_SERVER_PREFIX = "Exception from server: "
_ADVICE = "check that the cluster is running and reachable (or raise the timeout option)"


def summary(exc: BaseException) -> str:
    """``ExceptionType: first line of its message`` (no stack trace), at most SUMMARY_LENGTH long."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    first = first.removeprefix(_SERVER_PREFIX)
    if len(first) > SUMMARY_LENGTH:
        first = first[:SUMMARY_LENGTH - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def no_answer(where: str, what: str, timeout: float) -> BackendUnavailable:
    """The error for an operation that got no answer within ``timeout`` seconds."""
    return BackendUnavailable(f"{where}: {what}: no answer within {timeout:g}s; {_ADVICE}")


@contextlib.contextmanager
def translated(where: str, what: str) -> Iterator[None]:
    """Raise the client's errors inside the block as lockapi errors (lockapi errors pass through).

    ``where`` names the cluster (already redacted: never a password); ``what`` the operation.
    """
    try:
        yield
    except LockError:
        raise
    except HazelcastError as exc:
        if any(sign in str(exc) for sign in _NO_CP):
            raise UnsupportedFeature(
                f"{where}: the cluster has no CP subsystem (community 5.5+ removed it); use hazelcast:// "
                "(map mode) or a cluster with the CP subsystem"
            ) from exc
        raise BackendUnavailable(f"{where}: {what} failed ({summary(exc)}); {_ADVICE}") from exc
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(f"{where}: {what} failed ({summary(exc)}); {_ADVICE}") from exc
