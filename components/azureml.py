"""Azure ML's own deployment files, read into this project's spec fields.

`az ml model deploy -ic inferenceconfig.json -dc deploymentconfig.json` takes two JSON (or YAML) files;
a stack can point at them (`azureml: {inference_config: ..., deployment_config: ...}`) so an
existing Azure ML user migrates without rewriting anything. Their keys are camelCase and
unknown keys are refused, as in the stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Json(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AutoScaler(_Json):
    autoscale_enabled: bool | None = Field(None, alias="autoscaleEnabled")
    min_replicas: int | None = Field(None, alias="minReplicas")
    max_replicas: int | None = Field(None, alias="maxReplicas")
    refresh_period_in_seconds: int | None = Field(None, alias="refreshPeriodInSeconds")
    target_utilization: int | None = Field(None, alias="targetUtilization")


class ContainerResourceRequirements(_Json):
    cpu: float | None = None
    memory_in_gb: float | None = Field(None, alias="memoryInGB")
    cpu_limit: float | None = Field(None, alias="cpuLimit")
    memory_in_gb_limit: float | None = Field(None, alias="memoryInGBLimit")


class LivenessProbeRequirements(_Json):
    period_seconds: int | None = Field(None, alias="periodSeconds")
    initial_delay_seconds: int | None = Field(None, alias="initialDelaySeconds")
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds")
    success_threshold: int | None = Field(None, alias="successThreshold")
    failure_threshold: int | None = Field(None, alias="failureThreshold")


class DataCollection(_Json):
    storage_enabled: bool | None = Field(None, alias="storageEnabled")
    # Azure ML's payload has it (az ml service show prints it): false asks for nothing.
    event_hub_enabled: bool | None = Field(None, alias="eventHubEnabled")

    @field_validator("event_hub_enabled")
    @classmethod
    def _no_event_hub(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("collected data goes to the workspace's blob storage (storageEnabled), not to an event hub")
        return value


class Keys(_Json):
    primary_key: str | None = Field(None, alias="primaryKey")
    secondary_key: str | None = Field(None, alias="secondaryKey")


class DeploymentConfig(_Json):
    """deploymentconfig.json for computeType aks."""

    compute_type: str = Field(alias="computeType")
    # The cluster a file was written for: here the stack's cluster is the target.
    compute_target_name: str | None = Field(None, alias="computeTargetName")
    auto_scaler: AutoScaler | None = Field(None, alias="autoScaler")
    container_resource_requirements: ContainerResourceRequirements | None = Field(None, alias="containerResourceRequirements")
    gpu_cores: int | None = Field(None, alias="gpuCores")
    liveness_probe_requirements: LivenessProbeRequirements | None = Field(None, alias="livenessProbeRequirements")
    data_collection: DataCollection | None = Field(None, alias="dataCollection")
    auth_enabled: bool | None = Field(None, alias="authEnabled")
    token_auth_enabled: bool | None = Field(None, alias="tokenAuthEnabled")
    app_insights_enabled: bool | None = Field(None, alias="appInsightsEnabled")
    scoring_timeout_ms: int | None = Field(None, alias="scoringTimeoutMs")
    max_concurrent_requests_per_container: int | None = Field(None, alias="maxConcurrentRequestsPerContainer")
    max_queue_wait_ms: int | None = Field(None, alias="maxQueueWaitMs")
    num_replicas: int | None = Field(None, alias="numReplicas")
    keys: Keys | None = None
    namespace: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None

    @field_validator("compute_type")
    @classmethod
    def _aks(cls, value: str) -> str:
        if value.lower() == "aksendpoint":
            raise ValueError("AKSENDPOINT: an endpoint version's file; give each version under endpoints[].versions, "
                             "with its traffic_percentile and is_default there")
        if value.lower() != "aks":
            raise ValueError(f"{value!r}: only aks deployments are served here")
        return value

    @model_validator(mode="after")
    def _autoscaler(self) -> DeploymentConfig:
        """Azure ML's rules for the autoscaler's settings (AksServiceDeploymentConfiguration.validate_configuration):
        on only when said so, and its settings refused when it is not, rather than left unused."""
        a = self.auto_scaler or AutoScaler()
        if a.autoscale_enabled:
            return self
        problems = []
        if a.autoscale_enabled is False and not self.num_replicas:
            problems.append("autoScaler.autoscaleEnabled: false needs numReplicas, the replicas that run")
        problems += [f"autoScaler.{field.alias}: given without autoScaler.autoscaleEnabled: true"
                     for name, field in AutoScaler.model_fields.items() if name != "autoscale_enabled" and getattr(a, name)]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def to_settings(self) -> dict[str, Any]:
        """The same values under AksWebservice.deploy_configuration's names."""
        a = self.auto_scaler or AutoScaler()
        r = self.container_resource_requirements or ContainerResourceRequirements()
        p = self.liveness_probe_requirements or LivenessProbeRequirements()
        k = self.keys or Keys()
        fields = {
            "autoscale_enabled": a.autoscale_enabled,
            "autoscale_min_replicas": a.min_replicas,
            "autoscale_max_replicas": a.max_replicas,
            "autoscale_refresh_seconds": a.refresh_period_in_seconds,
            "autoscale_target_utilization": a.target_utilization,
            "cpu_cores": r.cpu,
            "memory_gb": r.memory_in_gb,
            "cpu_cores_limit": r.cpu_limit,
            "memory_gb_limit": r.memory_in_gb_limit,
            "gpu_cores": self.gpu_cores,
            "period_seconds": p.period_seconds,
            "initial_delay_seconds": p.initial_delay_seconds,
            "timeout_seconds": p.timeout_seconds,
            "success_threshold": p.success_threshold,
            "failure_threshold": p.failure_threshold,
            "collect_model_data": self.data_collection.storage_enabled if self.data_collection else None,
            "auth_enabled": self.auth_enabled,
            "token_auth_enabled": self.token_auth_enabled,
            "enable_app_insights": self.app_insights_enabled,
            "scoring_timeout_ms": self.scoring_timeout_ms,
            "replica_max_concurrent_requests": self.max_concurrent_requests_per_container,
            "max_request_wait_time": self.max_queue_wait_ms,
            "num_replicas": self.num_replicas,
            "primary_key": k.primary_key,
            "secondary_key": k.secondary_key,
            "namespace": self.namespace,
            "description": self.description,
            "tags": self.tags,
        }
        return {name: value for name, value in fields.items() if value is not None}


