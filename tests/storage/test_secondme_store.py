"""``storage/secondme.py`` on SQLite and PostgreSQL: one session per user, the lease, the
history, the budget and totals; no user reads another's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from daarion_city.storage import secondme as store
from daarion_city.storage.database import Database
from tests.storage.conftest import new, now


async def session_of(db: Database, user_id: str) -> Any:
    """The user's session (created on first use), its lease left free."""
    at = now()
    async with db.begin() as conn:
        if await store.take_session(
            conn, session_id=new("sms"), user_id=user_id, agent_id="ag", now=at, until=at
        ):
            await store.release_lease(conn, user_id)
        return await store.get_session(conn, user_id)


async def add(db: Database, user_id: str, session_id: str, role: str, **values: Any) -> str:
    message_id = new("smm")
    async with db.begin() as conn:
        await store.add_message(
            conn,
            id=message_id,
            session_id=session_id,
            user_id=user_id,
            role=role,
            content=values.pop("content", role),
            created_at=values.pop("created_at", now()),
            **values,
        )
    return message_id


async def test_one_session_per_user(db: Database) -> None:
    sessions = await asyncio.gather(*(session_of(db, "u_a") for _ in range(3)))
    assert len({s.id for s in sessions}) == 1
    other = await session_of(db, "u_b")
    assert other.id != sessions[0].id
    async with db.read() as conn:
        found = await store.get_session(conn, "u_a")
        assert found is not None
        assert found.id == sessions[0].id
        assert found.total_interactions == 0
        assert found.busy_until is None
        assert await store.get_session(conn, "u_nobody") is None


async def test_the_lease_is_held_by_one_caller_until_released_or_past(db: Database) -> None:
    t = now()

    async def take(user_id: str, at: Any) -> Any:
        async with db.begin() as conn:
            return await store.take_session(
                conn,
                session_id=new("sms"),
                user_id=user_id,
                agent_id="ag",
                now=at,
                until=at + timedelta(seconds=60),
            )

    first = await take("u_a", t)  # created with the lease taken
    assert first is not None
    assert first.busy_until is not None
    assert await take("u_a", t) is None
    async with db.begin() as conn:
        await store.release_lease(conn, "u_a")
    again = await take("u_a", t)
    assert again is not None
    assert again.id == first.id
    later = t + timedelta(seconds=61)  # the holder never released it: it ran out
    assert await take("u_a", later) is not None
    both = await asyncio.gather(take("u_b", t), take("u_b", t))  # one caller wins
    assert sorted(x is None for x in both) == [False, True]


async def test_history_status_totals_budget_and_clear(db: Database) -> None:
    session = await session_of(db, "u_a")
    other = await session_of(db, "u_b")
    t0 = now() - timedelta(hours=1)
    ids = []
    for i in range(4):
        ids.append(await add(db, "u_a", session.id, "user", status="pending", content=f"q{i}"))
        ids.append(
            await add(db, "u_a", session.id, "assistant", content=f"a{i}", tokens_used=10 + i)
        )
    await add(db, "u_b", other.id, "user", content="not yours", tokens_used=1000)
    await add(db, "u_a", session.id, "user", content="old", tokens_used=500, created_at=t0)
    async with db.begin() as conn:
        await store.set_message_status(conn, "u_a", ids[0], "ok", None)
        await store.set_message_status(conn, "u_a", ids[2], "failed", "timeout")
        await store.set_message_status(conn, "u_b", ids[4], "failed", "x")  # not u_b's: no-op
        await store.record_answer(conn, "u_a", tokens=42, now=now())
    async with db.read() as conn:
        recent = await store.recent(conn, "u_a", 3)
        assert [m.content for m in recent] == ["q3", "a3", "old"]  # oldest first
        answered = await store.recent(conn, "u_a", 4, answered_only=True)
        # Only answered turns ("ok"): not the pending prompts, nor q1, which failed.
        assert [m.content for m in answered] == ["a1", "a2", "a3", "old"]
        everything = await store.recent(conn, "u_a", 10, answered_only=True)
        assert [m.content for m in everything][:2] == ["q0", "a0"]
        totals = await store.get_session(conn, "u_a")
        assert totals is not None
        assert (totals.total_interactions, totals.total_tokens) == (1, 42)
        # Today's budget counts what was recorded today; a new UTC day starts it again.
        assert store.spent_today(totals, now()) == 42
        assert store.spent_today(totals, now() + timedelta(days=1)) == 0
    async with db.begin() as conn:
        await store.charge(conn, "u_a", tokens=8, now=now())
        await store.charge(conn, "u_a", tokens=5, now=now() + timedelta(days=1))
        totals = await store.get_session(conn, "u_a")
        assert totals is not None
        assert store.spent_today(totals, now() + timedelta(days=1)) == 5
        assert totals.total_tokens == 42  # the lifetime total counts answers only
        assert totals.last_interaction is not None
        assert totals.busy_until is None
    async with db.begin() as conn:
        assert await store.clear(conn, "u_a") == 9
        assert await store.clear(conn, "u_a") == 0
    async with db.read() as conn:
        assert await store.recent(conn, "u_a", 10) == []
        assert [m.content for m in await store.recent(conn, "u_b", 10)] == ["not yours"]
