"""Azure ML's own deployment files, read into this project's spec fields.

`az ml model deploy -ic inferenceconfig.json -dc deploymentconfig.json` takes two JSON (or YAML) files;
a stack can point at them (`azureml: {inference_config: ..., deployment_config: ...}`) so an
existing Azure ML user migrates without rewriting anything. Their keys are camelCase and
unknown keys are refused, as in the stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from components.documents import Misread, load_json, load_yaml
from components.validation import KeysNamedClose, format_errors, path_of


class _Json(KeysNamedClose):
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
    """deploymentconfig.json for computeType aks, or AKSENDPOINT: an endpoint version's, which names the version
    and its share of the traffic (`az ml endpoint realtime create`)."""

    compute_type: str = Field(alias="computeType")
    version_name: str | None = Field(None, alias="versionName")
    traffic_percentile: float | None = Field(None, alias="trafficPercentile", ge=0, le=100)
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
    def _aks(cls, value: str, info: ValidationInfo) -> str:
        """`version` in the context: whether the file is an endpoint version's (None: either, checked alone)."""
        version = (info.context or {}).get("version")
        if value.lower() == "aksendpoint" and version is False:
            raise ValueError("AKSENDPOINT is an endpoint version's file; give it under endpoints[].versions[].azureml "
                             "(a service's computeType is aks)")
        if value.lower() not in ("aks", "aksendpoint"):
            raise ValueError(f"{value!r}: only aks deployments are served here")
        return value

    @model_validator(mode="after")
    def _version(self) -> DeploymentConfig:
        given = [key for name, key in (("version_name", "versionName"), ("traffic_percentile", "trafficPercentile"))
                 if getattr(self, name) is not None]
        if given and self.compute_type.lower() != "aksendpoint":
            raise ValueError("\n".join(f"{key}: only an endpoint version's file (computeType AKSENDPOINT) names a version"
                                       for key in given))
        return self

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

    # AksWebservice.deploy_configuration's names (the spec's) by this file's keys: what its values are read as,
    # and what a problem with one of them is named by (the user wrote that key).
    KEYS: ClassVar[dict[str, str]] = {
        "autoscale_enabled": "autoScaler.autoscaleEnabled",
        "autoscale_min_replicas": "autoScaler.minReplicas",
        "autoscale_max_replicas": "autoScaler.maxReplicas",
        "autoscale_refresh_seconds": "autoScaler.refreshPeriodInSeconds",
        "autoscale_target_utilization": "autoScaler.targetUtilization",
        "cpu_cores": "containerResourceRequirements.cpu",
        "memory_gb": "containerResourceRequirements.memoryInGB",
        "cpu_cores_limit": "containerResourceRequirements.cpuLimit",
        "memory_gb_limit": "containerResourceRequirements.memoryInGBLimit",
        "gpu_cores": "gpuCores",
        "period_seconds": "livenessProbeRequirements.periodSeconds",
        "initial_delay_seconds": "livenessProbeRequirements.initialDelaySeconds",
        "timeout_seconds": "livenessProbeRequirements.timeoutSeconds",
        "success_threshold": "livenessProbeRequirements.successThreshold",
        "failure_threshold": "livenessProbeRequirements.failureThreshold",
        "collect_model_data": "dataCollection.storageEnabled",
        "auth_enabled": "authEnabled",
        "token_auth_enabled": "tokenAuthEnabled",
        "enable_app_insights": "appInsightsEnabled",
        "scoring_timeout_ms": "scoringTimeoutMs",
        "replica_max_concurrent_requests": "maxConcurrentRequestsPerContainer",
        "max_request_wait_time": "maxQueueWaitMs",
        "num_replicas": "numReplicas",
        "primary_key": "keys.primaryKey",
        "secondary_key": "keys.secondaryKey",
        "namespace": "namespace",
        "description": "description",
        "tags": "tags",
        "version_name": "versionName",
        "traffic_percentile": "trafficPercentile",
    }

    def to_settings(self) -> dict[str, Any]:
        """The same values under AksWebservice.deploy_configuration's names."""
        given = self.model_dump(by_alias=True, exclude_none=True)
        return {name: value for name, key in self.KEYS.items() if (value := _at(given, key)) is not None}