class BaseImageRegistry(_Json):
    address: str | None = None
    username: str | None = None
    password: str | None = None
    registry_identity: None = Field(None, alias="registryIdentity")  # a managed identity's pull: not here


class Platform(_Json):
    """The image's platform, as exports carry it: the scorer's images are Linux amd64."""

    architecture: Literal["amd64", "AMD64"] = "amd64"
    os: Literal["Linux", "linux"] = "Linux"


class Docker(_Json):
    base_image: str | None = Field(None, alias="baseImage")
    base_dockerfile: str | None = Field(None, alias="baseDockerfile")
    base_image_registry: BaseImageRegistry | None = Field(None, alias="baseImageRegistry")
    enabled: bool | None = None
    arguments: list[str] | None = None
    shm_size: str | None = Field(None, alias="shmSize")
    shared_volumes: bool | None = Field(None, alias="sharedVolumes")  # a training run's; nothing to serve
    platform: Platform | None = None


class CondaDependencies(_Json):
    name: str = "project_environment"
    channels: list[str] = []
    dependencies: list[str | dict[str, list[str]]] = []


class PythonSection(_Json):
    conda_dependencies: CondaDependencies | None = Field(None, alias="condaDependencies")
    # True: the base image's Python as it is, no conda environment built (what exports list is not used).
    user_managed_dependencies: bool | None = Field(None, alias="userManagedDependencies")
    # The scorer runs on the image's `python`: another interpreter would not have it installed.
    interpreter_path: Literal["python"] | None = Field(None, alias="interpreterPath")
    base_conda_environment: str | None = Field(None, alias="baseCondaEnvironment")
    conda_dependencies_file: str | None = Field(None, alias="condaDependenciesFile")


