"""Redis lease: ``SET key token NX PX`` with compare-and-renew / compare-and-delete in Lua.

The token is random per process, so only the holder can renew or release; a holder that
stops renewing loses the key after ``LEASE_DURATION`` and another replica takes it.
"""

from __future__ import annotations

import secrets

from agent_runtime.leader.lease import Lease

# KEYS[1] = lease key, ARGV[1] = our token, ARGV[2] = lease duration (ms)
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease(Lease):
    def __init__(self, url: str, key: str, *, lease_duration: float, identity: str = "", timeout: float = 2.0):
        try:
            import redis.asyncio as aioredis  # noqa: PLC0415 optional dependency (streamspace-agent[redis])
        except ImportError as exc:  # optional dependency: pip install streamspace-agent[redis]
            raise RuntimeError("HA_BACKEND=redis needs the 'redis' package (pip install redis)") from exc
        self.key = key
        self.token = f"{identity}:{secrets.token_hex(16)}"
        self.lease_ms = int(lease_duration * 1000)
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._renew = self.client.register_script(RENEW_SCRIPT)
        self._release = self.client.register_script(RELEASE_SCRIPT)

    async def try_acquire(self) -> bool:
        if await self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            return True
        return await self.renew()  # still ours from before (e.g. we stepped down on a slow renew)

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.token, self.lease_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.token])

    async def holder(self) -> str | None:
        value = await self.client.get(self.key)
        return value.decode() if value else None

    async def close(self) -> None:
        try:
            await self.release()
        finally:
            await self.client.aclose()
