"""ReplicaPool: the replicas of one version, their free slots, and the queue in front of them.

Each replica takes `replica_max_concurrent_requests` requests at once. A request goes to the
least busy ready replica with a free slot; when none has one it waits, first come first served,
up to `max_request_wait_time`, then gives up (the router answers 503). A replica that refuses
connections is ejected until its health check passes again. One that leaves the ready set with
requests in flight drains: it takes no new request, its requests still count, and it is dropped
when the last one ends, or taken back, counts and all, when it is ready again first. The busy-slot
counts are what the autoscaler samples, so they live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from router_image.upstream import ReplicaConnections


class QueueTimeout(Exception):
    """No slot freed up within max_request_wait_time."""


class NoReplicas(Exception):
    """The version has no ready replica at all."""


class Retired(Exception):
    """A reload removed the version: nothing was sent, so the request may be routed again."""


class Emptied(Exception):
    """Every replica left while the request waited (its Deployment deleted before the config that drops
    it reached the router, a drain of its one replica): nothing was sent, so another version may serve it."""


@dataclass(eq=False)
class Replica:
    address: str  # host:port ([v6]:port)
    in_flight: int = 0
    ejected: bool = False
    connections: ReplicaConnections = field(init=False)
    host: bytes = field(init=False)  # its Host header value

    def __post_init__(self) -> None:
        self.host = self.address.encode()
        host, _, port = self.address.rpartition(":")
        self.connections = ReplicaConnections(host.strip("[]"), int(port))


@dataclass
class ReplicaPool:
    slots_per_replica: int = 1
    max_wait_s: float = 0.5
    replicas: dict[str, Replica] = field(default_factory=dict)
    _draining: dict[str, Replica] = field(default_factory=dict)  # left the ready set, requests in flight
    _waiters: collections.deque[asyncio.Future[Replica]] = field(default_factory=collections.deque)
    _order: list[Replica] = field(default_factory=list)
    _turn: int = 0
    retired: bool = False

    def configure(self, slots_per_replica: int, max_wait_s: float) -> None:
        """A reloaded config's limits; more slots may let waiting requests go at once."""
        self.slots_per_replica, self.max_wait_s = slots_per_replica, max_wait_s
        self._wake()

    # ------------------------------------------------------------ membership

    def set_addresses(self, addresses: list[str]) -> None:
        """The backend's current view of ready replicas; in-flight counts survive a refresh, and a
        replica that leaves it for a moment (a readiness flap) with requests in flight."""
        wanted = set(addresses)
        had_ready = self.any_ready()
        for address in list(self.replicas):
            if address not in wanted:
                replica = self.replicas.pop(address)
                if replica.in_flight:
                    self._draining[address] = replica
                else:
                    replica.connections.close()
        for address in addresses:
            if address not in self.replicas:
                self.replicas[address] = self._draining.pop(address) if address in self._draining else Replica(address)
        self._order = list(self.replicas.values())
        if self._waiters and had_ready and not self.any_ready():  # the last ready one left now
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(Emptied())
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
        """Least busy; ties taken in turn, so light sequential load still spreads (and warms) them all."""
        order = self._order
        n = len(order)
        if n == 0:
            return None
        self._turn = start = (self._turn + 1) % n
        best = None
        for i in range(n):
            r = order[(start + i) % n]
            if not r.ejected and r.in_flight < self.slots_per_replica and (best is None or r.in_flight < best.in_flight):
                best = r
                if r.in_flight == 0:
                    break
        return best

    def take(self) -> Replica | None:
        """A slot on the least busy replica now, or None when the request must wait in line (or, the pool retired,
        go where the config now sends it: acquire raises Retired)."""
        if self._waiters or self.retired:
            return None
        replica = self._free()
        if replica is not None:
            replica.in_flight += 1
        return replica

    def retire(self) -> None:
        """The version left the config: those waiting in line, and any that would join it, are told so, and its
        idle replica connections close (busy ones once their answer is in), not at the replicas' keep-alive."""
        self.retired = True
        for replica in [*self.replicas.values(), *self._draining.values()]:
            replica.connections.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Retired())

    async def acquire(self, wait_s: float | None = None, front: bool = False) -> Replica:
        """A slot on the least busy replica, waiting in line when every slot is taken (max_wait_s, or what
        is left of it after an Emptied); `front`: at the head of the line, for a request that had its turn."""
        if self.retired:
            raise Retired()
        replica = self.take()
        if replica is not None:
            return replica
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Replica] = loop.create_future()
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        timer = loop.call_later(self.max_wait_s if wait_s is None else wait_s, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # The client went away; a slot handed over in that same instant goes to the next in line.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            raise
        finally:
            timer.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _expire(self, waiter: asyncio.Future[Replica]) -> None:
        if not waiter.done():
            waiter.set_exception(QueueTimeout() if self.ready else NoReplicas())

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        if self._draining and not replica.in_flight and self._draining.get(replica.address) is replica:
            del self._draining[replica.address]
            replica.connections.close()
        if self._waiters:
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
        return sum(r.in_flight for r in self.replicas.values()) + sum(r.in_flight for r in self._draining.values())

    @property
    def total_slots(self) -> int:
        return self.slots_per_replica * sum(1 for r in self.replicas.values() if not r.ejected)

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas.values() if not r.ejected)

    def any_ready(self) -> bool:
        """ready > 0, asked per request: stops at the first."""
        for r in self._order:
            if not r.ejected:
                return True
        return False
