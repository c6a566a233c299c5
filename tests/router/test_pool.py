"""ReplicaPool: least busy replica, FIFO queue bounded by the wait time, ejection, no leaked slots."""

from __future__ import annotations

import asyncio
import socket

import pytest

from router_image.proxy import acquire, connect
from router_image.responses import HttpError
from router_image.routes import VersionState
from router_image.config import AutoscaleConfig, VersionConfig
from router_image.pool import Emptied, NoReplicas, QueueTimeout, ReplicaPool, Retired

pytestmark = pytest.mark.anyio


async def test_least_busy_replica_with_a_free_slot() -> None:
    pool = ReplicaPool(slots_per_replica=2, max_wait_s=0.1)
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    first, second = await pool.acquire(), await pool.acquire()
    assert {first.address, second.address} == {"127.0.0.1:1", "127.0.0.1:2"}  # spread, not stacked
    third = await pool.acquire()  # both hold 1: either; now one holds 2
    other = second if third is first else first
    assert third.in_flight == 2 and other.in_flight == 1
    pool.release(other)
    assert (await pool.acquire()) is other  # the idle one, not the busier one
    assert (await pool.acquire()) is other and pool.busy_slots == 4 == pool.total_slots


async def test_waits_first_come_first_served_then_times_out() -> None:
    pool = ReplicaPool(slots_per_replica=1, max_wait_s=0.3)
    pool.set_addresses(["127.0.0.1:1"])
    held = await pool.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        replica = await pool.acquire()
        order.append(i)
        await asyncio.sleep(0.01)
        pool.release(replica)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0.05)
    assert pool.queued == 3
    pool.release(held)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]

    held = await pool.acquire()
    started = asyncio.get_running_loop().time()
    with pytest.raises(QueueTimeout):
        await pool.acquire()
    assert 0.25 <= asyncio.get_running_loop().time() - started < 0.6
    assert pool.queued == 0 and pool.busy_slots == 1


async def test_no_ready_replica_after_the_wait() -> None:
    pool = ReplicaPool(max_wait_s=0.05)
    with pytest.raises(NoReplicas):
        await pool.acquire()


async def test_a_replica_arriving_during_the_wait_serves_the_queue() -> None:
    pool = ReplicaPool(max_wait_s=1.0)
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    pool.set_addresses(["127.0.0.1:7"])
    assert (await waiter).address == "127.0.0.1:7"


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    pool = ReplicaPool(max_wait_s=1.0)
    pool.set_addresses(["127.0.0.1:1"])
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(held)  # hands the slot to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.busy_slots == 0 and pool.queued == 0
    assert (await pool.acquire()).address == "127.0.0.1:1"


async def test_ejected_replicas_take_nothing_until_readmitted() -> None:
    pool = ReplicaPool(max_wait_s=0.05)
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    pool.eject(pool.replicas["127.0.0.1:1"])
    assert pool.ready == 1
    for _ in range(3):
        replica = await pool.acquire()
        assert replica.address == "127.0.0.1:2"
        pool.release(replica)
    pool.readmit("127.0.0.1:1")
    assert pool.ready == 2


async def test_more_slots_on_reload_release_the_queue() -> None:
    pool = ReplicaPool(max_wait_s=1.0)
    pool.set_addresses(["127.0.0.1:1"])
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.configure(2, 1.0)
    assert (await asyncio.wait_for(waiter, 0.1)).in_flight == 2


async def test_a_replica_that_flaps_keeps_its_in_flight_count() -> None:
    """Out of the ready set for a moment with a request in flight: that request still counts (and
    fills its one slot) while it is out, and when it is back, as the same replica."""
    pool = ReplicaPool(slots_per_replica=1, max_wait_s=0.05)
    pool.set_addresses(["127.0.0.1:1"])
    first = await pool.acquire()
    pool.set_addresses([])  # its readiness probe failed while it was busy: draining
    assert pool.busy_slots == 1 and pool.ready == 0 and pool.total_slots == 0
    assert pool.take() is None  # no new request goes to a draining replica
    pool.set_addresses(["127.0.0.1:1"])  # ready again, the first request still running there
    assert pool.replicas["127.0.0.1:1"] is first and pool.busy_slots == 1
    assert pool.take() is None  # its one slot is still taken
    pool.release(first)
    assert pool.busy_slots == 0 and (await pool.acquire()) is first


