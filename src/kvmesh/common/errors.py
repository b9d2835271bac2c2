"""The error hierarchy for transport and protocol failures.

Conventions (DEVELOPERS.md):
- an expected miss returns ``None`` and is not an error;
- misuse (bad arguments, bad config) raises ``ValueError``;
- anything that goes wrong on the wire or in a remote component raises a
  subclass of :class:`KvmeshError`, so callers can catch exactly that family
  and fall back (for a cache: recompute).
"""

from __future__ import annotations


class KvmeshError(Exception):
    """Base class of every kvmesh runtime failure."""


class TransportError(KvmeshError):
    """A remote peer could not be reached, or the connection broke mid-call."""


class BackendTimeoutError(TransportError):
    """A remote call did not finish before its deadline."""


class BackendUnavailableError(TransportError):
    """The backend is known to be down (for example its circuit breaker is open)."""


class ProtocolError(KvmeshError):
    """A peer sent bytes that do not follow the wire format."""


class VersionMismatchError(ProtocolError):
    """A peer speaks another version of a versioned wire format."""

    def __init__(self, what: str, expected: int, got: int) -> None:
        super().__init__(f"{what} version mismatch: expected {expected}, got {got}")
        self.what = what
        self.expected = expected
        self.got = got


class AuthError(ProtocolError):
    """The peer rejected our credentials, or we rejected theirs."""


class ProcessStartError(KvmeshError, RuntimeError):
    """A child server exited before it was ready, or was not ready in time.

    The message ends with the tail of the child's log.
    """


class CorruptEntryError(KvmeshError):
    """A stored value failed its header or checksum validation.

    Raised only inside the cache library; public cache APIs turn it into a
    counted miss.
    """
