"""Presence in Redis, shared by every instance.

Keys (after the configured prefix):
- ``presence:user:{user_id}``  the record ``{"status", "name", "last_seen_ms"}``, written with
  (P)SETEX so it disappears when the user's last connection runs out;
- ``presence:conns:{user_id}`` a hash ``conn_id -> "status|expires_ms"`` (plus ``~name``,
  ``~status`` and ``~seen``: the last derived status, kept a grace period past the record);
- ``presence:index``           a sorted set ``user_id -> earliest connection expiry`` of every user
  not offline: listing and counting read it, and the sweeper takes the users due by ``now`` from
  it, never scanning the key space. Its TTL is kept at least that of every connection hash in
  it, so after the last instance stops every key here runs out.

Every event runs one Lua script that applies the rules of ``presence/model.py`` to one user
atomically and returns ``(old, new)``: with several instances writing and sweeping at once,
each change is seen by exactly one caller, which announces it.
"""

from __future__ import annotations

import math

import orjson
import redis.asyncio as aioredis

from daarion_city.core.redisutil import text, unavailable_when_down
from daarion_city.presence.model import Reported, Status, Transition

UPDATE = """
local ukey, ckey, ikey = KEYS[1], KEYS[2], KEYS[3]
local op, conn, st = ARGV[1], ARGV[2], ARGV[3]
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local name, uid, grace = ARGV[6], ARGV[7], tonumber(ARGV[8])
-- The last derived status lives in the connection hash, which outlives the record by a grace
-- period: the sweeper must still see "online" after the record itself has run out.
local old = redis.call('HGET', ckey, '~status') or 'offline'
local last_seen = tonumber(redis.call('HGET', ckey, '~seen') or now)
if op == 'hb' then
  redis.call('HSET', ckey, conn, st .. '|' .. tostring(now + ttl))
  last_seen = now
  if name ~= '' then redis.call('HSET', ckey, '~name', name) end
elseif op == 'bye' then
  redis.call('HDEL', ckey, conn)
end
if name == '' then name = redis.call('HGET', ckey, '~name') or uid end
local new, minexp, maxexp = 'offline', nil, 0
local fields = redis.call('HGETALL', ckey)
for i = 1, #fields, 2 do
  local f, v = fields[i], fields[i + 1]
  if string.sub(f, 1, 1) ~= '~' then
    local sep = string.find(v, '|', 1, true)
    local s, e = string.sub(v, 1, sep - 1), tonumber(string.sub(v, sep + 1))
    if e <= now then
      redis.call('HDEL', ckey, f)
    else
      if minexp == nil or e < minexp then minexp = e end
      if e > maxexp then maxexp = e end
      if s == 'online' then new = 'online' elseif new == 'offline' then new = 'away' end
    end
  end
end
if new == 'offline' then
  redis.call('DEL', ukey, ckey)
  redis.call('ZREM', ikey, uid)
else
  redis.call('HSET', ckey, '~status', new, '~seen', tostring(last_seen))
  redis.call('PSETEX', ukey, maxexp - now,
    cjson.encode({status = new, name = name, last_seen_ms = last_seen}))
  redis.call('PEXPIRE', ckey, maxexp - now + grace)
  redis.call('ZADD', ikey, minexp, uid)
  -- The index outlives every user in it (each one's hash at most), then runs out too: when no
  -- instance is left to sweep it, nothing stays behind for ever.
  if redis.call('PTTL', ikey) < maxexp - now + grace then
    redis.call('PEXPIRE', ikey, maxexp - now + grace)
  end
end
return {old, new, name, tostring(last_seen)}
"""

# Keep a user's connection hash this long past its last expiry, so the sweeper still finds
# the name of a user whose record has just run out.
GRACE_MS = 60_000


class RedisPresenceStore:
    def __init__(self, client: aioredis.Redis, *, ttl: float, prefix: str = "") -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        self.prefix = prefix
        self.index_key = f"{prefix}presence:index"
        self._update = client.register_script(UPDATE)

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}presence:user:{user_id}"

    def conns_key(self, user_id: str) -> str:
        return f"{self.prefix}presence:conns:{user_id}"

    async def _run(
        self,
        op: str,
        user_id: str,
        *,
        now: float,
        conn_id: str = "",
        status: str = "",
        name: str = "",
        client: aioredis.Redis | None = None,
    ) -> Transition:
        result = await self._update(
            keys=[self.user_key(user_id), self.conns_key(user_id), self.index_key],
            args=[op, conn_id, status, int(now * 1000), self.ttl_ms, name, user_id, GRACE_MS],
            client=client,
        )
        return _transition(user_id, result)

    @unavailable_when_down
    async def set_online(
        self, user_id: str, name: str, conn_id: str, *, now: float, status: Reported = "online"
    ) -> Transition:
        return await self._run("hb", user_id, now=now, conn_id=conn_id, status=status, name=name)

    refresh_ttl = set_online

    @unavailable_when_down
    async def disconnect(self, user_id: str, conn_id: str, *, now: float) -> Transition:
        return await self._run("bye", user_id, now=now, conn_id=conn_id)

    @unavailable_when_down
    async def sweep(self, *, now: float, limit: int = 1000) -> list[Transition]:
        due = await self.client.zrangebyscore(
            self.index_key, "-inf", math.floor(now * 1000), start=0, num=limit
        )
        changes = []
        for raw in due:
            change = await self._run("sweep", text(raw), now=now)
            if change.changed:
                changes.append(change)
        return changes

    @unavailable_when_down
    async def is_online(self, user_id: str) -> bool:
        return bool(await self.client.exists(self.user_key(user_id)))

    @unavailable_when_down
    async def get(self, user_ids: list[str]) -> dict[str, Transition]:
        if not user_ids:
            return {}
        values = await self.client.mget([self.user_key(u) for u in user_ids])
        return {u: _record(u, v) for u, v in zip(user_ids, values, strict=True) if v is not None}

    @unavailable_when_down
    async def get_all_online(self) -> list[Transition]:
        users = [text(u) for u in await self.client.zrange(self.index_key, 0, -1)]
        found = await self.get(users)
        return [found[u] for u in users if u in found]

    @unavailable_when_down
    async def get_online_count(self) -> int:
        return int(await self.client.zcard(self.index_key))

    async def close(self) -> None:
        return None


def _status(value: bytes | str) -> Status:
    text = value.decode() if isinstance(value, bytes) else value
    if text not in ("online", "away", "offline"):
        raise ValueError(f"unknown presence status {text!r}")
    return text  # type: ignore[return-value]


def _transition(user_id: str, result: list[bytes]) -> Transition:
    old, new, name, last_seen = result
    return Transition(
        user_id=user_id,
        name=name.decode(),
        old=_status(old),
        new=_status(new),
        last_seen=int(last_seen) / 1000,
    )


def _record(user_id: str, raw: bytes | str) -> Transition:
    rec = orjson.loads(raw)
    status = _status(rec["status"])
    return Transition(user_id, str(rec["name"]), status, status, rec["last_seen_ms"] / 1000)