class _TrainingOnly(_Json):
    """A section Azure ML exports with every environment, for training runs: accepted as long as it asks
    for nothing, since a web service would not get what it lists."""

    @model_validator(mode="after")
    def _empty(self) -> _TrainingOnly:
        asked = [field.alias or name for name, field in type(self).model_fields.items()
                 if isinstance(getattr(self, name), list) and getattr(self, name)]
        if asked:
            raise ValueError(f"{', '.join(asked)}: a training run's libraries; a web service does not install them "
                             "(give Python packages as conda dependencies or pip)")
        return self


class Spark(_TrainingOnly):
    repositories: list[str] = []
    packages: list[Any] = []
    precache_packages: bool | None = Field(None, alias="precachePackages")


class Databricks(_TrainingOnly):
    maven_libraries: list[Any] = Field([], alias="mavenLibraries")
    pypi_libraries: list[Any] = Field([], alias="pypiLibraries")
    rcran_libraries: list[Any] = Field([], alias="rcranLibraries")
    jar_libraries: list[Any] = Field([], alias="jarLibraries")
    egg_libraries: list[Any] = Field([], alias="eggLibraries")


class Environment(_Json):
    name: str | None = None
    r: None = None  # an R environment: only Python entry scripts are served
    version: str | None = None
    docker: Docker | None = None
    python: PythonSection | None = None
    environment_variables: dict[str, str] | None = Field(None, alias="environmentVariables")
    inferencing_stack_version: str | None = Field(None, alias="inferencingStackVersion")
    spark: Spark | None = None
    databricks: Databricks | None = None


class InferenceConfig(_Json):
    """inferenceconfig.json, current format: the entry script plus an Environment."""

    entry_script: str = Field(alias="entryScript")
    source_directory: str | None = Field(None, alias="sourceDirectory")
    environment: Environment | None = None

    def to_spec(self, base: Path) -> dict[str, Any]:
        env = self.environment or Environment()
        docker = env.docker or Docker()
        python = env.python or PythonSection()
        built = not python.user_managed_dependencies
        conda = python.conda_dependencies if built else None
        conda_file = python.conda_dependencies_file if built else None
        environment = {
            "name": env.name,
            "version": env.version,
            "base_image": docker.base_image,
            "base_dockerfile": docker.base_dockerfile,
            "conda_dependencies": conda.model_dump() if conda else None,
            "conda_file": conda_file and str(_relative(base, conda_file)),
            "environment_variables": env.environment_variables,
        }
        return _inference(self.entry_script, self.source_directory, environment, base)


class LegacyInferenceConfig(_Json):
    """inferenceconfig.json, the older flat format (InferenceConfig(runtime=..., conda_file=...))."""

    entry_script: str = Field(alias="entryScript")
    runtime: Literal["python", "Python"] = "python"
    conda_file: str | None = Field(None, alias="condaFile")
    # Azure ML reads extraDockerfileSteps; its docs' table spells it extraDockerFileSteps.
    extra_dockerfile_steps: str | None = Field(None, alias="extraDockerfileSteps",
                                               validation_alias=AliasChoices("extraDockerfileSteps", "extraDockerFileSteps"))
    base_image: str | None = Field(None, alias="baseImage")
    base_image_registry: BaseImageRegistry | None = Field(None, alias="baseImageRegistry")
    enable_gpu: bool | None = Field(None, alias="enableGpu")
    cuda_version: str | None = Field(None, alias="cudaVersion")
    source_directory: str | None = Field(None, alias="sourceDirectory")
    description: str | None = None

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() != "python":
            raise ValueError(f"runtime {value!r} is not supported; only python entry scripts are")
        return value

    def to_spec(self, base: Path) -> dict[str, Any]:
        # Azure ML reads condaFile and the steps file from the source directory, when there is one.
        source = _relative(base, self.source_directory) if self.source_directory else base
        environment = {
            "base_image": self.base_image,
            "conda_file": self.conda_file and str(_relative(source, self.conda_file)),
            # Azure ML's extraDockerfileSteps names a file of Dockerfile lines; the spec holds the lines.
            "docker_steps": self.extra_dockerfile_steps and _text(_relative(source, self.extra_dockerfile_steps),
                                                                  "extraDockerfileSteps"),
            "gpu": self.enable_gpu,
            "cuda_version": self.cuda_version,
        }
        return _inference(self.entry_script, self.source_directory, environment, base)


