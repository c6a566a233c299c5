"""ReplicaPool: the replicas of one version, their free slots, and the queue in front of them.

Each replica takes `replica_max_concurrent_requests` requests at once. A request goes to the
least busy ready replica with a free slot; when none has one it waits, first come first served,
up to `max_request_wait_time`, then gives up (the router answers 503). A replica that refuses
connections is ejected until its health check passes again. The busy-slot counts are what the
autoscaler samples, so they live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field


class QueueTimeout(Exception):
    """No slot freed up within max_request_wait_time."""


class NoReplicas(Exception):
    """The version has no ready replica at all."""


@dataclass(eq=False)
class Replica:
    address: str  # host:port
    in_flight: int = 0
    ejected: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass
class ReplicaPool:
    slots_per_replica: int = 1
    max_wait_s: float = 0.5
    replicas: dict[str, Replica] = field(default_factory=dict)
    _waiters: collections.deque[asyncio.Future[Replica]] = field(default_factory=collections.deque)

    # ------------------------------------------------------------ membership

    def set_addresses(self, addresses: list[str]) -> None:
        """The backend's current view of ready replicas; in-flight counts survive a refresh."""
        wanted = set(addresses)
        for address in list(self.replicas):
            if address not in wanted:
                del self.replicas[address]
        for address in addresses:
            self.replicas.setdefault(address, Replica(address))
        self._wake()

    def eject(self, replica: Replica) -> None:
        replica.ejected = True

    def readmit(self, address: str) -> None:
        replica = self.replicas.get(address)
        if replica is not None and replica.ejected:
            replica.ejected = False
            self._wake()

    # ------------------------------------------------------------ slots

    def _free(self) -> Replica | None:
        best = None
        for r in self.replicas.values():
            if not r.ejected and r.in_flight < self.slots_per_replica and (best is None or r.in_flight < best.in_flight):
                best = r
        return best

    async def acquire(self, exclude: Replica | None = None) -> Replica:
        """A slot on the least busy replica, waiting in line when every slot is taken."""
        if not self._waiters:
            replica = self._free()
            if replica is not None and replica is not exclude:
                replica.in_flight += 1
                return replica
        if not any(not r.ejected for r in self.replicas.values()) and self.max_wait_s <= 0:
            raise NoReplicas()
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.max_wait_s)
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot just as time ran out: give it back to the next in line.
                self.release(waiter.result())
            else:
                waiter.cancel()
            if not any(not r.ejected for r in self.replicas.values()):
                raise NoReplicas() from None
            raise QueueTimeout() from None
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            replica = self._free()
            if replica is None:
                return
            replica.in_flight += 1
            self._waiters.popleft()
            waiter.set_result(replica)

    # ------------------------------------------------------------ what the autoscaler reads

    @property
    def busy_slots(self) -> int:
        return sum(r.in_flight for r in self.replicas.values())

    @property
    def total_slots(self) -> int:
        return self.slots_per_replica * sum(1 for r in self.replicas.values() if not r.ejected)

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas.values() if not r.ejected)
