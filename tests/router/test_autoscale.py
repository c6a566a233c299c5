"""Autoscaler: Azure ML's rule, up at once, down after the delay to the window's max, no flapping."""

from __future__ import annotations

import collections
import math
import random
import time

from router_image.autoscale import (OWN_LOAD_WINDOW_S, SAMPLE_S, STARTING_GRACE_S, STEP_SETTLE_S, Autoscaler, Decision,
                                   OwnLoad, PodLoad, RouterScaler)
from router_image.config import AutoscaleConfig, RouterScaleConfig


def scaler(current: int = 1, **settings) -> Autoscaler:
    config = AutoscaleConfig(**{"min_replicas": 1, "max_replicas": 10, "target_utilization": 70,
                                "refresh_seconds": 1.0, "scale_down_delay_seconds": 60.0, **settings})
    return Autoscaler(config, slots_per_replica=1, current=current)


def run(s: Autoscaler, demand, start: float, seconds: float) -> list[tuple[float, int]]:
    """Feed `demand(t)` every SAMPLE_S; the (time, count) of each change."""
    changes = []
    steps = round(seconds / SAMPLE_S)
    for i in range(1, steps + 1):
        t = start + i * SAMPLE_S
        decision = s.observe(demand(t), t)
        if decision is not None:
            changes.append((round(t - start, 2), decision.desired))
    return changes


def test_desired_is_demand_over_target_slots_clamped() -> None:
    s = scaler()
    assert s.desired_for(0) == 1  # min
    assert s.desired_for(0.7) == 1
    assert s.desired_for(0.71) == 2
    assert s.desired_for(7) == 10
    assert s.desired_for(70) == 10  # max
    s.slots_per_replica = 4
    assert s.desired_for(7) == 3  # ceil(7 / 2.8)


def test_scales_up_within_a_few_samples_of_a_load_step() -> None:
    s = scaler()
    changes = run(s, lambda t: 32, 0.0, 1.0)
    assert changes == [(0.1, 10)]  # one decision, on the first sample, straight to max_replicas
    assert s.current == 10


def test_scales_down_only_after_the_delay() -> None:
    s = scaler(current=10, scale_down_delay_seconds=60)
    assert run(s, lambda t: 0, 0.0, 59.5) == []
    changes = run(s, lambda t: 0, 59.5, 3.0)
    assert len(changes) == 1 and changes[0][1] == 1
    assert 60.0 <= 59.5 + changes[0][0] <= 61.5


def test_steady_wobbling_load_settles_and_never_flaps() -> None:
    s = scaler(current=1, scale_down_delay_seconds=10)
    # 4 to 6 requests in flight, changing every 2 s: desired between 6 and 9.
    changes = run(s, lambda t: 6 if int(t) % 4 < 2 else 4, 0.0, 120.0)
    ups = [c for c in changes if c[1] > 1]
    assert max(c[1] for c in changes) == 9
    assert all(a[1] < b[1] for a, b in zip(changes, changes[1:])), f"count went down under steady load: {changes}"
    assert changes[-1][0] < 5.0 and s.current == 9  # settled within seconds, stayed for two minutes
    assert len(ups) <= 3


def test_a_step_down_restarts_the_delay() -> None:
    s = scaler(current=10, scale_down_delay_seconds=5)
    changes = run(s, lambda t: 3 if t < 6 else 0, 0.0, 30.0)
    # 3 in flight wants 5 replicas: down to 5 after 5 s; then idle: down to 1, each step 5 s after the last
    counts = [c[1] for c in changes]
    assert counts[0] == 5 and counts[-1] == 1 and counts == sorted(counts, reverse=True)
    assert all(b[0] - a[0] >= 5.0 for a, b in zip(changes, changes[1:]))


