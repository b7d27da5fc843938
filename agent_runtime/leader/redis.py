"""Redis lease: ``SET key token NX PX`` with compare-and-renew / compare-and-delete in Lua.

The token is random per process, so only the holder can renew or release; a holder that
stops renewing loses the key after ``LEASE_DURATION`` and another replica takes it.

The scripts go as EVAL, not EVALSHA: after a Sentinel failover the new master's script cache
is empty, and a renew must not fail on NOSCRIPT while the lease is still held.
"""

from __future__ import annotations

import secrets

from agent_runtime.config import ConfigError
from agent_runtime.leader.lease import Lease
from agent_runtime.redis_client import RedisTarget

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
    def __init__(
        self,
        target: RedisTarget | str | None,
        key: str,
        *,
        lease_duration: float,
        identity: str = "",
        timeout: float = 2.0,
    ):
        """``target``: where the lease lives (a URL, or a :class:`RedisTarget` that may name
        Sentinels: the lease then follows the master they name across a failover)."""
        if isinstance(target, str):
            target = RedisTarget.build(target, "", "")
        if target is None:
            raise ConfigError("HA_BACKEND=redis needs REDIS_URL or REDIS_SENTINELS")
        self.key = key
        self.token = f"{identity}:{secrets.token_hex(16)}"
        self.lease_ms = int(lease_duration * 1000)
        self.client = target.client(asyncio=True, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def try_acquire(self) -> bool:
        if await self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            return True
        return await self.renew()  # still ours from before (e.g. we stepped down on a slow renew)

    async def renew(self) -> bool:
        return bool(await self.client.eval(RENEW_SCRIPT, 1, self.key, self.token, self.lease_ms))

    async def release(self) -> None:
        await self.client.eval(RELEASE_SCRIPT, 1, self.key, self.token)

    async def holder(self) -> str | None:
        value = await self.client.get(self.key)
        return value.decode() if value else None

    async def close(self) -> None:
        try:
            await self.release()
        finally:
            await self.client.aclose()