def _at(given: dict[str, Any], key: str) -> Any:
    """The value at a file's dotted key, None where it has none."""
    value: Any = given
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _environment(given: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """An inference config's environment fields, read along its KEYS."""
    return {spec.removeprefix("environment."): _at(given, key) for spec, key in keys.items() if spec.startswith("environment.")}


class BaseImageRegistry(_Json):
    address: str | None = None
    username: str | None = None
    password: str | None = None
    registry_identity: None = Field(None, alias="registryIdentity")  # a managed identity's pull: not here


def _check_base_image(base_image: str | None, registry: BaseImageRegistry | None) -> None:
    """The app image is built where pulumi up runs, its base pulled by that machine's docker with its own login:
    a registry's credentials would be dropped (a password in clear in the file), and an address the base
    image's name lacks would have a namesake pulled from Docker Hub. ValueError naming each."""
    problems = []
    if registry is not None and (registry.username or registry.password):
        problems.append(f"baseImageRegistry: username and password are not read here: the image is built where pulumi "
                        f"up runs, whose docker pulls the base image with its own login (docker login "
                        f"{registry.address or '<registry>'}); remove them (a password in this file is a secret in clear)")
    address = registry.address if registry is not None else None
    if address and base_image and not base_image.lower().startswith(f"{address.lower()}/"):
        problems.append(f"baseImage: {base_image!r} is not in baseImageRegistry.address {address!r}; give its full name, "
                        f"{address}/{base_image}")
    if problems:
        raise ValueError("\n".join(problems))


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

    @model_validator(mode="after")
    def _registry(self) -> Docker:
        _check_base_image(self.base_image, self.base_image_registry)
        return self


class CondaDependencies(_Json):
    name: str = "project_environment"
    channels: list[str] = []
    dependencies: list[str | dict[str, list[str]]] = []


class PythonSection(_Json):
    conda_dependencies: CondaDependencies | None = Field(None, alias="condaDependencies")
    # True: the base image's Python as it is, no conda environment built (what exports list is not used).
    user_managed_dependencies: bool | None = Field(None, alias="userManagedDependencies")
    # Used only with userManagedDependencies, as Azure ML uses it.
    interpreter_path: str | None = Field(None, alias="interpreterPath")
    base_conda_environment: str | None = Field(None, alias="baseCondaEnvironment")
    conda_dependencies_file: str | None = Field(None, alias="condaDependenciesFile")

    @model_validator(mode="after")
    def _interpreter(self) -> PythonSection:
        """The scorer runs on the image's `python`: another interpreter would not have it installed."""
        if self.user_managed_dependencies and self.interpreter_path not in (None, "python"):
            raise ValueError(f"interpreterPath: {self.interpreter_path!r}: the scorer is installed into the base image's "
                             "`python` (the first on its PATH) and runs on it; give python, and put that interpreter's "
                             "folder first on the base image's PATH")
        return self


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

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """Azure ML's service takes a number written here as its text, as the variable holds it."""
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in value.items()}
        return value