def test_a_burst_between_two_refreshes_keeps_the_count_it_scaled_up_to() -> None:
    """A burst of 3 samples every 5 s that straddles a refresh: its peak (a 1 s average of 3.75 in flight) wants 6
    replicas, the refreshes on either side saw only 2.5 and 1.25; counted only at the refreshes, the count dropped
    to 4 after each delay and rose to 6 at the next burst, for ever. 1/8 s samples: the refreshes stay in phase."""
    s = scaler(current=6, scale_down_delay_seconds=10)
    changes = []
    for i in range(60 * 8):
        decision = s.observe(10 if i % 40 in (7, 8, 9) else 0, i / 8)
        if decision is not None:
            changes.append((i / 8, decision.desired))
    assert changes == []


def test_a_load_over_the_target_that_ends_comes_down_in_one_step() -> None:
    """The samples of the first refresh_seconds under the target average in the load that ended, and want
    counts between: counted, the count came down to one of them after the delay and to min after another."""
    for phase in (0.0, 0.03, 0.05, 0.07):
        s = scaler(current=3, max_replicas=3, refresh_seconds=0.5, scale_down_delay_seconds=3)
        changes = run(s, lambda t: 3 if t < 5 + phase else 0, 0.0, 20.0)
        assert [c[1] for c in changes] == [1], (phase, changes)
        assert 8.0 <= changes[0][0] <= 9.0


def test_resume_starts_from_the_given_count_without_history() -> None:
    s = scaler(current=1, scale_down_delay_seconds=1)
    run(s, lambda t: 5, 0.0, 1.0)
    s.resume(3)
    assert s.current == 3
    changes = run(s, lambda t: 0, 10.0, 0.5)
    assert changes == []  # no scale-down before a full delay of its own


def test_scales_down_to_the_largest_count_wanted_within_the_delay() -> None:
    s = scaler(current=10, scale_down_delay_seconds=5)
    # 3 in flight (wants 5) for 2 s, then idle (wants 1); under the target all along
    changes = run(s, lambda t: 3 if t < 2 else 0, 0.0, 12.0)
    assert [c[1] for c in changes] == [5, 1]  # not straight to 1: the window still held the 5
    assert 5.0 <= changes[0][0] <= 6.0 and changes[1][0] - changes[0][0] >= 5.0


def test_min_and_max_clamp_the_decisions() -> None:
    s = scaler(current=2, min_replicas=2, max_replicas=4, scale_down_delay_seconds=1)
    assert run(s, lambda t: 100, 0.0, 1.0) == [(0.1, 4)]
    assert [c[1] for c in run(s, lambda t: 0, 1.0, 5.0)] == [2]  # idle: down to min, not 0 or 1


def test_a_raised_min_scales_up_saying_so() -> None:
    """The log said `utilization 0% over target 70%` for a reload that raised min_replicas on an idle version."""
    s = scaler(current=1)
    s.config = s.config.model_copy(update={"min_replicas": 2})  # what a config reload does
    decision = s.observe(0, 0.1)
    assert decision is not None and (decision.desired, decision.reason) == (2, "min_replicas is 2")
    busy = scaler(current=1)
    assert "over target 70%" in busy.observe(5, 0.1).reason  # demand still says so


def test_a_lowered_max_applies_at_once_even_under_load() -> None:
    s = scaler(current=1, scale_down_delay_seconds=60)
    run(s, lambda t: 8, 0.0, 0.5)
    assert s.current == 10
    s.config = s.config.model_copy(update={"max_replicas": 3})  # what a config reload does
    assert run(s, lambda t: 8, 0.5, 0.5) == [(0.1, 3)]


def test_a_step_down_comes_exactly_delay_seconds_after_going_under_the_target() -> None:
    """The boundary, with sample times chosen rather than stepped in floats: not a sample sooner, not one later."""
    s = scaler(current=4, scale_down_delay_seconds=10)
    assert s.observe(0, 0.0) is None  # under the target from here
    assert s.observe(0, 9.0) is None
    decision = s.observe(0, 10.0)
    assert decision is not None and (decision.current, decision.desired) == (4, 1)


