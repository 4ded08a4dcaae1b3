"""The Redis backend: one cache for every worker and replica, bounded and evicted like the in-process one.

Each operation is one Lua script (one round trip, atomic), so workers never see half an entry. Under the
prefix: `e:<id>` the entry (expires with the TTL), `lru` / `born` / `kv` sorted sets (last use, time written,
knowledge version), `meta` (size and semantic scope) and `hits` hashes, the `bytes` counter, `v:<scope>` the
vectors of a semantic scope and `gen` a change counter per scope. Each worker keeps a copy of the scopes it
searched and re-reads one only when its counter moved, so a semantic lookup costs one round trip.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kefu.cache.entry import CachedAnswer
from kefu.cache.store import EVICTION_WINDOW, EvictionHook, Limits, StoreStats, Vector, closest, entry_size

_MIRRORED_SCOPES = 4096
"""Semantic scopes a worker keeps a copy of (the least recently searched are dropped first)."""

_REMOVE = """
local function remove(P, id)
  local meta = redis.call('HGET', P..'meta', id)
  redis.call('DEL', P..'e:'..id)
  redis.call('ZREM', P..'lru', id)
  redis.call('ZREM', P..'born', id)
  redis.call('ZREM', P..'kv', id)
  redis.call('HDEL', P..'hits', id)
  if not meta then return 0 end
  redis.call('HDEL', P..'meta', id)
  local sep = string.find(meta, '|', 1, true)
  redis.call('DECRBY', P..'bytes', tonumber(string.sub(meta, 1, sep - 1)))
  local scope = string.sub(meta, sep + 1)
  if scope ~= '' then
    redis.call('HDEL', P..'v:'..scope, id)
    redis.call('HINCRBY', P..'gen', scope, 1)
  end
  return 1
end
"""

_PUT = (
    _REMOVE
    + """
local P, id, scope = ARGV[1], ARGV[2], ARGV[6]
local size, kv, now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[8]), tonumber(ARGV[9])
local max_entries, max_bytes, window = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
remove(P, id)
redis.call('SET', P..'e:'..id, ARGV[3], 'PX', ttl)
redis.call('HSET', P..'meta', id, size..'|'..scope)
redis.call('HSET', P..'hits', id, 0)
redis.call('ZADD', P..'lru', now, id)
redis.call('ZADD', P..'born', now, id)
redis.call('ZADD', P..'kv', kv, id)
redis.call('INCRBY', P..'bytes', size)
if scope ~= '' then
  redis.call('HSET', P..'v:'..scope, id, ARGV[7])
  redis.call('HINCRBY', P..'gen', scope, 1)
end
local expired = 0
for _, old in ipairs(redis.call('ZRANGEBYSCORE', P..'born', '-inf', now - ttl, 'LIMIT', 0, 256)) do
  expired = expired + remove(P, old)
end
local evicted = 0
while redis.call('ZCARD', P..'lru') > max_entries or tonumber(redis.call('GET', P..'bytes') or '0') > max_bytes do
  local tail = redis.call('ZRANGE', P..'lru', 0, window)
  local victim, fewest = nil, nil
  local counted = {}
  for _, cand in ipairs(tail) do
    if cand ~= id and #counted < window then
      local hits = tonumber(redis.call('HGET', P..'hits', cand) or '0')
      table.insert(counted, {cand, hits})
      if fewest == nil or hits < fewest then victim, fewest = cand, hits end
    end
  end
  if victim == nil then
    if redis.call('EXISTS', P..'e:'..id) == 0 then break end
    victim = id
  end
  for _, pair in ipairs(counted) do
    if pair[1] ~= victim and pair[2] > fewest then
      redis.call('HSET', P..'hits', pair[1], math.floor(pair[2] / 2))
    end
  end
  evicted = evicted + remove(P, victim)
end
return {redis.call('EXISTS', P..'e:'..id), evicted, expired}
"""
)

_GET = (
    _REMOVE
    + """
local P, id = ARGV[1], ARGV[2]
local data = redis.call('GET', P..'e:'..id)
if not data then return {0, remove(P, id)} end
if ARGV[4] == '1' then
  redis.call('ZADD', P..'lru', 'XX', ARGV[3], id)
  redis.call('HINCRBY', P..'hits', id, 1)