async def test_a_draining_replica_is_dropped_when_its_last_request_ends() -> None:
    pool = ReplicaPool(slots_per_replica=2, max_wait_s=0.05)
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    gone = pool.replicas["127.0.0.1:1"]
    held = [await pool.acquire(), await pool.acquire(), await pool.acquire()]
    assert gone.in_flight >= 1  # spread over both
    pool.set_addresses(["127.0.0.1:2"])
    assert pool.busy_slots == 3  # what the autoscaler samples still sees the draining requests
    for replica in held:
        pool.release(replica)
    assert pool.busy_slots == 0 and gone.connections._closed  # drained: dropped, its connections closed
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    assert pool.replicas["127.0.0.1:1"] is not gone and pool.replicas["127.0.0.1:1"].in_flight == 0


@pytest.mark.parametrize("idle", [0, 1, 2])
@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_the_idle_replica_is_picked_wherever_the_turn_starts(idle: int, turns: int) -> None:
    """Least busy wins over the round-robin turn: with loads (1, 1, 0) in any order, and the turn starting at any
    of them, the idle replica gets the request, not the first one with a free slot."""
    pool = ReplicaPool(slots_per_replica=2, max_wait_s=0.05)
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    pool.set_addresses(addresses)
    held = [await pool.acquire() for _ in addresses]
    assert sorted(r.address for r in held) == addresses  # one each
    pool.release(pool.replicas[addresses[idle]])
    for _ in range(turns):  # moves the turn on, loads unchanged
        pool.release(pool.take())
    assert [r.in_flight for r in pool.replicas.values()] == [int(i != idle) for i in range(3)]
    assert (await pool.acquire()).address == addresses[idle]


async def test_a_slot_freed_while_a_request_waits_goes_to_it_not_to_a_newcomer() -> None:
    """First come, first served in the very tick a slot frees: a request arriving then (the relay's take(), no
    await) gets nothing and waits behind the one already in line."""
    pool = ReplicaPool(slots_per_replica=1, max_wait_s=1.0)
    pool.set_addresses(["127.0.0.1:1"])
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    assert pool.queued == 1
    pool.release(held)
    assert pool.take() is None
    assert (await asyncio.wait_for(waiter, 0.1)) is held and held.in_flight == 1


async def test_a_retired_pool_turns_requests_away_at_once_even_with_free_slots() -> None:
    """A version a reload removed takes no new request: acquire raises Retired before taking a slot, so the
    request is routed by the new config instead of going to a version that is on its way out."""
    pool = ReplicaPool(slots_per_replica=4, max_wait_s=1.0)
    pool.set_addresses(["127.0.0.1:1"])
    pool.retire()
    started = asyncio.get_running_loop().time()
    with pytest.raises(Retired):
        await pool.acquire()
    assert asyncio.get_running_loop().time() - started < 0.5
    assert pool.busy_slots == 0 and pool.queued == 0


