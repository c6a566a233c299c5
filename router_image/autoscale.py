"""Autoscaler: Azure ML's utilization rule for one version, without the flapping.

Demand = requests in flight plus those queued (across all router pods), sampled every SAMPLE_S:

    utilization = demand / (replicas * slots_per_replica)
    desired     = ceil(demand / (slots_per_replica * target_utilization / 100)), clamped to [min, max]

Up: checked at every sample, on demand averaged over the last `refresh_seconds`, once the
average over the steady window (`scale_down_delay_seconds`, at most STEADY_WINDOW_S) wants more
too; at once, on the recent average alone, when it wants twice the count or more (Knative's
panic). A load step is answered within a few hundred milliseconds (Azure ML promises about a
second); a steady load's second-to-second noise, which follows a Poisson law, is not: on recent
averages alone the count rose to each peak and sank after each delay, 14-137 changes an hour in
simulation, settled at 1.3-1.8 times what the mean wants. Down: only once utilization has stayed under the target for
`scale_down_delay_seconds`, and then only to the *largest* count the recent averages wanted
during that window, counting replicas that are not serving yet as busy (the HPA does the same),
so a model slow to load is not taken for a fall in load; for STARTING_GRACE_S after the latest of
them started, not for ever: a version whose replicas never get ready (a crash loop, an image that
does not pull, no GPU node) held its count, at max_replicas, idle. After a step down the delay starts
again, so it never drops twice in one window.

The router's own pods (`RouterScaler`, kubernetes backend) follow the same rule on CPU: demand
= cores the pods use, a replica's slots = the cores each requests. And, as azureml-fe does, they
scale out when the time to route rises: routing latency is how late a router's event loop runs
its 100 ms sampling timer, which is the wait every request arriving then has before the router
reads it, and it costs nothing per request. Over `max_routing_latency_ms` (the pods' mean)
adds one pod at a time, each once the previous step's pods are ready (a pod starting takes
seconds, during which the latency it will relieve stays high), and holds off scaling in.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from dataclasses import dataclass, field

from router_image.config import AutoscaleConfig, RouterScaleConfig

SAMPLE_S = 0.1
OWN_LOAD_WINDOW_S = 5.0  # a router pod's CPU and routing latency: averaged over this
STEP_SETTLE_S = 60.0  # a latency step waits for the last step's pods to be ready, at most this long
STEADY_WINDOW_S = 60.0  # Knative's stable window: the router pods' 5 minutes of delay would answer a rise late
PANIC_FACTOR = 2  # a recent average that wants this many times the count is answered at once
# How long replicas not serving yet count as busy on the way down: a GPU node the cluster autoscaler adds, a large
# image's pull and a model's load take minutes together; the HPA waits 5 minutes for a pod's CPU to settle.
STARTING_GRACE_S = 600.0


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    utilization: float
    reason: str

    @property
    def direction(self) -> str:
        return "up" if self.desired > self.current else "down"


@dataclass
class Autoscaler:
    config: AutoscaleConfig
    slots_per_replica: float
    current: int
    utilization: float = 0.0
    _samples: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    _desired: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _below_since: float | None = None
    _last_refresh: float = float("-inf")
    _starting: int = 0  # replicas not serving yet at the last sample
    _starting_since: float = float("-inf")  # when their count last rose: the newest of them started then

    def desired_for(self, demand: float) -> int:
        per_replica = self.slots_per_replica * self.config.target_utilization / 100
        want = math.ceil(round(demand / per_replica, 6))
        return max(self.config.min_replicas, min(self.config.max_replicas, want))

    def resume(self, current: int) -> None:
        """Scaling starts (again) here, e.g. on winning the Lease: from the actual count, no history."""
        self.current = current
        self._samples.clear()
        self._desired.clear()
        self._below_since = None
        self._last_refresh = float("-inf")
        self._starting, self._starting_since = 0, float("-inf")

    def observe(self, demand: float, now: float, at_least: int = 0, starting: int = 0) -> Decision | None:
        """Record one sample of demand; returns a change of replica count, or None.
        `at_least`: a count wanted for another reason, counted as if the demand had asked for it.
        `starting`: replicas of the count not serving yet, counted as busy on the way down (STARTING_GRACE_S)."""
        samples, config = self._samples, self.config
        if starting > self._starting:
            self._starting_since = now
        self._starting = starting
        if now - self._starting_since >= STARTING_GRACE_S:
            starting = 0
        samples.append((now, demand))
        while samples[0][0] <= now - max(min(config.scale_down_delay_seconds, STEADY_WINDOW_S), config.refresh_seconds):
            samples.popleft()
        recent, count = 0.0, 0
        for t, d in reversed(samples):
            if t <= now - config.refresh_seconds:
                break
            recent, count = recent + d, count + 1
        recent /= count
        slots = self.current * self.slots_per_replica
        self.utilization = recent / slots if slots else (1.0 if recent else 0.0)
        wanted = max(self.desired_for(recent), min(at_least, config.max_replicas))
        if self.current > config.max_replicas:  # a reload lowered the bound: it holds at once
            return self._set(config.max_replicas, f"max_replicas is {config.max_replicas}")
        if wanted > self.current:
            if wanted == config.min_replicas and self.utilization * 100 <= config.target_utilization:
                return self._set(wanted, f"min_replicas is {config.min_replicas}")  # a reload raised it
            steady = self.desired_for(sum(d for _, d in samples) / len(samples))  # only here: a step up is rare
            if wanted >= PANIC_FACTOR * self.current or steady > self.current or at_least > self.current:
                return self._set(max(wanted, steady), f"utilization {self.utilization:.0%} over target "
                                                     f"{config.target_utilization}%")
        busy = recent + starting * self.slots_per_replica
        self._remember(self.desired_for(busy), busy / slots if slots else 1.0, now)
        if now - self._last_refresh < config.refresh_seconds:
            return None
        self._last_refresh = now
        return self._maybe_down(now)

    def _set(self, desired: int, reason: str) -> Decision:
        """A change not made by the way down: the window of a step down starts afresh."""
        self._below_since = None
        self._desired.clear()
        return self._change(desired, reason)

    def _remember(self, desired: int, utilization: float, now: float) -> None:
        """Every sample's count and utilization count for a step down, not only those at the refresh: a
        burst between two refreshes, which scaled up, was missed, so the count dropped under it and rose
        at the next, forever. `_desired` keeps only counts no later one exceeds: its first is the window's max."""
        while self._desired and self._desired[-1][1] <= desired:
            self._desired.pop()
        self._desired.append((now, desired))
        if utilization * 100 >= self.config.target_utilization:
            self._below_since = None
        elif self._below_since is None:
            self._below_since = now

    def _maybe_down(self, now: float) -> Decision | None:
        delay = self.config.scale_down_delay_seconds
        if self._below_since is None or now - self._below_since < delay:
            return None
        # A sample within refresh_seconds of going under still averages in the demand that was over the
        # target: counted, a load that ended came down in two delays, first to a count its fading average wanted.
        start = max(now - delay, self._below_since + self.config.refresh_seconds)
        while self._desired and self._desired[0][0] < start:
            self._desired.popleft()
        if not self._desired or self._desired[0][1] >= self.current:
            return None
        target = self._desired[0][1]
        self._below_since = now
        return self._change(target, f"utilization under {self.config.target_utilization}% for {delay:g} s")

    def _change(self, desired: int, reason: str) -> Decision:
        decision = Decision(self.current, desired, self.utilization, reason)
        self.current = desired
        return decision