def test_time_spent_exactly_at_the_target_does_not_count_toward_the_delay() -> None:
    """At the target is not under it: the delay runs from when utilization went under, so a pause in the samples
    (a stalled loop) after a while at the target does not let the count drop early."""
    s = scaler(current=4, target_utilization=50, scale_down_delay_seconds=10)
    for t in range(0, 21):  # 2 in flight on 4 replicas: 50 %, for twice the delay
        assert s.observe(2, float(t)) is None
    assert s.utilization == 0.5
    assert s.observe(0, 25.0) is None  # under the target from here
    assert s.observe(0, 31.0) is None  # 11 s after the last sample at the target, only 6 s under it
    decision = s.observe(0, 35.0)
    assert decision is not None and (decision.current, decision.desired) == (4, 1)


def test_a_decision_is_up_only_when_it_adds_replicas() -> None:
    assert Decision(3, 4, 0.9, "").direction == "up"
    assert Decision(4, 3, 0.1, "").direction == "down"
    assert Decision(3, 3, 0.7, "").direction == "down"  # no growth: RouterScaler records no step for it


# ---------------------------------------------------------------- the router's own pods


def router_scaler(current: int = 2, **settings) -> RouterScaler:
    autoscale = AutoscaleConfig(**{"min_replicas": 2, "max_replicas": 6, "target_utilization": 70,
                                   "refresh_seconds": 1.0, "scale_down_delay_seconds": 60.0, **settings})
    config = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=autoscale, max_routing_latency_ms=5)
    return RouterScaler(config, current)


def pods(n: int, cores: float, latency_ms: float, ready: int | None = None) -> list[PodLoad]:
    ready = n if ready is None else ready
    return [PodLoad(cores, latency_ms, ready=i < ready) for i in range(n)]


def test_router_pods_scale_out_at_once_on_cpu_in_proportion() -> None:
    s = router_scaler()
    decision = s.observe(pods(2, 0.5, 1.0), 0.1)  # both at their whole request: 1 core / (0.5 x 70%)
    assert decision is not None and (decision.current, decision.desired) == (2, 3)
    assert "utilization" in decision.reason
    assert s.observe(pods(2, 0.5, 1.0), 0.2) is None  # the new pod is not serving yet: no runaway


def test_router_pods_scale_out_on_routing_latency_one_step_per_ready_step() -> None:
    s = router_scaler()
    decision = s.observe(pods(2, 0.2, 12.0), 0.1)  # CPU well under target, latency over 5 ms
    assert decision is not None and decision.desired == 3 and "routing latency 12.0 ms" in decision.reason
    t = 0.1
    for _ in range(50):  # 5 s with the third pod still starting: no further step
        t += SAMPLE_S
        assert s.observe(pods(3, 0.2, 12.0, ready=2), t) is None
    decision = s.observe(pods(3, 0.2, 12.0), t + SAMPLE_S)  # it is ready, latency still high
    assert decision is not None and decision.desired == 4


def test_router_latency_step_is_not_held_forever_by_a_pod_that_never_gets_ready() -> None:
    s = router_scaler()
    assert s.observe(pods(2, 0.2, 12.0), 0.0).desired == 3
    assert s.observe(pods(3, 0.2, 12.0, ready=2), STEP_SETTLE_S - 1) is None
    assert s.observe(pods(3, 0.2, 12.0, ready=2), STEP_SETTLE_S + 0.1).desired == 4


def test_router_pods_scale_in_only_after_cpu_stayed_low_and_never_while_slow() -> None:
    s = router_scaler(current=4)
    t, changes = 0.0, []
    for _ in range(round(90 / SAMPLE_S)):  # CPU low but latency high: kept
        t += SAMPLE_S
        decision = s.observe(pods(4, 0.05, 8.0), t)
        if decision is not None:
            changes.append(decision.desired)
    assert changes == [] or min(changes) >= 4  # latency may add pods; it never removes any
    s = router_scaler(current=4)
    t, changes = 0.0, []
    for _ in range(round(90 / SAMPLE_S)):
        t += SAMPLE_S
        decision = s.observe(pods(4, 0.05, 0.5), t)
        if decision is not None:
            changes.append((round(t), decision.desired))
    assert changes and 60 <= changes[0][0] <= 62 and changes[0][1] == 2  # to min, after the delay


