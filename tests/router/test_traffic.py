"""TrafficSplit: percentiles, the default takes the remainder, a pin wins."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router_image.traffic import TrafficSplit


def test_percentiles_then_the_default_takes_the_rest() -> None:
    split = TrafficSplit.of([("blue", 30, False), ("green", 20, False), ("red", 0, True)])
    assert split.pick(draw=0) == "blue"
    assert split.pick(draw=29.99) == "blue"
    assert split.pick(draw=30) == "green"
    assert split.pick(draw=49.99) == "green"
    assert split.pick(draw=50) == "red"
    assert split.pick(draw=99.99) == "red"


def test_proportions_over_many_draws() -> None:
    split = TrafficSplit.of([("control", 0, True), ("treatment", 10, False)])
    counts = Counter(split.pick() for _ in range(20_000))
    assert abs(counts["treatment"] / 20_000 - 0.10) < 0.015  # ~7 standard deviations


@pytest.mark.parametrize(("uniform", "version"), [(0.0, "treatment"), (0.0999, "treatment"), (0.1001, "control"),
                                                  (0.5, "control"), (0.9999, "control")])
def test_a_draw_is_scaled_to_percent_exactly(monkeypatch, uniform: float, version: str) -> None:
    """random.random() in [0, 1) is a percent in [0, 100): scaled by anything else a 10 % version gets 9 % or 11 %,
    which the sampled proportions above cannot tell apart; draws either side of the bound can."""
    monkeypatch.setattr(random, "random", lambda: uniform)
    split = TrafficSplit.of([("control", 0, True), ("treatment", 10, False)])
    assert split.pick() == version


def test_pin_wins_and_the_first_version_is_the_default_when_none_is_marked() -> None:
    split = TrafficSplit.of([("a", 0, False), ("b", 100, False)])
    assert split.default == "a"
    assert split.pick(draw=10) == "b"
    assert split.pick("a", draw=10) == "a"
