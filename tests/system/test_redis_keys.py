"""Every key the service writes to Redis has a TTL or an owner that removes it: after a run that
touches everything that writes keys and a clean shutdown, nothing under the instance's prefix is
left without an expiry."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cluster import free_port
from tests.conftest import REDIS_URL, make_settings
from tests.support import Api, open_socket, run_server

# The longest TTL the service gives a key: a rate-limit bucket lives until it is full again
# (burst / rate), presence records the presence TTL plus a grace minute; a day bounds them all.
MAX_TTL_MS = 24 * 3600 * 1000


async def _keys_and_ttls(prefix: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        return {k.decode()[len(prefix) :]: await client.pttl(k) for k in keys}
    finally:
        await client.aclose()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_no_key_is_left_without_a_ttl_after_a_clean_shutdown(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_url=REDIS_URL,
        city_redis_prefix=redis_prefix,
        # Second Me reaches its rate limit, then a server that is not there: a fast 502.
        secondme_llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        secondme_llm_model="nothing",
    )
    async with contextlib.AsyncExitStack() as sockets:
        async with run_server(settings) as server:
            api = Api(server)
            alice = await api.guest("Alice")  # guest sign-up: its rate limit
            bob = await api.guest("Bob")
            created = await alice.post("/city/rooms", {"slug": "garden", "name": "Garden"})
            assert created.is_success, created.text
            await alice.say("general", "over HTTP", client_msg_id="h1")  # the message bucket
            assert (await bob.post("/city/presence/heartbeat", {"status": "away"})).is_success
            assert (await bob.post("/city/rooms/garden/join")).is_success
            await bob.post("/secondme/invoke", {"prompt": "hello"})  # its token bucket
            async with api.http.stream("GET", "/city/feed/stream") as feed:
                assert feed.status_code == 200
                async for _ in feed.aiter_bytes():
                    break
            # Bob's sockets close before the shutdown: what they wrote must be removed.
            async with (
                bob.socket("garden") as room,
                open_socket(server, "/ws/city/presence", token=bob.token) as presence,
            ):
                await room.expect("room.state")
                await presence.expect("presence.bulk_update")
                await room.send({"event": "room.typing", "typing": True})
                await room.send({"event": "room.message.send", "body": "b", "client_msg_id": "b1"})
                await room.expect("room.message.ack")
            assert (await bob.post("/city/presence/offline")).is_success
            # Alice's sockets are closed by the shutdown itself: her presence is kept on
            # purpose (she reconnects within a heartbeat), but it must still run out.
            room = await sockets.enter_async_context(alice.socket("general"))
            presence = await sockets.enter_async_context(
                open_socket(server, "/ws/city/presence", token=alice.token)
            )
            await room.expect("room.state")
            await presence.expect("presence.bulk_update")
            await presence.send({"event": "presence.heartbeat", "status": "online"})
            await room.send({"event": "room.typing", "typing": True})
            await room.send({"event": "room.message.send", "body": "ws", "client_msg_id": "w1"})
            await room.expect("room.message.ack")
            during = await _keys_and_ttls(redis_prefix)
            await api.aclose()
        assert await room.closed_with(10) == 1001
        assert await presence.closed_with(10) == 1001

    left = await _keys_and_ttls(redis_prefix)
    listing = f"keys left under {redis_prefix!r}:\n" + "\n".join(
        f"  {k}: {'no TTL' if t == -1 else f'{t} ms'}" for k, t in sorted(left.items())
    )
    # The run did write keys (else this test proves nothing): buckets, presence, occupancy.
    assert any(k.startswith("ratelimit:") for k in during), during
    assert any(k.startswith("presence:") for k in during), during
    assert any(k.startswith("occ:") for k in during), during
    unbounded = {k: t for k, t in left.items() if not 0 < t <= MAX_TTL_MS}
    assert not unbounded, listing
    # Alice's presence survives the shutdown (with a TTL), Bob's is gone.
    assert any(alice.user_id in k for k in left), listing
    assert not any(bob.user_id in k and k.startswith("presence:") for k in left), listing
