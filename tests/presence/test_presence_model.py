"""The presence state machine with a fake clock: every transition of the SPEC's table."""

from __future__ import annotations

from daarion_city.core.clock import FakeClock
from daarion_city.presence import model
from daarion_city.presence.model import UserPresence, reported_status

TTL = 40.0
AWAY_AFTER = 300.0


def hb(
    state: UserPresence | None,
    conn: str,
    clock: FakeClock,
    status: str | None = None,
    idle_ms: int | None = None,
) -> UserPresence:
    return model.heartbeat(
        state,
        user_id="u_a",
        name="A",
        conn_id=conn,
        status=reported_status(status, idle_ms, AWAY_AFTER),
        now=clock(),
        ttl=TTL,
    )


def test_socket_open_is_online_and_repeated_heartbeats_change_nothing() -> None:
    clock = FakeClock()
    s1 = hb(None, "c1", clock)
    assert model.transition("u_a", None, s1, clock()).new == "online"
    clock.advance(15)
    s2 = hb(s1, "c1", clock)
    t = model.transition("u_a", s1, s2, clock())
    assert (t.old, t.new, t.changed) == ("online", "online", False)


def test_away_after_five_minutes_of_reported_inactivity() -> None:
    clock = FakeClock()
    s = hb(None, "c1", clock, idle_ms=299_999)
    assert s.status == "online"
    clock.advance(15)
    s2 = hb(s, "c1", clock, idle_ms=300_000)
    assert model.transition("u_a", s, s2, clock()).new == "away"
    clock.advance(15)
    s3 = hb(s2, "c1", clock, idle_ms=0)  # activity again
    t = model.transition("u_a", s2, s3, clock())
    assert (t.old, t.new) == ("away", "online")


def test_client_reported_away() -> None:
    clock = FakeClock()
    s = hb(None, "c1", clock, status="away")
    assert s.status == "away"


def test_offline_after_the_ttl_and_not_before() -> None:
    clock = FakeClock()
    s = hb(None, "c1", clock)
    clock.advance(TTL - 0.001)
    assert model.expire(s, now=clock()) is not None
    clock.advance(0.002)
    after = model.expire(s, now=clock())
    assert after is None
    t = model.transition("u_a", s, after, clock())
    assert (t.old, t.new) == ("online", "offline")


def test_multi_device_online_wins_and_last_close_is_offline() -> None:
    clock = FakeClock()
    s = hb(None, "phone", clock, status="away")
    s = hb(s, "laptop", clock)
    assert s.status == "online"
    s2 = model.disconnect(s, conn_id="laptop", now=clock())
    assert s2 is not None
    assert s2.status == "away"  # only the away phone is left
    s3 = model.disconnect(s2, conn_id="phone", now=clock())
    assert s3 is None
    assert model.transition("u_a", s2, s3, clock()).new == "offline"


def test_reconnect_within_the_ttl_does_not_flap() -> None:
    clock = FakeClock()
    s = hb(None, "old-socket", clock)
    clock.advance(25)  # the network dropped; the old socket is never closed cleanly
    s2 = hb(s, "new-socket", clock)
    assert model.transition("u_a", s, s2, clock()).changed is False
    clock.advance(20)  # the old socket's TTL ran out; the new one is live
    s3 = model.expire(s2, now=clock())
    assert s3 is not None
    assert list(s3.conns) == ["new-socket"]
    assert model.transition("u_a", s2, s3, clock()).changed is False


def test_an_expired_online_tab_leaves_the_away_one() -> None:
    clock = FakeClock()
    s = hb(None, "tab1", clock)
    clock.advance(10)
    s = hb(s, "tab2", clock, status="away")
    clock.advance(31)  # tab1 stopped at t=0: expired at 40; tab2 lives to 50
    s2 = model.expire(s, now=clock())
    assert s2 is not None
    t = model.transition("u_a", s, s2, clock())
    assert (t.old, t.new) == ("online", "away")
