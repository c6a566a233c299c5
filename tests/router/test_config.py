"""RouterConfig: what a router refuses to load, with a message that names the route."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router_image.config import (AuthConfig, AutoscaleConfig, RouteConfig, RouterConfig, RouterScaleConfig, TokenConfig,
                                 VersionConfig)

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


def test_the_defaults_are_azure_mls() -> None:
    """A version or autoscaler left unset behaves as Azure ML's AksWebservice does with the same fields unset:
    the defaults are the contract a migrated deployment relies on, not an implementation detail."""
    assert AutoscaleConfig().model_dump() == {"enabled": True, "min_replicas": 1, "max_replicas": 10,
                                              "target_utilization": 70, "refresh_seconds": 1.0,
                                              "scale_down_delay_seconds": 60.0}
    version = VersionConfig(name="v", deployment="d")
    assert (version.traffic_percentile, version.is_default, version.is_control) == (0.0, False, False)
    assert version.replica_max_concurrent_requests == 1
    assert version.max_request_wait_time_ms == 500
    assert version.scoring_timeout_ms == 60_000
    assert version.num_replicas == 1
    assert version.scorer_port == 5001
    assert version.autoscale == AutoscaleConfig()
    assert AuthConfig() == AuthConfig(key_enabled=True, token_enabled=False)
    token = TokenConfig(public_key_file="k.pem")
    assert (token.algorithm, token.issuer, token.lifetime_seconds) == ("ES256", "aks-model-serving", 3600)


def test_min_replicas_over_max_replicas_is_refused() -> None:
    AutoscaleConfig(min_replicas=3, max_replicas=3)
    with pytest.raises(ValidationError, match="min_replicas must not exceed max_replicas"):
        AutoscaleConfig(min_replicas=4, max_replicas=3)


@pytest.mark.parametrize(("target", "valid"), [(0, False), (1, True), (100, True), (101, False)])
def test_target_utilization_is_a_percent_of_at_least_one(target: int, valid: bool) -> None:
    if valid:
        AutoscaleConfig(target_utilization=target)
    else:
        with pytest.raises(ValidationError, match="target_utilization"):
            AutoscaleConfig(target_utilization=target)


def test_key_and_token_auth_together_are_refused() -> None:
    """Azure ML's rule: one or the other (or neither), never both."""
    AuthConfig(key_enabled=False, token_enabled=True)
    AuthConfig(key_enabled=False, token_enabled=False)
    with pytest.raises(ValidationError, match="key_enabled and token_enabled are exclusive"):
        AuthConfig(key_enabled=True, token_enabled=True)


def test_two_default_versions_are_refused() -> None:
    """The default takes what the percentiles leave: with two, which one would be ambiguous."""
    versions = [VersionConfig(name=f"v{i}", deployment=f"d{i}", is_default=True) for i in range(2)]
    with pytest.raises(ValidationError, match="endpoint ep: more than one default version"):
        RouteConfig(kind="endpoint", name="ep", versions=versions)
    RouteConfig(kind="endpoint", name="ep", versions=[versions[0], versions[1].model_copy(update={"is_default": False})])


@pytest.mark.parametrize(("percentile", "valid"), [(-0.1, False), (0, True), (100, True), (100.1, False)])
def test_a_traffic_percentile_is_between_0_and_100(percentile: float, valid: bool) -> None:
    if valid:
        VersionConfig(name="v", deployment="d", traffic_percentile=percentile)
    else:
        with pytest.raises(ValidationError, match="traffic_percentile"):
            VersionConfig(name="v", deployment="d", traffic_percentile=percentile)


def test_an_endpoint_holds_at_most_six_versions() -> None:
    """Azure ML's limit on an endpoint's versions."""
    versions = [VersionConfig(name=f"v{i}", deployment=f"d{i}") for i in range(7)]
    RouteConfig(kind="endpoint", name="ep", versions=versions[:6])
    with pytest.raises(ValidationError, match="versions\n  List should have at most 6 items"):
        RouteConfig(kind="endpoint", name="ep", versions=versions)


def test_a_token_must_live_at_least_a_minute() -> None:
    TokenConfig(public_key_file="k.pem", lifetime_seconds=60)
    with pytest.raises(ValidationError, match="lifetime_seconds"):
        TokenConfig(public_key_file="k.pem", lifetime_seconds=59)


def test_router_scaling_needs_the_kubernetes_backend_and_peers() -> None:
    """The scaling leader is elected among peers through a Kubernetes lease: with either missing, no pod would
    ever scale the routers."""
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, autoscale=AutoscaleConfig())
    RouterConfig(backend="kubernetes", peers={"service": "peers"}, router_scale=scale)
    for backend, peers in [("kubernetes", None), ("local", {"service": "peers"}), ("local", None)]:
        with pytest.raises(ValidationError, match="router_scale needs the kubernetes backend and peers"):
            RouterConfig(backend=backend, peers=peers, router_scale=scale)


@pytest.mark.parametrize("where, name", [("route", "a/b"), ("route", "iris%2Fx"), ("route", "two words"),
                                         ("version", "v1\r\nx-injected: 1"), ("version", "")])
def test_names_that_a_path_or_a_header_would_carry_otherwise_are_refused(where, name) -> None:
    """A route's name is matched as a path segment and a version's goes back in azureml-model-deployment: a
    hand-written config with a slash, an escape or a line break made the two paths disagree or split a header."""
    version = VersionConfig(name="v1", deployment="d1", is_default=True).model_dump()
    if where == "version":
        version["name"] = name
    with pytest.raises(ValidationError, match="versions.0.name" if where == "version" else "routes.0.name"):
        RouterConfig.model_validate({"routes": [{"kind": "endpoint", "name": name if where == "route" else "ep",
                                                 "versions": [version]}]})


def test_names_of_the_stacks_kind_and_dotted_ones_are_accepted() -> None:
    config = RouterConfig(routes=[RouteConfig(kind="endpoint", name="iris-ab", versions=[
        VersionConfig(name="v1.2_blue-3", deployment="d1", is_default=True)])])
    assert config.routes[0].versions[0].name == "v1.2_blue-3"
