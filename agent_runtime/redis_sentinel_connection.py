"""Connections to a Sentinel-named master that ask the Sentinels again on every reconnect.

redis-py's ``SentinelManagedConnection`` looks the master up only in ``connect()``, but its
command path reconnects a dropped connection through ``connect_check_health()``, which goes
back to the address of the last connect (redis/redis-py#3874). After a failover that demotes
the old master, every retry then lands on the replica again (READONLY, forever). These
subclasses route every reconnect through the lookup; imported only where the optional
``redis`` package is (agent_runtime/redis_client.py chooses the class).
"""

from __future__ import annotations

from typing import Any

from redis import SSLConnection
from redis.asyncio import SSLConnection as AsyncSSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection as _AsyncManaged
from redis.sentinel import SentinelManagedConnection as _Managed


class SentinelConnection(_Managed):
    """Synchronous: a reconnect asks the Sentinels for the master (see the module doc)."""

    _looking_up = False

    def connect_to(self, address: Any) -> None:
        self._looking_up = True  # the address was just looked up: connect to it
        try:
            super().connect_to(address)
        finally:
            self._looking_up = False

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock or self._looking_up or not self.connection_pool.is_master:
            return super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        return self.connect()  # → _connect_retry → connect_to(the master the Sentinels name now)


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    pass


class AsyncSentinelConnection(_AsyncManaged):
    """asyncio: a reconnect asks the Sentinels for the master (see the module doc)."""

    _looking_up = False

    async def connect_to(self, address: Any) -> None:
        self._looking_up = True
        try:
            await super().connect_to(address)
        finally:
            self._looking_up = False

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected or self._looking_up or not self.connection_pool.is_master:
            return await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
        return await self.connect()


class AsyncSentinelSSLConnection(AsyncSentinelConnection, AsyncSSLConnection):
    pass