_LEGACY_KEYS = {"runtime", "condaFile", "extraDockerfileSteps", "extraDockerFileSteps", "baseImage", "enableGpu", "cudaVersion"}


def _relative(base: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else base / path


def _inference(entry_script: str, source_directory: str | None, environment: dict[str, Any], base: Path) -> dict[str, Any]:
    """The InferenceConfigSpec dict; paths in Azure ML's files are relative to the file. Without a source
    directory the app is the entry script alone, as Azure ML ships it (not the file's folder, where the
    deployment config and its keys often are)."""
    found = {"entry_script": entry_script, "source_directory": str(_relative(base, source_directory))} if source_directory \
        else {"entry_script": str(_relative(base, entry_script))}
    return found | {"environment": {k: v for k, v in environment.items() if v is not None}}


class AzureMlFileError(ValueError):
    """A problem in an Azure ML JSON file, one `field: message` line per problem."""


def _text(path: Path, field: str) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise AzureMlFileError(f"{field}: {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise AzureMlFileError(f"{field}: cannot read {path} ({exc.strerror})") from None


def _read(path: Path, field: str) -> dict[str, Any]:
    if not path.exists():  # named as such: an Azure ML file is often given by a path typed by hand
        raise AzureMlFileError(f"{field}: file {path} does not exist")
    text = _text(path, field)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        try:  # Azure ML's CLI reads its files as YAML as well
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise AzureMlFileError(f"{field}: {path} is neither JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}) "
                                   "nor YAML") from None
    if not isinstance(data, dict):
        raise AzureMlFileError(f"{field}: {path} must hold a JSON (or YAML) object")
    return data


def _problems(exc: ValidationError, field: str, path: Path) -> AzureMlFileError:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines += [f"{field}: {path.name}: {where}: {line}" if where else f"{field}: {path.name}: {line}"
                  for line in msg.splitlines()]  # a rule's several findings: each names the file
    return AzureMlFileError("\n".join(lines))


def load_deployment_config(path: Path, field: str = "deployment_config") -> dict[str, Any]:
    data = _read(path, field)
    try:
        return DeploymentConfig.model_validate(data).to_settings()
    except ValidationError as exc:
        raise _problems(exc, field, path) from None


def load_inference_config(path: Path, field: str = "inference_config") -> dict[str, Any]:
    data = _read(path, field)
    model: type[InferenceConfig | LegacyInferenceConfig] = LegacyInferenceConfig if _LEGACY_KEYS & data.keys() else InferenceConfig
    if "environment" in data:  # Azure ML refuses only legacy settings that ask for something beside it
        asked = sorted(k for k in _LEGACY_KEYS & data.keys() if data[k])
        if asked:
            raise AzureMlFileError(f"{field}: {path.name}: {', '.join(asked)}: cannot be given along with an environment; "
                                   "put them in the environment (python.condaDependencies, docker.baseImage) or drop it")
        data, model = {k: v for k, v in data.items() if k not in _LEGACY_KEYS}, InferenceConfig
    try:
        return model.model_validate(data).to_spec(path.parent)
    except ValidationError as exc:
        raise _problems(exc, field, path) from None


def kind_of(path: Path) -> Literal["deployment_config", "inference_config"] | None:
    """Which Azure ML file a JSON is, by its keys: computeType marks a deployment config (AzureMlFileError
    when it cannot be read as a JSON object)."""
    data = _read(path, path.name)
    if "computeType" in data:
        return "deployment_config"
    if "entryScript" in data:
        return "inference_config"
    return None
