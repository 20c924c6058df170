"""A room channel's fast list: the transports of its sockets, written to without asking each
socket's state.

The per-socket path of a room message (``Connection.send_run``) checks, for every socket, that
it is live, caught up, has nothing queued or in flight and is not closing, and that its
protocol has not sent a close frame and its transport is writable: five objects per socket, and
for a room of 10,000 spread over a large heap, a quarter of a fan-out pass went to reading them
(bench/RESULTS.md). Once ``FAST_AFTER`` passes in a row found every socket of a channel in that
direct state, the channel keeps the list of their transports, and the next passes write to that
list alone, checking only each transport's own buffer and closing state (:func:`write_all`).

The list holds its sockets while nothing can have taken them out of the direct state. A socket
that could be is taken out of the list alone and served the per-socket way (which knows what
to do with it) while the list holds for the others (:meth:`FastList.eject`): one that queues a
frame (``Connection.send``: flow control, a frame that could not go straight out) or closes
(``Connection.stop``), and one whose transport has bytes still buffered or is closing when a
pass comes to it. A socket joining the channel is served per socket too (it is catching up), a
socket leaving is taken out; a protocol sending a close frame (``realtime/transport.CloseWatch``)
drops the whole list (:meth:`FastList.drop`), and so do more than a third of the sockets
outside it: two clean passes later it is built again with everyone. The sockets of the list
are all written the messages up to ``seq``; their own ``last_seq`` is brought up to it as they
leave it.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

from daarion_city.realtime.connection import Connection
from daarion_city.realtime.transport import CloseWatch, DirectWriter

FAST_AFTER = 2  # passes in a row with every socket direct before the list is kept


def join(conn: Connection, fast: FastList) -> Any | None:
    """``conn`` into the list ``fast``: its transport, or None when its protocol cannot tell of
    its close frame."""
    proto = conn.direct.proto if conn.direct is not None else None
    if not isinstance(proto, CloseWatch) or proto.close_sent:
        return None
    conn.fast_out = fast.eject
    proto.on_close_sent = fast.drop
    return cast(Any, proto).transport  # the server's protocol (edge/protocol.py)


def leave(conn: Connection, seq: int) -> None:
    """``conn`` out of its fast list, which wrote it the messages up to ``seq``."""
    conn.fast_out = None
    conn.last_seq = max(conn.last_seq, seq)
    if conn.direct is not None and isinstance(conn.direct.proto, CloseWatch):
        conn.direct.proto.on_close_sent = None


def write_all(transports: list[Any], data: bytes) -> list[Any]:
    """``data`` to each transport, but those with bytes still buffered (a reader falling
    behind: flow control is the per-socket path's) or closing: those are returned."""
    skipped = []
    for transport in transports:
        if transport.get_write_buffer_size() or transport.is_closing():
            skipped.append(transport)
        else:
            transport.write(data)
    return skipped


class FastList:
    """One channel's list (see the module); empty until a pass builds it."""

    __slots__ = ("conns", "outside", "passes", "seq", "transports")

    def __init__(self) -> None:
        self.transports: list[Any] | None = None
        self.conns: list[Connection] = []  # the sockets of the transports, in their order
        self.outside: list[Connection] = []  # left the list while it holds: served per socket
        self.seq = 0  # every socket of the list has the messages up to here
        self.passes = 0  # per-socket passes in a row that found every socket direct

    def drop(self) -> None:
        self.passes = 0
        if self.transports is None:
            return
        conns, seq = self.conns, self.seq
        self.transports, self.conns, self.outside = None, [], []
        for conn in conns:
            leave(conn, seq)

    def write(self, first: int, last: int, data: bytes) -> list[Connection] | None:
        """The messages ``first``..``last`` (framed as ``data``) to the sockets of the list; the
        sockets the caller must still serve the per-socket way (those a transport's buffer or
        closing took out of the list, now or before), or None when there is no list (all)."""
        transports = self.transports
        if transports is None:
            return None
        if self.seq != first - 1 or len(self.outside) * 2 > len(transports):
            self.drop()
            return None
        for transport in write_all(transports, data):  # rare: out of the list, served per socket
            self.eject(self.conns[transports.index(transport)])
        DirectWriter.writes += len(transports)
        self.seq = last
        return self.outside

    def admit(self, conn: Connection) -> None:
        """A socket joined the channel: served per socket while the list holds."""
        if self.transports is None:
            self.passes = 0
        else:
            self.outside.append(conn)

    def remove(self, conn: Connection) -> None:
        """A socket left the channel."""
        if self.transports is None:
            self.passes = 0
        elif conn.fast_out is None:
            with contextlib.suppress(ValueError):
                self.outside.remove(conn)
        else:
            self._take_out(conn)

    def eject(self, conn: Connection) -> None:
        """A socket of the list left the direct state (a frame queued, a backlog, closing): it
        is served per socket from now on, with the messages up to ``seq``."""
        if self.transports is not None:
            self._take_out(conn)
            self.outside.append(conn)

    def _take_out(self, conn: Connection) -> None:
        assert self.transports is not None
        at, conns, transports = self.conns.index(conn), self.conns, self.transports
        conns[at], transports[at] = conns[-1], transports[-1]  # the order does not matter
        conns.pop()
        transports.pop()
        leave(conn, self.seq)

    def after_pass(self, conns: set[Connection], direct: int, last: int) -> None:
        """After a per-socket pass that wrote ``direct`` of ``conns`` straight to their
        transports, up to message ``last``: the list is kept once ``FAST_AFTER`` passes in a
        row wrote to every socket."""
        if not conns or direct < len(conns):
            self.passes = 0
            return
        self.passes += 1
        if self.passes < FAST_AFTER:
            return
        members = list(conns)
        transports: list[Any] = []
        for conn in members:
            transport = join(conn, self)
            if transport is None:  # a protocol that cannot tell of its close frame
                for joined in members[: len(transports)]:
                    leave(joined, last)
                self.passes = 0
                return
            transports.append(transport)
        self.transports, self.conns, self.outside, self.seq = transports, members, [], last
