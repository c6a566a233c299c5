"""Autoscaler: Azure ML's utilization rule for one version, without the flapping.

utilization = busy slots / all slots. Demand (requests in flight plus those queued) is sampled
every 100 ms and averaged over each `refresh_seconds`; then

    desired = ceil(demand / (slots_per_replica * target_utilization / 100)), clamped to [min, max].

Above the current count it scales up at once. Below it waits until utilization has stayed
under the target for `scale_down_delay_seconds`, then goes down to the *largest* desired count
seen in that window: a load that merely wobbles never takes replicas away, so the count settles.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field

from router_image.config import AutoscaleConfig
from router_image.pool import ReplicaPool

SAMPLE_S = 0.1


@dataclass
class Decision:
    current: int
    desired: int
    utilization: float
    reason: str


@dataclass
class Autoscaler:
    config: AutoscaleConfig
    pool: ReplicaPool
    current: int
    _samples: list[float] = field(default_factory=list)
    _window: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _below_since: float | None = None
    _last_decision: float = 0.0
    utilization: float = 0.0

    def sample(self, remote: float = 0.0) -> None:
        """`remote`: the demand other router pods see for this version (kubernetes backend's leader)."""
        self._samples.append(self.pool.busy_slots + self.pool.queued + remote)

    def resume(self, current: int) -> None:
        """Scaling starts (again) here: from the actual count, with no history from before."""
        self.current = current
        self._samples.clear()
        self._window.clear()
        self._below_since = None

    def desired_for(self, demand: float) -> int:
        per_replica = self.pool.slots_per_replica * self.config.target_utilization / 100
        want = math.ceil(round(demand / per_replica, 6))
        return max(self.config.min_replicas, min(self.config.max_replicas, max(want, 1)))

    def decide(self, now: float | None = None) -> Decision | None:
        """Called every refresh period; returns a change of replica count, or None."""
        now = time.monotonic() if now is None else now
        demand = sum(self._samples) / len(self._samples) if self._samples else 0.0
        self._samples.clear()
        slots = self.current * self.pool.slots_per_replica
        self.utilization = demand / slots if slots else (1.0 if demand else 0.0)
        desired = self.desired_for(demand)
        delay = self.config.scale_down_delay_seconds
        self._window.append((now, desired))
        while self._window and self._window[0][0] < now - delay:
            self._window.popleft()
        if desired > self.current:
            self._below_since = None
            return self._change(desired, now, f"utilization {self.utilization:.0%} above target {self.config.target_utilization}%")
        if self.utilization * 100 >= self.config.target_utilization:
            self._below_since = None
            return None
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since < delay:
            return None
        target = max(d for _, d in self._window)
        if target >= self.current:
            return None
        self._below_since = now
        return self._change(target, now, f"utilization below {self.config.target_utilization}% for {delay:g} s")

    def _change(self, desired: int, now: float, reason: str) -> Decision:
        decision = Decision(self.current, desired, self.utilization, reason)
        self.current = desired
        self._last_decision = now
        return decision
