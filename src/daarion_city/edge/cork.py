"""One write per small answer: a response's head waits for its body (a cork).

uvicorn writes an HTTP answer's status line and headers when the app sends
``http.response.start``, and its body when the app sends ``http.response.body``: two write
syscalls per answer, although every answer the service builds in memory sends both in the same
event-loop turn. In the many-rooms profile (bench/RESULTS.md, issue 26) those writes were a
twentieth of a post's cost. Each request's cycle writes through a :class:`HeadCork` instead:
the head is held, and goes out with the first body write after it, or by itself at the end of
the loop turn (a streamed answer, ``GET /city/feed/stream`` say, whose first chunk comes later,
still gets its head at once). ``100 Continue`` (written before the answer starts) and everything
after the head go straight through.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class _Cycle(Protocol):
    response_started: bool


class HeadCork(asyncio.Transport):
    """The transport of one request's response cycle (uvicorn's ``RequestResponseCycle``
    calls ``write``, ``close`` and ``is_closing``)."""

    __slots__ = ("_cycle", "_head_done", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: _Cycle) -> None:
        super().__init__()
        self._transport = transport
        self._cycle = cycle
        self._head_done = False
        self._held: bytes | None = None  # the head, until its body or the end of the turn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(b"".join((held, data)))
        elif not self._head_done and self._cycle.response_started:
            self._head_done = True  # the first write once the answer has started: its head
            self._held = bytes(data)
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)
