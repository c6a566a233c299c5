"""RouterConfig: what a router refuses to load, with a message that names the route."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router_image.config import AuthConfig, AutoscaleConfig, RouteConfig, RouterConfig, RouterScaleConfig, VersionConfig

TOKENS = AuthConfig(key_enabled=False, token_enabled=True)


def route(kind: str, name: str, *deployments: str) -> RouteConfig:
    return RouteConfig(kind=kind, name=name, auth=TOKENS, versions=[
        VersionConfig(name=f"v{i}", deployment=d, is_default=i == 0) for i, d in enumerate(deployments)])


def test_percentiles_summing_to_100_in_decimal_pass() -> None:
    versions = [VersionConfig(name=f"v{i}", deployment=f"d{i}", traffic_percentile=p, is_default=i == 0)
                for i, p in enumerate((26.4, 70.4, 3.2))]  # 100.00000000000001 as floats
    RouteConfig(kind="endpoint", name="ep", versions=versions)
    over = [v.model_copy(update={"traffic_percentile": v.traffic_percentile + 0.001}) for v in versions]
    with pytest.raises(ValidationError, match="endpoint ep: traffic percentiles sum over 100"):
        RouteConfig(kind="endpoint", name="ep", versions=over)


def test_a_service_and_an_endpoint_of_one_name_are_refused() -> None:
    """A token's audience is the bare route name: the two would admit each other's tokens."""
    with pytest.raises(ValidationError, match="route names declared twice .*: iris"):
        RouterConfig(routes=[route("service", "iris", "svc-iris"), route("endpoint", "iris", "ep-iris")])
    with pytest.raises(ValidationError, match="route names declared twice .*: iris"):
        RouterConfig(routes=[route("service", "iris", "a"), route("service", "iris", "b")])
    RouterConfig(routes=[route("service", "iris", "svc-iris"), route("endpoint", "iris-ab", "ep-iris")])


def test_two_versions_naming_one_deployment_are_refused() -> None:
    with pytest.raises(ValidationError, match="deployment iris-ab-treatment named by both service iris-ab-treatment "
                                              "version v0 and endpoint iris-ab version v1"):
        RouterConfig(routes=[route("service", "iris-ab-treatment", "iris-ab-treatment"),
                             route("endpoint", "iris-ab", "iris-ab-control", "iris-ab-treatment")])
    with pytest.raises(ValidationError, match="deployment d named by both endpoint ep version v0 and endpoint ep version v1"):
        RouterConfig(routes=[route("endpoint", "ep", "d", "d")])
    with pytest.raises(ValidationError, match="deployment model-router named by both router_scale and service s"):
        RouterConfig(backend="kubernetes", peers={"service": "peers"}, routes=[route("service", "s", "model-router")],
                     router_scale=RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=AutoscaleConfig()))


def test_scaling_to_zero_is_refused() -> None:
    """The utilization autoscaler counts busy slots: at zero replicas there are none to count."""
    with pytest.raises(ValidationError, match="min_replicas\n  Input should be greater than or equal to 1"):
        AutoscaleConfig(min_replicas=0)


def test_a_stopping_router_drains_for_its_slowest_versions_queue_wait_and_scoring() -> None:
    slow = VersionConfig(name="slow", deployment="d-slow", scoring_timeout_ms=120_000, max_request_wait_time_ms=2_000)
    quick = VersionConfig(name="quick", deployment="d-quick", scoring_timeout_ms=1_000)
    config = RouterConfig(routes=[RouteConfig(kind="service", name="a", versions=[quick]),
                                  RouteConfig(kind="service", name="b", versions=[slow])])
    assert config.drain_seconds == 122.0
    assert RouterConfig(routes=[]).drain_seconds == 0.0
