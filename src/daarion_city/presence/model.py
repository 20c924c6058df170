"""The presence state machine, as pure functions of ``(state, event, now)``.

A user's presence is the set of their live *connections* (a presence socket, or ``http`` for
heartbeats sent over HTTP), each with the status it last reported and the time it expires
(``now + PRESENCE_TTL`` at its last heartbeat). From it:

- ``offline``  when no connection is live;
- ``online``   when any live connection reports online (several tabs or devices: any online wins);
- ``away``     when every live connection reports away.

A connection reports ``away`` when its client says so (tab hidden, idle) or when its heartbeat
says the user has been inactive for ``PRESENCE_AWAY_AFTER`` seconds or more.

Events: ``heartbeat`` (also the opening of a socket) refreshes or adds a connection;
``disconnect`` (socket closed, ``POST /city/presence/offline``) removes one at once; ``expire``
(the sweeper, at ``now``) drops the connections whose TTL ran out. A change of the derived status
is announced once; an event that leaves it as it was announces nothing.

The Redis store runs the same rules in a Lua script (``store/redis.py``); the contract tests hold
both to this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["online", "away", "offline"]
Reported = Literal["online", "away"]
HTTP_CONNECTION = "http"


@dataclass(frozen=True, slots=True)
class Conn:
    status: Reported
    expires: float


@dataclass(frozen=True, slots=True)
class UserPresence:
    """A user who is not offline. ``status`` is the one last derived (and announced)."""

    user_id: str
    name: str
    last_seen: float
    status: Status
    conns: Mapping[str, Conn] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """What one event did to one user: the status before and after, and the record after."""

    user_id: str
    name: str
    old: Status
    new: Status
    last_seen: float

    @property
    def changed(self) -> bool:
        return self.old != self.new


def reported_status(
    status: str | None, last_active_ago_ms: int | None, away_after: float
) -> Reported:
    """What a heartbeat says: away if the client says so or was idle past the away delay."""
    if status == "away":
        return "away"
    if last_active_ago_ms is not None and last_active_ago_ms >= away_after * 1000:
        return "away"
    return "online"


def live(conns: Mapping[str, Conn], now: float) -> dict[str, Conn]:
    return {cid: c for cid, c in conns.items() if c.expires > now}


def derive(conns: Mapping[str, Conn]) -> Status:
    """The status of a user from their live connections."""
    if not conns:
        return "offline"
    if any(c.status == "online" for c in conns.values()):
        return "online"
    return "away"


def _state(
    user_id: str, name: str, last_seen: float, conns: dict[str, Conn]
) -> UserPresence | None:
    return UserPresence(user_id, name, last_seen, derive(conns), conns) if conns else None


def heartbeat(
    state: UserPresence | None,
    *,
    user_id: str,
    name: str,
    conn_id: str,
    status: Reported,
    now: float,
    ttl: float,
) -> UserPresence:
    conns = live(state.conns, now) if state is not None else {}
    conns[conn_id] = Conn(status, now + ttl)
    return UserPresence(
        user_id, name or (state.name if state else user_id), now, derive(conns), conns
    )


def disconnect(state: UserPresence | None, *, conn_id: str, now: float) -> UserPresence | None:
    if state is None:
        return None
    conns = live(state.conns, now)
    conns.pop(conn_id, None)
    return _state(state.user_id, state.name, state.last_seen, conns)


def expire(state: UserPresence | None, *, now: float) -> UserPresence | None:
    if state is None:
        return None
    return _state(state.user_id, state.name, state.last_seen, live(state.conns, now))


def next_expiry(state: UserPresence) -> float:
    """When the earliest connection runs out: the next moment the status may change by itself."""
    return min(c.expires for c in state.conns.values())


def transition(
    user_id: str, before: UserPresence | None, after: UserPresence | None, now: float
) -> Transition:
    ref = after or before
    return Transition(
        user_id=user_id,
        name=ref.name if ref else user_id,
        old=before.status if before is not None else "offline",
        new=after.status if after is not None else "offline",
        last_seen=ref.last_seen if ref else now,
    )