def test_router_pods_stay_within_bounds() -> None:
    s = router_scaler(current=6)
    assert s.observe(pods(6, 0.5, 50.0), 0.1) is None  # at max: latency adds nothing


def test_own_load_measures_cpu_used_and_how_late_the_loop_runs() -> None:
    load = OwnLoad()
    load.sample(0.0, 0.0)
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # a busy loop: one core
        pass
    load.sample(0.004, 0.2)
    load.sample(0.002, 0.4)
    figures = load.figures()
    assert 0.3 <= figures.cpu_cores <= 1.2  # ~0.2 s of CPU in 0.4 s of (fake) wall time: 0.5
    assert figures.routing_latency_ms == 2.0  # (0 + 4 + 2) / 3 ms
    load.sample(0.0, 0.4 + OWN_LOAD_WINDOW_S + 1)  # the old samples leave the window
    assert load.figures().routing_latency_ms == 0.0


def test_router_pods_scale_out_on_the_mean_routing_latency_of_the_pods() -> None:
    """One pod late while the other keeps up is not the routers being short: the mean across pods decides."""
    assert router_scaler().observe([PodLoad(0.1, 9.0), PodLoad(0.1, 0.0)], 0.1) is None  # mean 4.5 ms
    decision = router_scaler().observe([PodLoad(0.1, 9.0), PodLoad(0.1, 2.0)], 0.1)  # mean 5.5 ms
    assert decision is not None and decision.desired == 3 and "routing latency 5.5 ms" in decision.reason


def test_router_latency_step_goes_through_at_once_after_resume() -> None:
    """A new scaling leader starts without history: it does not wait for a step its predecessor took to settle."""
    s = router_scaler()
    assert s.observe(pods(2, 0.2, 12.0), 0.0).desired == 3
    assert s.observe(pods(3, 0.2, 12.0, ready=2), 1.0) is None  # the last step's pod is not ready
    s.resume(3)
    decision = s.observe(pods(3, 0.2, 12.0, ready=2), 2.0)
    assert decision is not None and (decision.current, decision.desired) == (3, 4)


def test_own_load_counts_a_timer_that_fired_early_as_not_late() -> None:
    """A timer may fire a little early (a clock's granularity): negative lag is no latency, and must not cancel out
    the lateness of other samples."""
    load = OwnLoad()
    load.sample(-0.004, 0.0)
    load.sample(-0.002, 0.1)
    assert load.figures().routing_latency_ms == 0.0
    load.sample(0.003, 0.2)
    assert load.figures().routing_latency_ms == 1.0  # (0 + 0 + 3) / 3 ms


def test_resume_forgets_the_demand_sampled_before_it() -> None:
    """A router that wins the Lease back within a refresh window resumes from the count it is given: the demand it
    sampled as the previous leader is not averaged into its first decisions, which scaled a version back up that
    the other leader had rightly brought down."""
    s = scaler(current=1)
    assert s.observe(5, 0.1) is not None  # leader: a burst scales up
    s.resume(1)  # lost the Lease, won it back: the version has 1 replica and is idle
    assert s.observe(0, 0.3) is None
    assert s.current == 1 and s.utilization == 0.0


def test_a_steady_load_keeps_one_remembered_count_not_one_per_sample() -> None:
    """The counts remembered for a step down keep only those no later one exceeds: a load that holds its count for
    days must not pile up a sample's entry ten times a second (a leak of ~60 MB a day per version)."""
    s = scaler(current=2)
    assert run(s, lambda t: 1.4, 0.0, 600.0) == []  # wants 2 (70% of 2 slots), has 2: nothing to do
    assert len(s._desired) == 1


