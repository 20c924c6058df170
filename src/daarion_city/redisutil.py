"""Redis helpers shared by the Redis-backed stores: text decoding and error translation."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import RedisError

from daarion_city.errors import Unavailable

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
