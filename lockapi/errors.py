"""The exceptions lockapi raises. Every one is a :class:`LockError`.

Applications catch these, never a backend client's own exceptions: backends translate theirs.
"""

from __future__ import annotations


class LockError(Exception):
    """Base class of every error lockapi raises."""


class LockTimeout(LockError):
    """The lock or permit was not granted within the requested ``wait``."""


class LeaseLost(LockError):
    """A lease expired or was taken over before its holder released it.

    Raised by a lease's context manager at exit when the backend no longer recognised the holder.
    Work done under the lease may have overlapped with another holder: fence the protected resource.
    """


class BackendUnavailable(LockError):
    """The backend could not be reached, or did not answer within the configured ``timeout``."""


class ConfigError(LockError):
    """A connection URL, option or configuration file is wrong; the message says what to change."""


class UnsupportedFeature(LockError):
    """The configured backend cannot provide the requested feature (see ``manager.capabilities``)."""


class InvalidArgument(LockError, ValueError):
    """An argument is out of range (ttl, wait, permits, ...). Raised before any I/O; nothing was written."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument has the wrong type. Raised before any I/O; nothing was written."""


class InvalidName(InvalidArgument):
    """A lock or semaphore name is empty, too long, or not encodable. Raised before any I/O."""


class InvalidNameType(InvalidName, TypeError):
    """A lock or semaphore name is not a ``str``. Raised before any I/O."""
