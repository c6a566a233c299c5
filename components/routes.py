"""The stack's services and endpoints as the router sees them (router_image.config routes).

One translation for both places a router runs: ModelRouter renders it into the cluster's
ConfigMap, the local stack into a file on disk. Only how a replica starts differs, so the
caller passes `launch` (the local backend's scorer command) or nothing (kubernetes).
"""

from __future__ import annotations

from typing import Callable

from components.spec import StackSpec, Deployable, deployment_name
from router_image.config import AuthConfig, AutoscaleConfig, RouteConfig, ScorerLaunch, VersionConfig
from scoring_image.config import ScorerSettings

Launch = Callable[[str, Deployable], ScorerLaunch]


def cors_origins(deployables: list[Deployable]) -> tuple[str, ...]:
    """The origins the route's scorers admit (AML_CORS_ORIGINS in their environment, read as the scorer reads it),
    whose CORS preflights the router answers: of every version, since any of them may answer the call itself."""
    found: list[str] = []
    for dep in deployables:
        value = dep.inference_config.environment.image_variables.get("AML_CORS_ORIGINS") if dep.inference_config else None
        if value:
            found += ScorerSettings.model_validate({"cors_origins": value}).cors_origins
    return tuple(dict.fromkeys(found))


def version_config(deployment: str, dep: Deployable, *, name: str, launch: Launch | None,
                   scale_down_delay_seconds: float, traffic_percentile: float = 0, is_default: bool = True, is_control: bool = False) -> VersionConfig:
    return VersionConfig(
        name=name,
        deployment=deployment,
        traffic_percentile=traffic_percentile,
        is_default=is_default,
        is_control=is_control,
        replica_max_concurrent_requests=dep.replica_max_concurrent_requests,
        max_request_wait_time_ms=dep.max_request_wait_time,
        scoring_timeout_ms=dep.scoring_timeout_ms,
        num_replicas=dep.replicas,
        autoscale=AutoscaleConfig(
            enabled=bool(dep.autoscale_enabled),
            min_replicas=dep.autoscale_min_replicas,
            max_replicas=dep.autoscale_max_replicas,
            target_utilization=dep.autoscale_target_utilization,
            refresh_seconds=dep.autoscale_refresh_seconds,
            scale_down_delay_seconds=scale_down_delay_seconds,
        ),
        scorer=launch(deployment, dep) if launch else None,
    )


def routes(spec: StackSpec, launch: Launch | None = None) -> list[RouteConfig]:
    out = []
    delay = spec.router.scale_down_delay_seconds
    for s in spec.services:
        auth = AuthConfig(key_enabled=s.auth_enabled, token_enabled=s.token_auth_enabled)
        version = version_config(deployment_name(s.name), s, name=s.name, launch=launch,
                                 scale_down_delay_seconds=delay)
        out.append(RouteConfig(kind="service", name=s.name, auth=auth, versions=[version], cors_origins=cors_origins([s])))
    for e in spec.endpoints:
        auth = AuthConfig(key_enabled=e.auth_enabled, token_enabled=e.token_auth_enabled)
        versions = [
            version_config(deployment_name(e.name, v.version_name), v, name=v.version_name, launch=launch,
                           scale_down_delay_seconds=delay,
                           traffic_percentile=v.traffic_percentile, is_default=v.is_default,
                           is_control=v.is_control_version_type)
            for v in e.versions
        ]
        out.append(RouteConfig(kind="endpoint", name=e.name, auth=auth, versions=versions,
                               cors_origins=cors_origins(list(e.versions))))
    return out