@dataclass(frozen=True)
class PodLoad:
    """One router pod's own load, as it reports it to the leader."""

    cpu_cores: float
    routing_latency_ms: float
    ready: bool = True


class OwnLoad:
    """This router process's CPU and routing latency over the last OWN_LOAD_WINDOW_S."""

    def __init__(self) -> None:
        self._cpu: collections.deque[tuple[float, float]] = collections.deque()  # (now, process CPU seconds)
        self._lag: collections.deque[tuple[float, float]] = collections.deque()  # (now, seconds late)

    def sample(self, lag_s: float, now: float) -> None:
        self._cpu.append((now, time.process_time()))
        self._lag.append((now, max(lag_s, 0.0)))
        for window in (self._cpu, self._lag):
            while len(window) > 1 and window[0][0] < now - OWN_LOAD_WINDOW_S:
                window.popleft()

    def figures(self) -> PodLoad:
        cpu = self._cpu
        span = cpu[-1][0] - cpu[0][0] if len(cpu) > 1 else 0.0
        cores = (cpu[-1][1] - cpu[0][1]) / span if span > 0 else 0.0
        latency = sum(lag for _, lag in self._lag) / len(self._lag) * 1000 if self._lag else 0.0
        return PodLoad(round(cores, 4), round(latency, 3))


class RouterScaler:
    """The router Deployment's replica count (see the module's docstring)."""

    def __init__(self, config: RouterScaleConfig, current: int) -> None:
        self.config = config
        self.cpu = Autoscaler(config.autoscale, config.cpu_cores, current)
        self._stepped_at = float("-inf")

    @property
    def current(self) -> int:
        return self.cpu.current

    def resume(self, current: int) -> None:
        self.cpu.resume(current)
        self._stepped_at = float("-inf")

    def observe(self, pods: list[PodLoad], now: float) -> Decision | None:
        """`pods`: every router pod's load, this one's included."""
        current = self.cpu.current
        cores = sum(p.cpu_cores for p in pods)
        latency_ms = sum(p.routing_latency_ms for p in pods) / len(pods)
        slow = latency_ms > self.config.max_routing_latency_ms
        settled = sum(p.ready for p in pods) >= current or now - self._stepped_at >= STEP_SETTLE_S
        decision = self.cpu.observe(cores, now, at_least=(current + 1 if settled else current) if slow else 0)
        if decision is None or decision.direction == "down":
            return decision
        self._stepped_at = now
        if decision.desired > self.cpu.desired_for(cores):
            decision = dataclasses.replace(decision, reason=f"routing latency {latency_ms:.1f} ms over "
                                                            f"{self.config.max_routing_latency_ms:g} ms")
        return decision
