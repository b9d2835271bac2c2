"""``redis://`` and ``rediss://``: Redis >= 6 or Valkey as the L2, on redis-py's asyncio client.

URL forms (redis-py's own syntax)::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem]

Keys are ``"kvmesh:" + key_text(storage_key)`` (``kvmesh:v1:<32 hex>``), so a
shared Redis can hold other data and an operator can ``SCAN kvmesh:*``.
Values are serde frames, sent as memoryviews (redis-py writes large values to
the socket without joining them into one string).

redis-py's own retries are turned off: the cache wraps every call in a
deadline and a circuit breaker, and a retry loop inside the deadline would
only hide the failure. Every redis-py exception becomes a
:mod:`kvmesh.common.errors` type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kvmesh.common.errors import AuthError, BackendTimeoutError, TransportError
from kvmesh.common.hashing import key_text
from kvmesh.kvcache.l2.base import Buffer, L2Backend

KEY_PREFIX = "kvmesh:"
"""Namespace of every key kvmesh writes."""

T = TypeVar("T")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and export)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def redis_key(key: bytes) -> bytes:
    """The Redis key of a storage key."""
    return (KEY_PREFIX + key_text(key)).encode("ascii")


async def _mapped(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` and translate redis-py's exceptions into kvmesh's."""
    try:
        return await call()
    except rex.AuthenticationError as exc:
        raise AuthError(f"redis rejected the credentials: {exc}") from exc
    except rex.TimeoutError as exc:
        raise BackendTimeoutError(f"redis timed out: {exc}") from exc
    except (rex.RedisError, OSError) as exc:  # ConnectionError, ResponseError, ...
        raise TransportError(f"redis call failed: {type(exc).__name__}: {exc}") from exc


class RedisL2Backend(L2Backend):
    """L2 on a Redis or Valkey server."""

    def __init__(self, client: aioredis.Redis, url: str) -> None:
        self._client = client
        self.url = redact_url(url)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, connect_timeout_s: float = 2.0) -> RedisL2Backend:
        """Create a client for ``url`` (no connection is made until the first call)."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis URL: {redact_url(url)!r}")
        try:
            client = aioredis.Redis.from_url(
                url,
                decode_responses=False,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad redis URL {redact_url(url)!r}: {exc}") from exc
        return cls(client, url)

    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        if not keys:
            await _mapped(self._client.ping)
            return 0

        async def run() -> list[int]:
            # One round trip: a non-transactional pipeline of EXISTS.
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(redis_key(key))
                return await pipe.execute()

        found = await _mapped(run)
        for i, present in enumerate(found):
            if not present:
                return i
        return len(keys)

    async def get_many(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        if not keys:
            return []
        # decode_responses=False: every value is bytes or None, never str.
        values = await _mapped(lambda: self._client.mget([redis_key(k) for k in keys]))
        return values  # type: ignore[return-value]

    async def put_many(self, items: Sequence[tuple[bytes, Buffer]]) -> None:
        if not items:
            return

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    # NX: entries are immutable, an existing key is a success.
                    pipe.set(redis_key(key), memoryview(value), nx=True)
                await pipe.execute()

        await _mapped(run)

    async def delete_many(self, keys: Sequence[bytes]) -> None:
        if keys:
            await _mapped(lambda: self._client.delete(*[redis_key(k) for k in keys]))

    async def ping(self) -> None:
        await _mapped(self._client.ping)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.aclose()
        except (rex.RedisError, OSError):
            pass  # closing a broken connection: nothing left to release
