"""Redis helpers shared by the Redis-backed stores: the client, text decoding and error
translation."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from daarion_city.core.errors import Unavailable

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def text(value: object) -> str:
    """Redis answers are bytes (or str, per client options)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def unavailable_when_down(
    fn: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A Redis that does not answer becomes a typed 503 ``unavailable``, never a 500 or a hang
    (the client's socket timeouts bound every call)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis call %s failed: %r (%r)", fn.__qualname__, exc, exc.__cause__)
            raise Unavailable("redis is unavailable") from exc

    return wrapper


def blocking_client(url: str, *, pool_size: int, wait: float, **options: Any) -> aioredis.Redis:
    """A client on a blocking pool: more concurrent calls than connections wait for one (up to
    ``wait``) instead of failing at once with "Too many connections"; ``wait`` also bounds a
    connect and a reply."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=wait,
        socket_timeout=wait,
        socket_connect_timeout=wait,
        **options,
    )
    return aioredis.Redis(connection_pool=pool)


@asynccontextmanager
async def open_redis(
    url: str | None, *, pool_size: int, wait: float
) -> AsyncIterator[aioredis.Redis | None]:
    """The client the Redis-backed stores share (None without a URL, ``REDIS_URL``), closed on
    exit. (The pub/sub bus keeps a pool of its own.)"""
    if not url:
        yield None
        return
    client = blocking_client(url, pool_size=pool_size, wait=wait)
    try:
        yield client
    finally:
        await client.aclose()