async def test_a_retired_pools_idle_connections_close_and_a_busy_one_after_its_answer() -> None:
    """They stayed open until the replicas' keep-alive (65 s) closed them."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        pool = ReplicaPool(slots_per_replica=4, max_wait_s=1.0)
        pool.set_addresses([address])
        connections = pool.replicas[address].connections
        idle, busy = await connections.connect(), await connections.connect()
        idle.done(True)  # back in the pool, idle
        pool.retire()
        assert idle.closed and not busy.closed
        busy.done(True)  # its answer is in: not put back, closed
        assert busy.closed and connections.idle() is None
    finally:
        listener.close()


async def test_those_waiting_are_told_when_the_last_ready_replica_leaves() -> None:
    """Not before: while one replica is left, the queue waits for its slots."""
    pool = ReplicaPool(slots_per_replica=1, max_wait_s=5.0)
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    first, second = await pool.acquire(), await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.set_addresses([second.address])
    await asyncio.sleep(0.01)
    assert not waiter.done() and pool.queued == 1
    pool.set_addresses([])
    with pytest.raises(Emptied):
        await waiter
    assert pool.queued == 0
    pool.release(first)
    pool.release(second)
    assert pool.busy_slots == 0


async def test_a_request_whose_version_emptied_waits_no_longer_than_it_would_have() -> None:
    """With no version to stand in (reroute picks the same one), what is left of the first wait, then
    503 NoReadyReplicas: a replica gone is not a second max_request_wait_time."""
    config = VersionConfig(name="v1", deployment="iris", is_default=True, max_request_wait_time_ms=400,
                           autoscale=AutoscaleConfig(enabled=False))
    version = VersionState(config, ReplicaPool(slots_per_replica=1, max_wait_s=0.4), ("service", "iris", "v1", "service"), None)
    version.pool.set_addresses(["127.0.0.1:1"])
    held = version.pool.take()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(acquire(version, lambda: version))
    await asyncio.sleep(0.2)
    version.pool.set_addresses([])
    with pytest.raises(HttpError) as refused:
        await waiting
    assert (refused.value.status, refused.value.code) == (503, "NoReadyReplicas")
    assert 0.35 <= loop.time() - started < 0.55
    version.pool.release(held)


async def test_a_refresh_that_finds_no_ready_replica_again_does_not_tell_the_waiters_again() -> None:
    """Told once, when the last one leaves; a backend that republishes the same (all ejected) set keeps
    those who chose to wait again where they are."""
    pool = ReplicaPool(slots_per_replica=1, max_wait_s=5.0)
    pool.set_addresses(["127.0.0.1:1"])
    pool.eject(pool.replicas["127.0.0.1:1"])
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.set_addresses(["127.0.0.1:1"])
    await asyncio.sleep(0.01)
    assert not waiter.done() and pool.queued == 1
    pool.readmit("127.0.0.1:1")
    assert (await waiter).address == "127.0.0.1:1"


async def test_a_request_whose_replica_refused_waits_ahead_of_those_that_queued_after_its_turn() -> None:
    """It had its turn: retried on another replica, it went behind every request that had queued meanwhile."""
    config = VersionConfig(name="v1", deployment="iris", is_default=True, max_request_wait_time_ms=2000,
                           autoscale=AutoscaleConfig(enabled=False))
    version = VersionState(config, ReplicaPool(slots_per_replica=1, max_wait_s=2.0), ("service", "iris", "v1", "service"), None)
    with socket.socket() as gone, socket.socket() as live:
        gone.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        live.bind(("127.0.0.1", 0))
        live.listen()  # connects (the kernel's backlog), answers nothing: enough for a slot
        dead, alive = (f"127.0.0.1:{s.getsockname()[1]}" for s in (gone, live))
        version.pool.set_addresses([dead, alive])
        slots = {r.address: r for r in (version.pool.take(), version.pool.take())}
        queued = asyncio.create_task(version.pool.acquire())
        await asyncio.sleep(0.01)
        retried = asyncio.create_task(connect(version, slots[dead]))
        await asyncio.sleep(0.05)
        assert version.pool.queued == 2 and version.pool.replicas[dead].ejected
        version.pool.release(slots[alive])
        replica, connection = await asyncio.wait_for(retried, 1.0)
        assert replica.address == alive and not queued.done()
        connection.close()
        version.pool.release(replica)
        assert (await asyncio.wait_for(queued, 1.0)).address == alive


async def test_light_sequential_load_takes_each_idle_replica_in_turn() -> None:
    """One request at a time finds every replica idle: the turn moves on, so each replica gets some and stays warm
    (a model's first requests after a long idle are slow), where always starting at the first one sent it all."""
    pool = ReplicaPool(max_wait_s=0.05)
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    pool.set_addresses(addresses)
    picked = []
    for _ in range(len(addresses)):
        replica = await pool.acquire()
        picked.append(replica.address)
        pool.release(replica)
    assert sorted(picked) == addresses


async def test_an_ejected_replicas_slots_are_no_capacity_to_the_autoscaler() -> None:
    """total_slots is the capacity utilization divides by: an ejected replica's slots serve nothing, and counted
    they hid a version running at twice its target behind half of it, so no replica was added."""
    pool = ReplicaPool(slots_per_replica=2, max_wait_s=0.05)
    pool.set_addresses(["127.0.0.1:1", "127.0.0.1:2"])
    assert pool.total_slots == 4
    pool.eject(pool.replicas["127.0.0.1:1"])
    assert pool.total_slots == 2
    pool.readmit("127.0.0.1:1")
    assert pool.total_slots == 4
