"""Every setting of the scoring server, and the environment variable that carries it.

The server is configured the way Azure ML configures its inference server: through the
environment of the container.  The Pulumi components and the router's `local` backend render
that environment with `ScorerSettings(...).to_env()`; the server reads it back with
`ScorerSettings.from_env()`.  One model for both sides keeps them from drifting apart.

This module imports nothing but pydantic and the standard library, so that `components`
can import it without the server's runtime.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_LIST_SEPARATOR = ","
# A worker's exit after its drain: flushing logs, metrics and its spool segment.
_STOP_MARGIN_SECONDS = 5.0
# After the workers stopped, the last upload of collected data gets this long; what an unreachable store
# holds up past it stays in the spool (a pod's terminationGracePeriodSeconds counts it).
FINAL_UPLOAD_SECONDS = 10.0
# A container's CPU limit (cgroup v2): `docker run --cpus=2` and a pod's limit are a quota, not an affinity, so
# the cores the process may run on are all the host's.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Where a container given GPUs (the NVIDIA runtime, Kubernetes' device plugin) sees them, without importing CUDA.
GPU_DEVICES = Path("/dev")


def _env(name: str) -> dict[str, Any]:
    return {"json_schema_extra": {"env": name}}


class ScorerSettings(BaseModel):
    """The scorer's configuration; each field is read from the environment variable in `env_name`.

    Lists travel as comma-separated strings, booleans as `true` / `false`.

    Data collection ships each request's input and output to exactly one destination:
    - Azure Blob Storage: `data_collection_container` in the account of `data_collection_account_url`,
      signed in as the pod's Azure AD workload identity (on a cluster the stack created: no key in the
      pod), or of `data_collection_connection_string` (AZUREML_DATA_COLLECTION_CONNECTION_STRING, as
      Azure ML names it; the local stack, Azurite, an attached cluster); or through
      `data_collection_container_url`, a container URL carrying a SAS token;
    - or `data_collection_local_dir`, a folder that receives the same `modeldata/...` layout
      (the local stack uses it).
    """

    # hide_input_in_errors: a ValidationError's text quotes the input otherwise, secrets and all.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Azure ML's entry-script contract.
    entry_script: str = Field("score.py", **_env("AZUREML_ENTRY_SCRIPT"))
    model_dir: str | None = Field(None, **_env("AZUREML_MODEL_DIR"))
    app_root: str = Field(".", **_env("AML_APP_ROOT"))

    # Serving.
    host: str = Field("0.0.0.0", **_env("SCORER_HOST"))
    port: int = Field(5001, ge=0, le=65535, **_env("SCORER_PORT"))
    # /metrics alone, served by the supervisor: a cluster's Prometheus may reach it where only the router
    # may reach `port` (which serves /metrics too). None: not served apart (the local stack's replicas).
    metrics_port: int | None = Field(None, ge=1, le=65535, **_env("SCORER_METRICS_PORT"))
    # None: one worker process per core available to this process (its container's CPU limit, rounded up); one
    # where it sees a GPU, as Azure ML's GPU deployments run (each worker loads the model onto the device).
    workers: int | None = Field(None, ge=1, **_env("WORKER_COUNT"))
    scoring_timeout_ms: int = Field(60_000, ge=1, **_env("SCORING_TIMEOUT_MS"))
    # Azure ML's router accepts payloads up to 100 MB.
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=1, **_env("SCORER_MAX_BODY_BYTES"))
    # "*" allows every origin; empty: no CORS headers at all (AML_CORS_ORIGINS: Azure ML's server's name).
    cors_origins: list[str] = Field([], **_env("AML_CORS_ORIGINS"))
    keep_alive_seconds: float = Field(65.0, gt=0, **_env("SCORER_KEEP_ALIVE_SECONDS"))
    # A worker whose init() failed (a model download that timed out, a store not reachable yet) is
    # replaced, and init() tried again, after this, doubling per failure in a row up to 5 minutes.
    init_retry_seconds: float = Field(10.0, gt=0, **_env("SCORER_INIT_RETRY_SECONDS"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", **_env("SCORER_LOG_LEVEL"))
    # One JSON line per scored request.
    access_log: bool = Field(True, **_env("SCORER_ACCESS_LOG"))
    appinsights_connection_string: SecretStr | None = Field(
        None, **_env("APPLICATIONINSIGHTS_CONNECTION_STRING")
    )

    # Model data collection.
    data_collection_enabled: bool = Field(False, **_env("AZUREML_DATA_COLLECTION_ENABLED"))
    # Survives a restart of the server (an emptyDir survives a container restart in its pod).
    data_collection_spool_dir: str = Field(
        "/tmp/scorer-spool", **_env("AZUREML_DATA_COLLECTION_SPOOL_DIR")
    )
    data_collection_service: str = Field("default", **_env("AZUREML_DATA_COLLECTION_SERVICE"))
    # `<subscription id>/<resource group>/<workspace>`: the first folders of Azure ML's blob layout
    # (modeldata/<subscription>/<resourcegroup>/<workspace>/<service>/...), where its readers look.
    data_collection_workspace: str = Field("default/default/default", **_env("AZUREML_DATA_COLLECTION_WORKSPACE"))
    # `<name>:<version>` of every model the service serves; each record is filed under each.
    data_collection_models: list[str] = Field([], **_env("AZUREML_DATA_COLLECTION_MODELS"))
    data_collection_connection_string: SecretStr | None = Field(
        None, **_env("AZUREML_DATA_COLLECTION_CONNECTION_STRING")
    )
    # The blob endpoint (https://<account>.blob.core.windows.net/), no credential in it (a SecretStr as every URL
    # setting, so a SAS token given by mistake is never logged with the settings).
    data_collection_account_url: SecretStr | None = Field(None, **_env("AZUREML_DATA_COLLECTION_ACCOUNT_URL"))
    data_collection_container: str = Field("modeldata", **_env("AZUREML_DATA_COLLECTION_CONTAINER"))
    data_collection_container_url: SecretStr | None = Field(
        None, **_env("AZUREML_DATA_COLLECTION_CONTAINER_URL")
    )
    data_collection_local_dir: str | None = Field(None, **_env("AZUREML_DATA_COLLECTION_LOCAL_DIR"))
    # While shipping fails, the spool grows to this and no further (new records are left out and
    # counted): on a node's disk it would otherwise end in pods evicted for disk pressure.
    data_collection_spool_max_mb: float = Field(1024.0, gt=0, **_env("AZUREML_DATA_COLLECTION_SPOOL_MAX_MB"))
    # How often a worker seals its spool segment and the shipper uploads sealed ones.
    data_collection_batch_seconds: float = Field(
        5.0, gt=0, **_env("AZUREML_DATA_COLLECTION_BATCH_SECONDS")
    )

    @field_validator("cors_origins", "data_collection_models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(_LIST_SEPARATOR) if item.strip()]
        return value

    @field_validator("data_collection_models")
    @classmethod
    def _name_version(cls, value: list[str]) -> list[str]:
        """Each names a folder of its blobs (<service>/<name>/<version>/...), written by one thread."""
        for item in value:
            name, _, version = item.partition(":")
            if not (is_folder_name(name) and is_folder_name(version)):
                raise ValueError(f"model {item!r} is not <name>:<version> (each a folder name)")
        twice = sorted({item for item in value if value.count(item) > 1})
        if twice:
            raise ValueError(f"model {twice[0]!r} is listed twice")
        return value

    @field_validator("data_collection_service")
    @classmethod
    def _service_folder(cls, value: str) -> str:
        """It names the folder of its blobs (<service>/<name>/<version>/...), in a local folder too."""
        if not is_folder_name(value):
            raise ValueError(f"data_collection_service {value!r} is not a folder name (no '/' or '\\', not '.' or '..')")
        return value

    @field_validator("data_collection_workspace")
    @classmethod
    def _workspace_folders(cls, value: str) -> str:
        """Lowercased, as Azure ML's collector writes it into the path."""
        parts = value.split("/")
        if len(parts) != 3 or not all(is_folder_name(part) for part in parts):
            raise ValueError(f"data_collection_workspace {value!r} is not <subscription id>/<resource group>/<workspace>")
        return value.lower()

    @model_validator(mode="after")
    def _one_destination(self) -> ScorerSettings:
        if not self.data_collection_enabled:
            return self
        destinations = ("data_collection_account_url", "data_collection_connection_string",
                        "data_collection_container_url", "data_collection_local_dir")
        if sum(getattr(self, d) is not None for d in destinations) != 1:
            raise ValueError("data collection needs exactly one destination: "
                             + ", ".join(f"{d} [{self.env_name(d)}]" for d in destinations))
        if not self.data_collection_models:
            raise ValueError("data collection needs data_collection_models (<name>:<version>)")
        for field, problem in (("data_collection_account_url", _account_url_problem),
                               ("data_collection_connection_string", _connection_string_problem),
                               ("data_collection_container_url", _container_url_problem)):
            value = getattr(self, field)
            told = None if value is None else problem(value.get_secret_value())
            if told is not None:  # the value itself never told: it holds the credential
                raise ValueError(f"{field} [{self.env_name(field)}] {told}")
        return self

    @classmethod
    def env_name(cls, field: str) -> str:
        extra = cls.model_fields[field].json_schema_extra
        assert isinstance(extra, dict)
        return str(extra["env"])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScorerSettings:
        environ = os.environ if environ is None else environ
        values = {
            field: environ[cls.env_name(field)]
            for field in cls.model_fields
            if environ.get(cls.env_name(field), "") != ""
        }
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env()` return these settings (unset fields left out)."""
        env: dict[str, str] = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list):
                value = _LIST_SEPARATOR.join(value)
            env[self.env_name(field)] = str(value)
        return env

    @property
    def stop_grace_seconds(self) -> float:
        """How long stopping (SIGTERM) waits for the workers before it kills them: a worker drains requests in
        flight for up to scoring_timeout_ms, then exits. A pod's terminationGracePeriodSeconds must exceed it,
        by the time the last data-collection upload takes where collection is on."""
        return self.scoring_timeout_ms / 1000 + _STOP_MARGIN_SECONDS

    @property
    def worker_count(self) -> int:
        return self.workers or (1 if any(GPU_DEVICES.glob("nvidia[0-9]*")) else _cores())

    @property
    def entry_script_path(self) -> str:
        return os.path.join(self.app_root, self.entry_script)


def is_folder_name(text: str) -> bool:
    """One folder of a blob's name: joined to a local folder, "..", a separator or an absolute name leaves it."""
    return text not in ("", ".", "..") and not any(c in text for c in "/\\")


def _connection_string_problem(text: str) -> str | None:
    """Why the Blob SDK cannot write with this connection string (read as its parse_connection_str reads it):
    it refuses one it cannot split only when the shipper starts, and takes one without a credential, every
    upload then failing."""
    pairs = [pair.split("=", 1) for pair in text.rstrip(";").split(";")]
    if any(len(pair) != 2 for pair in pairs):
        return "is not <key>=<value> pairs separated by ';'"
    keys = {key.upper(): value for key, value in pairs}
    if keys.get("USEDEVELOPMENTSTORAGE") == "true":
        return None
    if not ({"ACCOUNTNAME", "ACCOUNTKEY"} <= keys.keys() or "SHAREDACCESSSIGNATURE" in keys):
        return "has no credential: AccountName with AccountKey, or SharedAccessSignature"
    if not {"BLOBENDPOINT", "ACCOUNTNAME"} & keys.keys():
        return "names no blob endpoint: BlobEndpoint or AccountName"
    return None


def _account_url_problem(text: str) -> str | None:
    """Why this is not a blob endpoint the workload identity signs in to: a credential in it (a SAS token) would
    be a second one, and a key reaching the pod is what this destination does without."""
    url = urlsplit(text)
    if url.scheme not in ("https", "http") or not url.netloc:
        return "is not an http(s) URL"
    if url.query:
        return ("carries a query; the pod's workload identity is its credential (a SAS token goes with "
                "data_collection_container_url)")
    return None


def _container_url_problem(text: str) -> str | None:
    """Why a container URL is not one the scorer can write to: it has no credential but the URL's SAS token."""
    url = urlsplit(text)
    if url.scheme not in ("https", "http") or not url.netloc:
        return "is not an http(s) URL"
    if not url.path.strip("/"):
        return "names no container: https://<account>.blob.core.windows.net/<container>?<SAS token>"
    if "sig" not in parse_qs(url.query):
        return "carries no SAS token (a query with sig=...), the only credential the scorer takes with a URL"
    return None


def _cores() -> int:
    """The cores this process may use: each worker loads the model, so a 2-CPU container on a 64-core host
    started 64 copies of it (out of memory, or a model on one GPU 64 times)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        limit = cores if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):  # cgroup v1, or not in a container
        return cores
    return max(1, min(cores, limit))
