"""RouteTable: the config's routes as the request path needs them, rebuilt on every reload.

A rebuild keeps each deployment's ReplicaPool and Autoscaler (its in-flight counts, queue and
scaling history), so a new version or a new traffic split takes effect for the next request
while requests already in flight finish where they are: a reload drops nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router_image import metrics
from router_image.autoscale import Autoscaler
from router_image.config import RouteConfig, RouterConfig, VersionConfig
from router_image.pool import ReplicaPool
from router_image.traffic import PIN_HEADER, TrafficSplit


@dataclass
class VersionState:
    config: VersionConfig
    pool: ReplicaPool
    labels: tuple[str, str, str, str]  # kind, route, version, role (metrics.LABELS)
    autoscaler: Autoscaler | None  # None: fixed replicas
    stats: metrics.RequestStats = field(init=False)
    response_header: tuple[bytes, bytes] = field(init=False)  # the one naming the version that answered
    response_line: bytes = field(init=False)  # the same as a header line (relay.py)
    timeout_s: float = field(init=False)  # scoring_timeout_ms in seconds (relay.Deadlines)

    def __post_init__(self) -> None:
        self.timeout_s = self.config.scoring_timeout_ms / 1000
        self.stats = metrics.request_stats(self.labels)
        self.response_header = (PIN_HEADER, self.config.name.encode())
        self.response_line = b"%s: %s\r\n" % self.response_header


@dataclass
class RouteState:
    config: RouteConfig
    split: TrafficSplit
    versions: dict[str, VersionState]
    default: VersionState = field(init=False)
    key_id: str = field(init=False)  # config.key_id, made once (the auth check needs it per request)
    labels: tuple[str, str] = field(init=False)  # kind, name: the route's errors' labels (metrics.count_error)

    def __post_init__(self) -> None:
        self.default = self.versions[self.split.default]
        self.key_id = self.config.key_id
        self.labels = (self.config.kind, self.config.name)

    def stand_in(self, version: VersionState) -> VersionState:
        """Who serves a request picked for `version` while it has no ready replica: the default, else
        any version with one, else `version` itself (the request queues for it)."""
        if self.default.pool.any_ready():
            return self.default
        return next((v for v in self.versions.values() if v.pool.any_ready()), version)


def _role(route: RouteConfig, v: VersionConfig) -> str:
    if route.kind == "service":
        return "service"
    return "control" if v.is_control else "treatment"


@dataclass
class RouteTable:
    config: RouterConfig
    routes: dict[tuple[str, str], RouteState]
    pools: dict[str, ReplicaPool]  # by deployment
    autoscalers: dict[str, Autoscaler]  # by deployment; none when replicas are fixed
    by_score_path: dict[bytes, RouteState] = field(init=False)  # the fast path's one lookup (Router.fast)

    def __post_init__(self) -> None:
        self.by_score_path = {f"/api/v1/{kind}/{name}/score".encode(): route
                              for (kind, name), route in self.routes.items()}

    @classmethod
    def build(cls, config: RouterConfig, previous: RouteTable | None = None) -> RouteTable:
        """Route states for `config`, reusing `previous` pools and autoscalers by deployment (each
        deployment is one version's, config.py). The pools and autoscalers it shares with `previous`
        get this config's limits only from `take_effect`: building changes nothing that runs. A new
        autoscaler starts at min_replicas; the router resumes it from what the backend runs."""
        old_pools = previous.pools if previous else {}
        old_scalers = previous.autoscalers if previous else {}
        routes: dict[tuple[str, str], RouteState] = {}
        pools: dict[str, ReplicaPool] = {}
        scalers: dict[str, Autoscaler] = {}
        for route in config.routes:
            versions = {}
            for v in route.versions:
                pools[v.deployment] = pool = old_pools.get(v.deployment) or ReplicaPool()
                if v.autoscale.enabled:
                    scaler = old_scalers.get(v.deployment)
                    if scaler is None:
                        scaler = Autoscaler(v.autoscale, v.replica_max_concurrent_requests, v.autoscale.min_replicas)
                    scalers[v.deployment] = scaler
                versions[v.name] = VersionState(v, pool, (route.kind, route.name, v.name, _role(route, v)),
                                                scalers.get(v.deployment))
            split = TrafficSplit.of([(v.name, v.traffic_percentile, v.is_default) for v in route.versions])
            routes[(route.kind, route.name)] = RouteState(route, split, versions)
        return cls(config, routes, pools, scalers)

    def take_effect(self) -> None:
        """Give each version's pool and autoscaler this table's limits, as it goes live (a reload
        that fails after the build leaves the running table's limits as they were)."""
        for route in self.routes.values():
            for v in route.versions.values():
                slots = v.config.replica_max_concurrent_requests
                v.pool.configure(slots, v.config.max_request_wait_time_ms / 1000)
                if v.autoscaler is not None:
                    v.autoscaler.config, v.autoscaler.slots_per_replica = v.config.autoscale, slots

    def labels(self, scaled_only: bool = False) -> set[tuple[str, str, str, str]]:
        """The metric labels of every version (or of those the router scales)."""
        return {v.labels for r in self.routes.values() for v in r.versions.values()
                if not scaled_only or v.autoscaler is not None}

    def versions(self) -> list[VersionConfig]:
        return [v for r in self.config.routes for v in r.versions]

    def demand(self) -> dict[str, int]:
        """Requests in flight or queued per deployment: what this router adds to the autoscaler's view."""
        return {d: p.busy_slots + p.queued for d, p in self.pools.items()}