def poisson_in_flight(rate: float, seconds_each: float, seed: int = 1):
    """Requests in flight at time t (asked in increasing t) when they arrive as a Poisson process of `rate`
    per second and each takes `seconds_each`: a steady load's second-to-second noise, as production sees it."""
    rnd = random.Random(seed)
    ends: collections.deque[float] = collections.deque()
    arrival = rnd.expovariate(rate)

    def demand(t: float) -> int:
        nonlocal arrival
        while arrival <= t:
            ends.append(arrival + seconds_each)
            arrival += rnd.expovariate(rate)
        while ends and ends[0] <= t:
            ends.popleft()
        return len(ends)
    return demand


def test_a_steady_load_with_poisson_noise_settles_and_stays() -> None:
    """On recent averages alone the count rose to each of the noise's peaks and sank after each delay: 21
    requests in flight on average (1 s each) made 137 changes an hour, between 39 and 54 replicas."""
    s = scaler(current=1, max_replicas=200)
    changes = run(s, poisson_in_flight(21, 1.0), 0.0, 3600.0)
    late = [c for c in changes if c[0] > 300]
    assert len(late) <= 2, late  # settled within five minutes, then (almost) no change for 55 minutes
    assert math.ceil(21 / 0.7) <= s.current <= 1.5 * math.ceil(21 / 0.7)


def test_a_rise_to_twice_the_count_is_answered_at_once_a_smaller_one_once_the_window_wants_it_too() -> None:
    s = scaler(current=3, max_replicas=50)
    assert run(s, lambda t: 2, 0.0, 120.0) == []  # 2 in flight want 3: the count
    changes = run(s, lambda t: 3, 120.0, 60.0)  # want 5: not twice the count, and not yet the window's average
    assert changes and changes[0][1] == 5 and 3.0 <= changes[0][0] <= 15.0, changes
    changes = run(s, lambda t: 7, 180.0, 2.0)  # want 10: twice the count, as soon as the recent average says so
    assert len(changes) == 1 and changes[0][1] == 10 and changes[0][0] <= 1.0, changes


def test_replicas_not_serving_yet_are_counted_busy_so_a_slow_start_is_not_scaled_down() -> None:
    """A step to 10 replicas whose models take minutes to load: the 4 serving take what they can and the rest
    of the load gives up (503s), so demand looked under the target and the starting pods were deleted."""
    s = scaler(current=10, scale_down_delay_seconds=60)
    for i in range(1, 1800):  # three minutes at 4 in flight, 6 replicas still starting
        assert s.observe(4, i * SAMPLE_S, starting=6) is None
    changes = [d.desired for i in range(1800, 2600) if (d := s.observe(0, i * SAMPLE_S, starting=0))]
    assert changes == [1]  # all serving, then idle: down after the delay, as ever


def test_replicas_that_never_get_ready_are_counted_busy_only_for_the_grace_then_an_idle_version_scales_in() -> None:
    """A version whose pods crash at start (or never get a GPU node) scaled out under a load, then idle: counted busy
    for ever, it held max_replicas of GPU nodes for nothing."""
    s = scaler(current=10, scale_down_delay_seconds=60)
    steps = round((STARTING_GRACE_S + 60) / SAMPLE_S)
    changes = [(i * SAMPLE_S, d.desired) for i in range(1, steps + 20) if (d := s.observe(0, i * SAMPLE_S, starting=10))]
    assert len(changes) == 1 and changes[0][1] == 1, changes
    assert STARTING_GRACE_S + 60 <= changes[0][0] <= STARTING_GRACE_S + 62


def test_new_replicas_starting_get_their_own_grace() -> None:
    """One pod that never got ready must not take the grace from those a later step up starts."""
    s = scaler(current=2, scale_down_delay_seconds=60)
    start = round(STARTING_GRACE_S / SAMPLE_S)
    for i in range(1, start):  # one replica of two never ready, the other serving 1 request
        assert s.observe(1, i * SAMPLE_S, starting=1) is None
    for i in range(start, start + 10):  # a load step: 8 more start
        s.observe(20, i * SAMPLE_S, starting=1)
    assert s.current == 10
    start += 10
    steps = round((STARTING_GRACE_S - 10) / SAMPLE_S)
    assert [d for i in range(start, start + steps) if (d := s.observe(0, i * SAMPLE_S, starting=9))] == []
