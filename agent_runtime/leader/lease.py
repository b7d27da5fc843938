"""The storage primitive of leader election: one lease that one replica holds at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Lease(ABC):
    """One lease; every method is safe to call in any state."""

    @abstractmethod
    async def try_acquire(self) -> bool:
        """Take the lease if it is free (or already ours). True when we hold it now."""

    @abstractmethod
    async def renew(self) -> bool:
        """Extend our hold; False if another replica holds the lease (or nobody does)."""

    @abstractmethod
    async def release(self) -> None:
        """Give the lease up if we hold it (never someone else's)."""

    async def close(self) -> None:
        await self.release()
