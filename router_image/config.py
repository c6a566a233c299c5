"""The router's configuration: what one router pod serves and how.

The Pulumi components (and the local stack) render this model from the stack specs; the
router reads it from a mounted file and reloads it on change.  It imports nothing but
pydantic so that `components` can depend on it without the router's runtime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file that does not validate, told without the values it holds."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A route's and a version's name: a path segment matched as sent (both paths alike) and a response header's value
# (azureml-model-deployment), so no escapes, slashes, spaces or line breaks. The stack's names are narrower still.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class AutoscaleConfig(_Strict):
    """Azure ML's utilization autoscaler for one version (its defaults).

    At least one replica, as Azure ML's autoscale_min_replicas: demand is counted in busy slots, so a
    version at zero, whose requests another version stands in for, would never see any to scale from.
    """

    enabled: bool = True
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(10, ge=1)
    target_utilization: int = Field(70, ge=1, le=100)
    refresh_seconds: float = Field(1.0, gt=0)
    scale_down_delay_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class ScorerLaunch(_Strict):
    """How the `local` backend starts a scorer replica: `python -m scoring_image` with this env.

    `env` is `scoring_image.config.ScorerSettings.to_env()` of the version (entry script,
    model dir, timeouts, data collection); the backend hands it a listening socket.
    """

    env: dict[str, str] = {}
    cwd: str | None = None
    # Each replica's output goes to <log_dir>/<deployment>-<n>.log (else it is discarded).
    log_dir: str | None = None
    # After SIGTERM, how long a replica may finish its requests before it is killed: the scorer's
    # own stop grace (ScorerSettings.stop_grace_seconds), so a scale-down cuts no request short.
    stop_grace_seconds: float = Field(10.0, gt=0)
    # What the replicas load, as the writer of the config stamps it (components.local: the app's and models'
    # files, their sizes and mtimes): a new stamp rolls the replicas as a changed setting does.
    files_stamp: str = ""


class VersionConfig(_Strict):
    """One deployable version: a pool of identical scorer replicas."""

    name: Name
    # kubernetes: the Deployment and its headless Service; local: the name of its processes.
    deployment: str
    traffic_percentile: float = Field(0.0, ge=0, le=100)
    is_default: bool = False
    is_control: bool = False
    replica_max_concurrent_requests: int = Field(1, ge=1)
    max_request_wait_time_ms: int = Field(500, ge=0)
    scoring_timeout_ms: int = Field(60_000, ge=1)
    # Fixed size when autoscale is off (num_replicas in Azure ML's terms).
    num_replicas: int = Field(1, ge=0)
    autoscale: AutoscaleConfig = AutoscaleConfig()
    scorer_port: int = Field(5001, ge=1, le=65535)
    scorer: ScorerLaunch | None = None


class AuthConfig(_Strict):
    """Key auth (primary + secondary) or token auth, never both (Azure ML's rule)."""

    key_enabled: bool = True
    token_enabled: bool = False

    @model_validator(mode="after")
    def _one(self) -> AuthConfig:
        if self.key_enabled and self.token_enabled:
            raise ValueError("key_enabled and token_enabled are exclusive")
        return self


class RouteConfig(_Strict):
    """A service (one version) at /api/v1/service/<name>/score, or an endpoint at /api/v1/endpoint/<name>/score."""

    kind: Literal["service", "endpoint"]
    name: Name
    auth: AuthConfig = AuthConfig()
    versions: list[VersionConfig] = Field(min_length=1, max_length=6)
    # Origins whose pages may call the route ("*": any), the scorer's AML_CORS_ORIGINS: the router answers their
    # CORS preflights (cors.py). None: an OPTIONS is a call like any other, credentials and all.
    cors_origins: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _versions(self) -> RouteConfig:
        names = [v.name for v in self.versions]
        if dupes := sorted({n for n in names if names.count(n) > 1}):  # a pin or a split names one version
            raise ValueError(f"{self.kind} {self.name}: version names declared twice: {', '.join(dupes)}")
        if sum(v.is_default for v in self.versions) > 1:
            raise ValueError(f"{self.kind} {self.name}: more than one default version")
        # Rounded: 26.4 + 70.4 + 3.2 adds up to 100.00000000000001 in floats.
        if round(sum(v.traffic_percentile for v in self.versions), 6) > 100:
            raise ValueError(f"{self.kind} {self.name}: traffic percentiles sum over 100")
        return self

    @property
    def key_id(self) -> str:
        """Prefix of this route's key files in the mounted secret: `<kind>.<name>`."""
        return f"{self.kind}.{self.name}"


class TlsConfig(_Strict):
    cert_file: str
    key_file: str


class TokenConfig(_Strict):
    """JWT verification: tokens are signed with the cluster's key; audience = route name."""

    # One PEM public key, or several while the signing key is rotated (auth.PublicKey says how).
    public_key_file: str
    algorithm: Literal["ES256", "RS256"] = "ES256"
    issuer: str = "aks-model-serving"
    # The longest a token may live (exp - iat): a longer one is refused, however it was signed.
    lifetime_seconds: int = Field(3600, ge=60)


class PeersConfig(_Strict):
    """How router pods find each other and elect the scaling leader (kubernetes backend)."""

    service: str  # headless Service of the router pods
    lease_name: str = "model-router-autoscaler"
    port: int = 8080
    # A file holding the secret peers send to read each other's load: without it, anyone who
    # reaches the public port could read per-deployment load figures.
    secret_file: str | None = None

    def secret(self) -> bytes | None:
        """None when no secret_file is set. Read at each use, as the keys are: a replaced Secret takes
        effect without a restart. An empty file raises ValueError (a missing one OSError): a secret of
        nothing would admit `Authorization: Bearer ` and have the leader send no header at all."""
        if not self.secret_file:
            return None
        secret = Path(self.secret_file).read_bytes().strip()
        if not secret:
            raise ValueError(f"peers' secret file {self.secret_file} is empty")
        return secret


class RouterScaleConfig(_Strict):
    """The router pods' own count, set by the scaling leader as azureml-fe scales itself: out at
    once when CPU or routing latency rises, in only after CPU stayed low (`autoscale`'s rule, on
    cores used against `cpu_cores` requested per pod)."""

    deployment: str  # the router's own Deployment
    cpu_cores: float = Field(gt=0)
    autoscale: AutoscaleConfig
    # benchmarks/router/routing_latency, 2 cores: 0.3 ms idle (libuv's timers tick in ms), 1.6 ms
    # with the router saturated by 64 clients (its CPU rule asks first); 5 ms: a starved or throttled pod.
    max_routing_latency_ms: float = Field(5.0, gt=0)


# What the router reads once, at start: a reload that changes one is refused (tls: on or off; its files
# may change).
RESTART_FIELDS = ("backend", "namespace", "host", "port", "peers")


class RouterConfig(_Strict):
    backend: Literal["local", "kubernetes"] = "local"
    namespace: str = "default"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls: TlsConfig | None = None
    # Directory of key files `<kind>.<name>.primary|secondary` (a mounted Kubernetes Secret).
    keys_dir: str | None = None
    token: TokenConfig | None = None
    # False in a dev_test cluster: replicas stay fixed at num_replicas.
    autoscale_enabled: bool = True
    peers: PeersConfig | None = None
    # Absent: the router pods stay at the count they were given (one router, a dev_test cluster).
    router_scale: RouterScaleConfig | None = None
    routes: list[RouteConfig] = []

    @model_validator(mode="after")
    def _fixed_sizes(self) -> RouterConfig:
        """autoscale_enabled false turns each version's autoscaler off, so whether a version is sized by
        the router is read in one place (`version.autoscale.enabled`), on a reload as at start."""
        if not self.autoscale_enabled:
            off = [r.model_copy(update={"versions": [v.model_copy(update={"autoscale": v.autoscale.model_copy(
                update={"enabled": False})}) for v in r.versions]}) for r in self.routes]
            object.__setattr__(self, "routes", off)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _unique(self) -> RouterConfig:
        # One name per route across kinds, as Azure ML names are unique in a workspace: a token's
        # audience is the bare name, so a service and an endpoint of one name would admit each other's.
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names declared twice (services and endpoints share one namespace): "
                             f"{', '.join(dupes)}")
        # One Deployment runs one version: two versions naming it would share its replicas and its scaling.
        owners: dict[str, str] = {self.router_scale.deployment: "router_scale"} if self.router_scale else {}
        for r in self.routes:
            for v in r.versions:
                owner = f"{r.kind} {r.name} version {v.name}"
                if v.deployment in owners:
                    raise ValueError(f"deployment {v.deployment} named by both {owners[v.deployment]} and {owner}")
                owners[v.deployment] = owner
        if self.router_scale is not None and (self.backend != "kubernetes" or self.peers is None):
            raise ValueError("router_scale needs the kubernetes backend and peers")
        return self

    @property
    def drain_seconds(self) -> float:
        """How long a stopping router needs for the requests in flight: the longest one may queue and then
        score (its version's max_request_wait_time + scoring_timeout)."""
        return max(((v.max_request_wait_time_ms + v.scoring_timeout_ms) / 1000 for r in self.routes for v in r.versions),
                   default=0.0)

    @classmethod
    def load(cls, path: str | Path) -> RouterConfig:
        """The config in a file; ConfigError when it does not validate."""
        try:
            return cls.model_validate_json(Path(path).read_text())
        except ValidationError as exc:
            # Each error's place and message only: pydantic's own text quotes the input, and a config
            # holds secrets (a scorer's env, a model URL with a SAS token) that must not reach a log line.
            raise ConfigError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                        for e in exc.errors(include_url=False, include_input=False))) from None

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    def digest(self) -> str:
        """Which config a router runs (in /readyz): what wrote the file knows when its change took effect."""
        return hashlib.sha256(self.dump().encode()).hexdigest()[:16]