class InferenceConfig(_Json):
    """inferenceconfig.json, current format: the entry script plus an Environment."""

    entry_script: str = Field(alias="entryScript")
    source_directory: str | None = Field(None, alias="sourceDirectory")
    environment: Environment | None = None

    # InferenceConfigSpec's fields by this file's keys, as DeploymentConfig.KEYS.
    KEYS: ClassVar[dict[str, str]] = {
        "entry_script": "entryScript",
        "source_directory": "sourceDirectory",
        "environment.name": "environment.name",
        "environment.version": "environment.version",
        "environment.base_image": "environment.docker.baseImage",
        "environment.base_dockerfile": "environment.docker.baseDockerfile",
        "environment.conda_dependencies": "environment.python.condaDependencies",
        "environment.conda_file": "environment.python.condaDependenciesFile",
        "environment.environment_variables": "environment.environmentVariables",
    }

    def to_spec(self, base: Path) -> dict[str, Any]:
        given = self.model_dump(by_alias=True, exclude_none=True)
        environment = _environment(given, self.KEYS)
        if _at(given, "environment.python.userManagedDependencies"):  # the base image's Python as it is: none built
            environment["conda_dependencies"] = environment["conda_file"] = None
        if environment["conda_file"]:
            environment["conda_file"] = str(_relative(base, environment["conda_file"]))
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

    @field_validator("base_image_registry", mode="before")
    @classmethod
    def _address(cls, value: Any) -> Any:
        """Azure ML's custom-image how-to gives it as the registry's address ("mcr.microsoft.com")."""
        return {"address": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _registry(self) -> LegacyInferenceConfig:
        _check_base_image(self.base_image, self.base_image_registry)
        return self

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() != "python":
            raise ValueError(f"runtime {value!r} is not supported; only python entry scripts are")
        return value

    KEYS: ClassVar[dict[str, str]] = {  # as InferenceConfig.KEYS
        "entry_script": "entryScript",
        "source_directory": "sourceDirectory",
        "environment.base_image": "baseImage",
        "environment.conda_file": "condaFile",
        "environment.docker_steps": "extraDockerfileSteps",
        "environment.gpu": "enableGpu",
        "environment.cuda_version": "cudaVersion",
    }

    def to_spec(self, base: Path) -> dict[str, Any]:
        environment = _environment(self.model_dump(by_alias=True, exclude_none=True), self.KEYS)
        # Azure ML reads condaFile and the steps file from the source directory, when there is one.
        source = _relative(base, self.source_directory) if self.source_directory else base
        if environment["conda_file"]:
            environment["conda_file"] = str(_relative(source, environment["conda_file"]))
        if environment["docker_steps"]:  # it names a file of Dockerfile lines; the spec holds the lines
            environment["docker_steps"] = _text(_relative(source, environment["docker_steps"]), "environment.docker_steps")
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
        try:
            data = load_json(text)
        except json.JSONDecodeError as exc:
            try:  # Azure ML's CLI reads its files as YAML as well
                data = load_yaml(text)
            except yaml.YAMLError:
                raise AzureMlFileError(f"{field}: {path} is neither JSON (line {exc.lineno}, column {exc.colno}: "
                                       f"{exc.msg}) nor YAML") from None
    except Misread as misread:  # named as a stack's field names the file, unless the file is the field (kind_of)
        where = field if field == path.name else f"{field}: {path.name}"
        raise AzureMlFileError("\n".join(f"{where}: {line}" for line in misread.problems)) from None
    if not isinstance(data, dict):
        raise AzureMlFileError(f"{field}: {path} must hold a JSON (or YAML) object")
    return data


def _problems(exc: ValidationError, field: str, path: Path, data: dict[str, Any]) -> AzureMlFileError:
    """The file's problems as a stack's are told (along the keys of `data`, the file as validated), each line
    under the stack's field naming the file and the file's name: a rule's several findings each name it."""
    return AzureMlFileError("\n".join(f"{field}: {path.name}: {line}" for line in format_errors(exc, data)))


# Where a setting is written: the stack's field naming the file (azureml.deployment_config), the file's name
# and its key there ("" for the inference config itself, whose spec names below a key it has not are the nearest).
Origin = tuple[str, str, str]


def load_deployment_config(path: Path, field: str = "deployment_config",
                           version: bool | None = None) -> tuple[dict[str, Any], dict[str, Origin]]:
    """The file's settings under the spec's names, and where each is written: every setting the file has a
    key for, given or not, since a deployment's settings come from its file (a default's problem, or a
    message naming one, points there, as for the inference config). `version`: whether it is read for an
    endpoint's version (an AKSENDPOINT file is one's) or a service; None for either."""
    data = _read(path, field)
    try:
        settings = DeploymentConfig.model_validate(data, context={"version": version}).to_settings()
    except ValidationError as exc:
        raise _problems(exc, field, path, data) from None
    return settings, {name: (field, path.name, key) for name, key in DeploymentConfig.KEYS.items()}


def load_inference_config(path: Path, field: str = "inference_config") -> tuple[dict[str, Any], dict[str, Origin]]:
    """The InferenceConfigSpec dict (under a deployable's inference_config), and that it came from this file."""
    data = _read(path, field)
    model: type[InferenceConfig | LegacyInferenceConfig] = LegacyInferenceConfig if _LEGACY_KEYS & data.keys() else InferenceConfig
    if "environment" in data:  # Azure ML refuses only legacy settings that ask for something beside it
        asked = sorted(k for k in _LEGACY_KEYS & data.keys() if data[k])
        if asked:
            raise AzureMlFileError(f"{field}: {path.name}: {', '.join(asked)}: cannot be given along with an environment; "
                                   "put them in the environment (python.condaDependencies, docker.baseImage) or drop it")
        data, model = {k: v for k, v in data.items() if k not in _LEGACY_KEYS}, InferenceConfig
    origins = {"inference_config": (field, path.name, "")} | {
        f"inference_config.{name}": (field, path.name, key) for name, key in _as_written(model, data).items()}
    try:
        spec = model.model_validate(data).to_spec(path.parent)
    except ValidationError as exc:
        raise _problems(exc, field, path, data) from None
    except AzureMlFileError as exc:  # a file it names (the legacy steps), told by the spec name of its setting
        name, _, message = str(exc).partition(": ")
        raise AzureMlFileError(f"{named(origins, f'inference_config.{name}')}: {message}") from None
    return spec, origins


def _as_written(model: type[InferenceConfig | LegacyInferenceConfig], data: dict[str, Any]) -> dict[str, str]:
    """The model's KEYS, each spelled as this file spells it: Azure ML reads some keys under two names
    (extraDockerfileSteps, extraDockerFileSteps: the field's alias choices), and a problem names the one the
    user wrote. Only a file's top-level keys have two."""
    spelt = {field.alias: next((c for c in field.validation_alias.choices if c in data), field.alias)
             for field in model.model_fields.values() if field.alias and isinstance(field.validation_alias, AliasChoices)}
    return {name: spelt.get(key, key) for name, key in model.KEYS.items()}


class Finding(str):
    """A rule's `field: message` line; `mentions` are the other fields (spec names, beside the line's field)
    its message names, which a line told in an Azure ML file's keys (in_files, told) names by that file's
    keys too: `numReplicas: a fixed numReplicas and autoScaler.autoscaleEnabled exclude each other`."""

    mentions: tuple[str, ...]

    def __new__(cls, line: str, *mentions: str) -> Finding:
        finding = super().__new__(cls, line)
        finding.mentions = mentions
        return finding


class Findings(ValueError):
    """A model's findings, one line each, kept as Findings (with their mentions) for in_files."""

    def __init__(self, lines: Sequence[str]):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


# Where a value is written in a file: the stack's field naming the file, the file's name, the key there.
Place = tuple[tuple[str, ...], str, str]


def in_file(origins: dict[str, Origin], path: Sequence[str | int]) -> Place | None:
    """Where the value at `path` (spec names) is written, when a file holds it: the stack's field naming the
    file, the file, and the key there (the nearest key that has one, the spec's names below it)."""
    for n in range(len(path), 0, -1):
        named = all(isinstance(p, str) for p in path[:n])
        origin = origins.get(".".join(map(str, path[:n]))) if named else None
        if origin is not None:
            field, file, key = origin
            return tuple(field.split(".")), file, path_of(path[n:], root=key)
    return None


def _told(place: Place) -> str:
    """`file: key`, as a problem names a file's value after the stack's field naming the file."""
    _, file, key = place
    return f"{file}: {key}" if key else file


def named(origins: dict[str, Origin], field: str) -> str:
    """How a problem names `field` (spec names, dotted): by the file and key that hold it, if a file does."""
    place = in_file(origins, field.split("."))
    return field if place is None else f"{'.'.join(place[0])}: {_told(place)}"


def _field_of(line: str) -> tuple[str, str]:
    """A rule's line as its field (spec names, dotted) and message; "" for a line about the model itself."""
    name, sep, message = line.partition(": ")
    return (name, message) if sep and re.fullmatch(r"[a-z_][a-z0-9_.]*", name) else ("", line)


def _in_file_line(origins: dict[str, Origin], loc: Sequence[str | int], line: str) -> tuple[Place, str] | None:
    """A rule's line found at `loc`, told in a file when the file holds its field: where, and the message
    naming its mentions (Finding) by that file's keys where the same file holds them (one the stack gives
    keeps the stack's name). A line about a deployment as a whole is told in the file that holds all it
    mentions, if one does."""
    name, message = _field_of(line)
    place = in_file(origins, (*loc, *filter(None, name.split("."))))
    mentioned = {m: in_file(origins, (*loc, *m.split("."))) for m in getattr(line, "mentions", ())}
    files = {there[:2] for there in mentioned.values() if there is not None}
    if place is None and not name and len(files) == 1 and None not in mentioned.values():
        place = (*files.pop(), "")
    if place is None:
        return None
    for mention, there in mentioned.items():
        if there is not None and there[:2] == place[:2]:
            message = re.sub(rf"(?<![\w.]){re.escape(mention)}(?!\w|\.\w)", there[2], message)
    return place, message


def told(origins: dict[str, Origin], path: str, line: str) -> str:
    """A rule's line about the deployment at `path` (in the stack) as a problem tells it: in the keys of the
    file that holds its field, if one does (`services[0].azureml.deployment_config: deploymentconfig.json:
    gpuCores: ... set gpuCores: 0`)."""
    moved = _in_file_line(origins, (), line)
    if moved is not None:
        place, message = moved
        return f"{path}.{'.'.join(place[0])}: {_told(place)}: {message}"
    name, message = _field_of(line)
    return f"{path}.{name}: {message}" if name else f"{path}: {line}"


def in_files(exc: ValidationError, origins: dict[str, Origin], at: Sequence[str] = ()) -> ValidationError:
    """`exc` with each problem of a value a file holds moved to the stack's field naming that file, and told
    in the file's keys (ctx `in_file`, which validation.format_errors shows): the user wrote numReplicas there,
    not num_replicas. A rule's findings (`field: message` lines) are moved one by one, their messages naming
    the fields they mention by the file's keys too. `at`: where the validated model sits in the spec names
    `origins` uses (inference_config, for an inference config checked on its own)."""
    details: list[InitErrorDetails] = []
    for err in exc.errors():
        loc, ctx = err["loc"], err.get("ctx") or {}
        if err["type"] != "value_error":
            place = in_file(origins, (*at, *loc))
            detail = InitErrorDetails(type=err["type"], loc=place[0] if place else loc, input=err["input"])
            if place or ctx:
                detail["ctx"] = ctx | {"in_file": _told(place)} if place else ctx
            details.append(detail)
            continue
        error = ctx["error"]
        kept = []
        for line in getattr(error, "lines", None) or str(error).splitlines():
            moved = _in_file_line(origins, (*at, *loc), line)
            if moved:
                place, message = moved
                details.append(InitErrorDetails(type="value_error", loc=place[0], input=err["input"],
                                                ctx={"error": ValueError(message), "in_file": _told(place)}))
            else:
                kept.append(line)
        if kept:
            details.append(InitErrorDetails(type="value_error", loc=loc, input=err["input"],
                                            ctx={"error": ValueError("\n".join(kept))}))
    return ValidationError.from_exception_data(exc.title, details)


def kind_of(path: Path) -> Literal["deployment_config", "inference_config"] | None:
    """Which Azure ML file a JSON is, by its keys: computeType marks a deployment config (AzureMlFileError
    when it cannot be read as a JSON object)."""
    data = _read(path, path.name)
    if "computeType" in data:
        return "deployment_config"
    if "entryScript" in data:
        return "inference_config"
    return None
