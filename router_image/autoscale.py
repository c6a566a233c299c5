"""Autoscaler: Azure ML's utilization rule for one version, without the flapping.

Demand = requests in flight plus those queued (across all router pods), sampled every
SAMPLE_S and averaged over the last `refresh_seconds`:

    utilization = demand / (replicas * slots_per_replica)
    desired     = ceil(demand / (slots_per_replica * target_utilization / 100)), clamped to [min, max]

Up: checked at every sample, so a load step is answered within a few hundred milliseconds
(Azure ML promises about a second). Down: only once utilization has stayed under the target
for `scale_down_delay_seconds`, and then only to the *largest* count desired during that
window: a load that wobbles keeps its replicas, so under steady load the count settles.
After a step down the delay starts again, so it never drops twice in one window.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

from router_image.config import AutoscaleConfig

SAMPLE_S = 0.1


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
    slots_per_replica: int
    current: int
    utilization: float = 0.0
    _samples: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    _desired: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _below_since: float | None = None
    _last_refresh: float = float("-inf")

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

    def observe(self, demand: float, now: float) -> Decision | None:
        """Record one sample of demand; returns a change of replica count, or None."""
        self._samples.append((now, demand))
        while self._samples[0][0] <= now - self.config.refresh_seconds:
            self._samples.popleft()
        average = sum(d for _, d in self._samples) / len(self._samples)
        slots = self.current * self.slots_per_replica
        self.utilization = average / slots if slots else (1.0 if average else 0.0)
        desired = self.desired_for(average)
        if self.current > self.config.max_replicas:  # a reload lowered the bound: it holds at once
            self._below_since = None
            self._desired.clear()
            return self._change(self.config.max_replicas, f"max_replicas is {self.config.max_replicas}")
        if desired > self.current:
            self._below_since = None
            self._desired.clear()
            return self._change(desired, f"utilization {self.utilization:.0%} over target "
                                         f"{self.config.target_utilization}%")
        if now - self._last_refresh < self.config.refresh_seconds:
            return None
        self._last_refresh = now
        return self._maybe_down(desired, now)

    def _maybe_down(self, desired: int, now: float) -> Decision | None:
        delay = self.config.scale_down_delay_seconds
        self._desired.append((now, desired))
        while self._desired[0][0] < now - delay:
            self._desired.popleft()
        if self.utilization * 100 >= self.config.target_utilization:
            self._below_since = None
            return None
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since < delay:
            return None
        target = max(d for _, d in self._desired)
        if target >= self.current:
            return None
        self._below_since = now
        return self._change(target, f"utilization under {self.config.target_utilization}% for {delay:g} s")

    def _change(self, desired: int, reason: str) -> Decision:
        decision = Decision(self.current, desired, self.utilization, reason)
        self.current = desired
        return decision