end
return {1, data}
"""
)

_FORGET = (
    _REMOVE
    + """
local P = ARGV[1]
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P..'kv', '-inf', '(' .. ARGV[2])) do n = n + remove(P, id) end
return n
"""
)

_SCOPE = """
local gen = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if gen == ARGV[2] then return {gen} end
return {gen, redis.call('HGETALL', KEYS[1])}
"""


@dataclass(slots=True)
class _Mirror:
    generation: bytes
    ids: list[str]
    matrix: Vector | None


class RedisStore:
    """Entries in Redis, shared by every worker and replica configured with the same URL and prefix."""

    name = "redis"

    def __init__(self, client: Redis, limits: Limits, *, prefix: str, on_evict: EvictionHook | None = None) -> None:
        self.client = client
        self.limits = limits
        self.prefix = prefix
        self._on_evict = on_evict or (lambda reason, count: None)
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._forget = client.register_script(_FORGET)
        self._scope = client.register_script(_SCOPE)
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, limits: Limits, *, prefix: str, on_evict: EvictionHook | None = None) -> RedisStore:
        # A cache must never hold a turn up: short timeouts, no retries (a failed lookup is a miss).
        client = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        return cls(client, limits, prefix=prefix, on_evict=on_evict)

    async def get(self, key: str, *, touch: bool = True) -> CachedAnswer | None:
        found, value = await self._get(args=[self.prefix, key, _now_ms(), "1" if touch else "0"])
        if not found:
            if value:
                self._on_evict("expired", int(value))
            return None
        return CachedAnswer.loads(value)

    async def put(
        self, key: str, entry: CachedAnswer, *, scope: str | None = None, vector: Vector | None = None
    ) -> bool:
        data = entry.dumps()
        size = entry_size(data, vector)
        if size > self.limits.max_bytes:
            return False
        packed = vector.astype("<f4").tobytes() if vector is not None and scope is not None else b""
        stored, evicted, expired = await self._put(
            args=[
                self.prefix,
                key,
                data,
                size,
                entry.knowledge_version,
                scope if scope is not None and packed else "",
                packed,
                _now_ms(),
                int(self.limits.ttl_s * 1000),
                self.limits.max_entries,
                self.limits.max_bytes,
                EVICTION_WINDOW,
            ]
        )
        if evicted:
            self._on_evict("capacity", int(evicted))
        if expired:
            self._on_evict("expired", int(expired))
        return bool(stored)

    async def nearest(self, scope: str, vector: Vector, limit: int) -> list[tuple[str, float]]:
        mirror = self._mirrors.get(scope)
        known = mirror.generation if mirror is not None else b""
        reply: list[Any] = await self._scope(keys=[f"{self.prefix}v:{scope}", f"{self.prefix}gen"], args=[scope, known])
        if mirror is None or reply[0] != known:
            mirror = self._mirror(reply[0], reply[1] if len(reply) > 1 else [])
            self._mirrors[scope] = mirror
        self._mirrors.move_to_end(scope)
        while len(self._mirrors) > _MIRRORED_SCOPES:
            self._mirrors.popitem(last=False)
        if mirror.matrix is None:
            return []
        return closest(mirror.ids, mirror.matrix, vector, limit)

    @staticmethod
    def _mirror(generation: bytes, flat: list[bytes]) -> _Mirror:
        ids = [flat[i].decode() for i in range(0, len(flat), 2)]
        if not ids:
            return _Mirror(generation, [], None)
        matrix = np.vstack([np.frombuffer(flat[i], dtype="<f4") for i in range(1, len(flat), 2)])
        return _Mirror(generation, ids, matrix.astype(np.float32, copy=False))

    async def forget_before(self, knowledge_version: int) -> int:
        removed = int(await self._forget(args=[self.prefix, knowledge_version]))
        if removed:
            self._on_evict("invalidated", removed)
        return removed

    async def stats(self) -> StoreStats:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(f"{self.prefix}lru")
            pipe.get(f"{self.prefix}bytes")
            entries, size = await pipe.execute()
        return StoreStats(entries=int(entries), bytes=max(0, int(size or 0)))

    async def aclose(self) -> None:
        self._mirrors.clear()
        await self.client.aclose()


def _now_ms() -> int:
    return int(time.time() * 1000)
