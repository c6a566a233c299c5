"""TrafficSplit: which version of an endpoint serves a request.

Each version takes its traffic_percentile of the requests; whatever the percentiles leave
goes to the default version (Azure ML's endpoint rule). A client may pin a version by name
with the `azureml-model-deployment` header, for A/B debugging.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

PIN_HEADER = b"azureml-model-deployment"  # also names the version in every answer


@dataclass(frozen=True)
class TrafficSplit:
    names: tuple[str, ...]
    # Cumulative upper bounds in percent, one per version; the default takes what is left.
    bounds: tuple[float, ...]
    default: str

    @classmethod
    def of(cls, versions: list[tuple[str, float, bool]]) -> TrafficSplit:
        """From (name, traffic_percentile, is_default) triples."""
        names, bounds, total = [], [], 0.0
        for name, percentile, _ in versions:
            if percentile > 0:
                total += percentile
                names.append(name)
                bounds.append(total)
        default = next((n for n, _, d in versions if d), versions[0][0])
        return cls(tuple(names), tuple(bounds), default)

    def pick(self, pinned: str | None = None, draw: float | None = None) -> str:
        if pinned is not None:
            return pinned
        if not self.bounds:
            return self.default
        x = random.random() * 100 if draw is None else draw
        i = bisect.bisect_right(self.bounds, x)
        return self.names[i] if i < len(self.names) else self.default
