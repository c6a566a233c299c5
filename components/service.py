"""ModelService: one version of a model web service on the cluster.

A scorer Deployment, a headless Service and a PodDisruptionBudget of the same name, in the router's
namespace. The router finds the replicas through the Service's EndpointSlices and scales the Deployment
through its scale subresource, so there is deliberately no HorizontalPodAutoscaler here.
Models are copied from blob storage by an init container into an emptyDir laid out as
Azure ML lays out AZUREML_MODEL_DIR (`<root>/<name>/<version>/...`).
The workspace's storage is reached as the pods' Azure AD workload identity where the cluster has one
(`ModelServiceArgs.workload_identity`), else with the connection string from the connections Secret.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pydantic import SecretStr

from components.accelerators import SCHEDULING
from components.spec import ENV_NAME, K8S_NAME_MAX, ROUTER_NAME, Deployable, ServiceSpec, deployment_name, is_router_name, label_problems
from scoring_image.config import FINAL_UPLOAD_SECONDS, ScorerSettings

SCORER_PORT = 5001
# The scorer's /metrics alone, which a cluster's Prometheus may reach (SCORER_PORT scores with no auth:
# only the router may reach it). Pods carry the prometheus.io annotations scrapers look for.
METRICS_PORT = 5002
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}
APP_ROOT = "/var/azureml-app"  # where a service image holds the entry script's source_directory
MODELS = "azureml-models"  # the models' folder in the app root, as Azure ML's
MODEL_ROOT = f"{APP_ROOT}/{MODELS}"
MANIFEST_DIR = "/etc/azureml-models"
SPOOL_DIR = "/var/azureml-spool"
SPOOL_BUDGET_MB = ScorerSettings.model_fields["data_collection_spool_max_mb"].default  # the scorer's own default
DEFAULT_DATA_WORKSPACE = ScorerSettings.model_fields["data_collection_workspace"].default  # Azure ML's, outside a workspace
# Keys of the namespace's workspace connection Secret (created by the program).
STORAGE_KEY = "storage-connection-string"
APP_INSIGHTS_KEY = "appinsights-connection-string"
# On a pod: Azure AD workload identity's webhook projects its ServiceAccount's federated token and sets
# AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST in each container.
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"

SERVICE_NAME = rf"[a-z]([-a-z0-9]{{0,{K8S_NAME_MAX - 2}}}[a-z0-9])?"  # DNS-1035, as Kubernetes checks a Service's name
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_ENDPOINT = "aks-model-serving/endpoint"
LABEL_VERSION = "aks-model-serving/version"
PART_OF = "aks-model-serving"
# Azure ML's service metadata, on the Deployment where `kubectl describe` shows it (tag keys are free
# text, which label and annotation keys are not: the tags go as one JSON object).
DESCRIPTION = "kubernetes.io/description"
TAGS = "aks-model-serving/tags"
ENDPOINT_DESCRIPTION = "aks-model-serving/endpoint-description"
ROUTER_PODS = {LABEL_NAME: ROUTER_NAME, LABEL_COMPONENT: "router"}

# The init container's program: list each model's blobs and copy them under MODEL_ROOT.
# A model whose prefix holds no blob fails the pod, so a replica never starts without its model.
# What it prints names a url without its query: a SAS token, the url's credential, would reach the
# pod's log (and Log Analytics with it).
FETCH_MODELS = """
import ipaddress, json, os, sys
from pathlib import Path
from urllib.parse import urlsplit
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient

def path_style(host):  # an emulator's url (Azurite): the account is the path's first part, as the SDK reads it
    try:
        return host == "localhost" or bool(ipaddress.ip_address(host))
    except ValueError:
        return False

root = Path(os.environ["MODEL_ROOT"])
conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")  # signed in to as the pod's workload identity
workspace = None
if conn:
    workspace = BlobServiceClient.from_connection_string(conn)
elif account_url:  # the fetch image is the scorer's: its one check of the pod's identity
    from scoring_image.collection.destinations import workload_identity
    try:
        credential = workload_identity("AZURE_STORAGE_ACCOUNT_URL")
    except ValueError as exc:
        sys.exit(str(exc))
    workspace = BlobServiceClient(account_url, credential=credential)
for m in json.loads(Path(os.environ["MODELS_MANIFEST"]).read_text()):
    url = urlsplit(m["url"])
    parts = url.path.lstrip("/").split("/")
    account = f"{url.scheme}://{url.netloc}"
    if path_style(url.hostname):
        account += "/" + parts.pop(0)
    container, prefix = parts[0], "/".join(parts[1:]).rstrip("/") + "/"
    where = f"{account}/{container}/{prefix}"
    if workspace is not None and workspace.url.rstrip("/") == account:
        client = workspace.get_container_client(container)
    else:
        client = ContainerClient(account, container, credential=url.query or None)
    dest = root / m["name"] / str(m["version"])
    count = 0
    try:
        for blob in client.list_blobs(name_starts_with=prefix):
            target = dest / blob.name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                client.download_blob(blob.name).readinto(f)
            count += 1
    except AzureError as exc:
        code = getattr(exc, "error_code", None) or type(exc).__name__
        code = getattr(code, "value", code)  # a StorageErrorCode
        sys.exit(f"model {m['name']}:{m['version']}: {code} reading {where} ({getattr(exc, 'reason', None) or 'no answer'})")
    if not count:
        sys.exit(f"model {m['name']}:{m['version']}: no files under {where}")
    print(f"model {m['name']}:{m['version']}: {count} files", flush=True)
"""


@dataclass(frozen=True)
class ModelSource:
    """A model a replica needs: copied from `url` (a blob folder) to `<root>/<name>/<version>/`."""

    name: str
    version: int
    url: pulumi.Input[str]


@dataclass(frozen=True)
class WorkloadIdentity:
    """How the pods reach the workspace's storage without its key: they run as `service_account`, federated with
    an Azure AD identity granted the models and data containers (ScorerIdentity), at `account_url` (its blob
    endpoint)."""

    service_account: pulumi.Input[str]
    account_url: pulumi.Input[str]


@dataclass(frozen=True)
class RouteAccess:
    """How clients call a service or endpoint: what the router publishes for its route."""

    scoring_uri: pulumi.Input[str]
    swagger_uri: pulumi.Input[str]
    primary_key: pulumi.Input[str] | None = None
    secondary_key: pulumi.Input[str] | None = None


@dataclass
class ModelServiceArgs:
    """What one version of a service needs on the cluster.

    `deployment` is the Kubernetes name of its Deployment and headless Service: the name the router's
    routes give it (`deployment_name(service)`, or `deployment_name(endpoint, version)`), which a
    service's spec implies and an endpoint version's must be given; the component's own (Pulumi)
    name is free, so one service can run under several routers of a program.
    `image` runs the entry script (the scorer image, or the service's own environment image),
    with the entry script's source_directory at APP_ROOT; `fetch_image` copies the models (the
    scorer image: it carries azure-storage-blob). `connections_secret` names the namespace's
    Secret holding APP_INSIGHTS_KEY and, where the pods have no `workload_identity`, STORAGE_KEY;
    `connections_sha256` a hash of its values (read at a container's start, a rotated key must roll the replicas;
    a pod annotation, no secret whatever it is made from). `workload_identity`: the pods read models and write
    collected data as their Azure AD identity, and never see the storage key. `access` is given for a service's
    own route and left out for an endpoint's version (the endpoint publishes the route).
    """

    spec: Deployable
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    fetch_image: pulumi.Input[str]
    models: Sequence[ModelSource] = ()
    connections_secret: pulumi.Input[str] | None = None
    connections_sha256: pulumi.Input[str] | None = None
    data_container: pulumi.Input[str] = "modeldata"
    # `<subscription>/<resource group>/<workspace>`: the first folders of the collected data (Workspace's output).
    data_workspace: pulumi.Input[str] = DEFAULT_DATA_WORKSPACE
    workload_identity: WorkloadIdentity | None = None
    access: RouteAccess | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # the Deployment's, beside the spec's description and tags
    deployment: str | None = None
    # Environment variables from other resources (a Key Vault secret), kept as the spec's secure ones are;
    # one of a name the spec also gives wins.
    secret_variables: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.deployment is None:
            if not isinstance(self.spec, ServiceSpec):
                raise ValueError("ModelServiceArgs.deployment: an endpoint version's Deployment is named as the router's "
                                 "routes name it, deployment_name(<endpoint>, <version>); give it")
            self.deployment = deployment_name(self.spec.name)
        if not re.fullmatch(SERVICE_NAME, self.deployment):
            raise ValueError(f"ModelServiceArgs.deployment: {self.deployment!r} is not a Kubernetes Service name "
                             f"(lowercase letters, digits and '-', starting with a letter, at most {K8S_NAME_MAX})")
        if is_router_name(self.deployment):
            raise ValueError(f"ModelServiceArgs.deployment: {self.deployment!r} is the router's name ({ROUTER_NAME} and "
                             f"{ROUTER_NAME}-*), whose objects share the namespace; name the service or endpoint otherwise")
        for name in self.secret_variables:
            if not re.match(ENV_NAME, name):
                raise ValueError(f"ModelServiceArgs.secret_variables: {name!r} is not a variable name (letters, digits, _, "
                                 "not starting with a digit)")
        problems = label_problems("ModelServiceArgs.labels", self.labels)
        problems += label_problems("ModelServiceArgs.annotations", self.annotations, "annotation")
        if problems:
            raise ValueError("; ".join(problems))
        settings = self.spec
        if self.connections_secret is None and (settings.enable_app_insights or (
                settings.collect_model_data and self.workload_identity is None)):
            raise ValueError("ModelServiceArgs.connections_secret: enable_app_insights, and collect_model_data without a "
                             "workload_identity, read their connection strings from it "
                             f"({APP_INSIGHTS_KEY}, {STORAGE_KEY}); give the Secret's name")


def cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def memory_quantity(gb: float) -> str:
    """Azure ML's memory_gb is GiB, as Kubernetes' Gi."""
    return f"{round(gb * 1024)}Mi"


def model_dir(models: Sequence[ModelSource]) -> str:
    """Azure ML's AZUREML_MODEL_DIR: the version folder of a single model, else the root, relative to the app root
    (the scorer's working directory) as Azure ML sets it: `azureml-models/<name>/<version>`. A script joins a file
    to it as to an absolute path, and MLOpsPython's (diabetes_regression/scoring/score.py) take the model's name
    from it by position, `.split('/')[1]`, which an absolute path made "var"."""
    if len(models) == 1:
        return f"{MODELS}/{models[0].name}/{models[0].version}"
    return MODELS


def scorer_env(name: str, spec: Deployable, models: Sequence[ModelSource],
               connections_secret: pulumi.Input[str] | None, data_container: pulumi.Input[str],
               data_workspace: pulumi.Input[str], variables_secret: pulumi.Input[str] | None = None,
               secret_names: Sequence[str] = (), account_url: pulumi.Input[str] | None = None) -> list[dict]:
    """The scorer container's environment, rendered by the scorer's own settings model.

    Secrets never appear as values: connection strings are references into the namespace's
    connection Secret, so `to_env()` is given a stand-in that is then swapped for the reference;
    the secret variables (`secret_names`) are references into `variables_secret`. With `account_url` collected
    data is written as the pod's workload identity, and no storage connection string is referenced.
    """
    collect = spec.collect_model_data
    stand_in = SecretStr("AccountName=from-secret;AccountKey=from-secret")  # shaped as the settings check it
    as_identity = collect and account_url is not None
    settings = ScorerSettings(
        entry_script=spec.inference_config.app_entry_script if spec.inference_config else "score.py",
        model_dir=model_dir(models),
        app_root=APP_ROOT,
        port=SCORER_PORT,
        metrics_port=METRICS_PORT,
        # One worker per core of the limit: the node's core count (what the scorer sees) is not ours. On a GPU, one
        # (Azure ML's default): each worker loads the model, and their copies would share the GPU's memory.
        workers=1 if spec.gpu_cores else max(1, math.ceil(spec.cpu_limit)),
        scoring_timeout_ms=spec.scoring_timeout_ms,
        appinsights_connection_string=stand_in if spec.enable_app_insights else None,
        data_collection_enabled=collect,
        data_collection_spool_dir=SPOOL_DIR,
        data_collection_service=name,
        data_collection_models=[f"{m.name}:{m.version}" for m in models] if collect else [],
        data_collection_connection_string=stand_in if collect and not as_identity else None,
        data_collection_account_url=SecretStr("https://from-output/") if as_identity else None,
    )
    secret_refs = {
        ScorerSettings.env_name("appinsights_connection_string"): APP_INSIGHTS_KEY,
        ScorerSettings.env_name("data_collection_connection_string"): STORAGE_KEY,
    }
    from_outputs = {ScorerSettings.env_name("data_collection_container"): data_container,
                    ScorerSettings.env_name("data_collection_workspace"): data_workspace,
                    ScorerSettings.env_name("data_collection_account_url"): account_url}
    env: list[dict] = []
    for key, value in sorted(settings.to_env().items()):
        if key in secret_refs:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": connections_secret, "key": secret_refs[key]}}})
        elif key in from_outputs:
            env.append({"name": key, "value": from_outputs[key]})
        else:
            env.append({"name": key, "value": value})
    if spec.enable_app_insights:  # Application Insights' cloud role: which service (endpoint version) sent it
        env.append({"name": "OTEL_SERVICE_NAME", "value": name})
    environment = spec.inference_config.environment if spec.inference_config else None
    if environment is not None:
        # A variable the user sets wins (Azure ML's WORKER_COUNT, their own OTEL_SERVICE_NAME): one entry of a
        # name, which a server-side apply requires.
        given = set(environment.environment_variables)
        env = [e for e in env if e["name"] not in given]
        env += [{"name": k, "value": v} for k, v in sorted(environment.image_variables.items()) if k not in secret_names]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": variables_secret, "key": k}}} for k in sorted(secret_names)]
    return env


def _rollout(spec: Deployable) -> dict:
    """A rollout never takes serving replicas away before their successors are ready (Kubernetes' default
    takes a quarter of them out while the new ones load their models), except on accelerators when
    there are always two or more: a surge pod needs a GPU (or FPGA) more than the pool may have (stuck
    Pending, the rollout stalls); one at a time leaves the others serving."""
    if (spec.gpu_cores or spec.fpga_cores) and spec.replicas >= 2:
        return {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}
    return {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}}


def _resources(spec: Deployable) -> dict:
    requests = {"cpu": cpu_quantity(spec.cpu_cores), "memory": memory_quantity(spec.memory_gb)}
    limits = {"cpu": cpu_quantity(spec.cpu_limit), "memory": memory_quantity(spec.memory_limit_gb)}
    if spec.collect_model_data:
        # The spool (an emptyDir) fills to its budget while the store is down: the scheduler keeps that much of
        # the node's disk for it, and under disk pressure the kubelet evicts pods over their request first.
        # Requested, not limited: past a limit the kubelet evicts the pod, its spool with it.
        requests["ephemeral-storage"] = f"{math.ceil(SPOOL_BUDGET_MB)}Mi"
    for kind, cores in (("gpu", spec.gpu_cores), ("fpga", spec.fpga_cores)):
        if cores:
            # Extended resources are whole devices, requested and limited alike.
            requests[SCHEDULING[kind].resource] = limits[SCHEDULING[kind].resource] = str(cores)
    return {"requests": requests, "limits": limits}


def _probes(spec: Deployable) -> dict:
    """Azure ML's probe settings. Kubernetes takes a success threshold above 1 only for readiness."""
    timing = {"periodSeconds": spec.period_seconds, "timeoutSeconds": spec.timeout_seconds,
              "failureThreshold": spec.failure_threshold}
    return {
        "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "initialDelaySeconds": spec.initial_delay_seconds,
                          "successThreshold": 1, **timing},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "successThreshold": spec.success_threshold, **timing},
    }


def _metadata(spec: Deployable, given: dict[str, str]) -> dict[str, str]:
    annotations = dict(given)
    if spec.description:
        annotations[DESCRIPTION] = spec.description
    if spec.tags:
        annotations[TAGS] = json.dumps(spec.tags, sort_keys=True)
    return annotations


# The router scales a Deployment through its scale subresource, which makes it the owner of spec.replicas, and
# pulumi-kubernetes' server-side apply overwrites no field another manager owns: the `up` that fixes the count again
# (autoscaling turned off) failed on a field conflict. A Deployment whose count Pulumi owns takes it back.
OWN_REPLICAS = {"pulumi.com/patchForce": "true"}


def owned_count(autoscaled: bool) -> dict[str, str]:
    """A Deployment's annotations for who owns its count: the router's when autoscaled, else Pulumi's."""
    return {} if autoscaled else dict(OWN_REPLICAS)


# Pulumi waits 10 minutes for a Deployment to be ready. An accelerator replica may first wait for the
# cluster autoscaler's GPU (or FPGA) node, its device plugin and a CUDA image of several GB: a first
# `up` would fail while the rollout is still on its way.
ACCELERATOR_TIMEOUTS = pulumi.CustomTimeouts(create="30m", update="30m")


def _accelerator(spec: Deployable) -> dict:
    kind = "gpu" if spec.gpu_cores else "fpga" if spec.fpga_cores else None
    if kind is None:
        return {}
    return {"nodeSelector": SCHEDULING[kind].selector, "tolerations": [SCHEDULING[kind].toleration]}


# Before SIGTERM: a deleted pod leaves the EndpointSlices at once, but the router (and kube-proxy, a
# load balancer) learns it a moment later and goes on sending it new connections; a server that
# stopped listening at once would answer them with a reset (a 502, as the request was sent).
PRE_STOP_S = 5
PRE_STOP = {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}}


def termination_grace_seconds(spec: Deployable) -> int:
    """How long Kubernetes waits, counted from the preStop hook, before it kills the pod (its default,
    30 s, is half of Azure ML's default scoring timeout: a slow request in flight was cut off)."""
    # After the scorer's own stop, the last upload of collected data: the spool is an emptyDir, gone with the pod.
    return PRE_STOP_S + math.ceil(ScorerSettings(scoring_timeout_ms=spec.scoring_timeout_ms).stop_grace_seconds + FINAL_UPLOAD_SECONDS)


def spread(selector: dict[str, str]) -> dict:
    """Replicas on different nodes and zones where the scheduler can (preferred, so a small or one-zone
    pool still runs them all): one node's or one zone's loss leaves the others serving. The scheduler's
    own zone default allows a skew of 5, which a handful of replicas never reaches. Only the pods of
    one revision are counted against each other (pod-template-hash), so a rollout spreads too."""
    return {
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": selector},
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}, "matchLabelKeys": ["pod-template-hash"]}],
    }


def disruption_budget(name: str, metadata: dict, selector: dict[str, str], parent: pulumi.Resource) -> None:
    """A drain or an AKS upgrade evicts one replica at a time. maxUnavailable, not minAvailable:
    a single replica must not block the drain for good. Nor may replicas that run but are not ready
    (a scorer whose init() keeps failing stays so): by default they count as the disruption already
    spent, and the drain, the node image upgrade with it, waits for ever (AlwaysAllow, GA in 1.31)."""
    k8s.policy.v1.PodDisruptionBudget(name, metadata=metadata,
                                      spec={"maxUnavailable": 1, "selector": {"matchLabels": selector},
                                            "unhealthyPodEvictionPolicy": "AlwaysAllow"},
                                      opts=pulumi.ResourceOptions(parent=parent))


CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# Mounted secrets: readable by the pod's group (fsGroup) only, not by every user of the container.
SECRET_FILE_MODE = 0o440
# The scorer image's user (scoring_image/Dockerfile); numeric, so runAsNonRoot can be verified.
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
FETCH_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1000m", "memory": "512Mi"}}


class ModelService(pulumi.ComponentResource):
    """One version of a model web service: scorer Deployment, headless Service, models manifest.

    Outputs: deployment_name; and for a service's own route scoring_uri, swagger_uri and the
    keys (secrets; None with token auth).
    """

    deployment_name: pulumi.Output[str]
    scoring_uri: pulumi.Output[str] | None
    swagger_uri: pulumi.Output[str] | None
    primary_key: pulumi.Output[str] | None
    secondary_key: pulumi.Output[str] | None

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:ModelService", name, None, opts)
        self._digest_key: pulumi.Output[str] | None = None
        spec = args.spec
        k8s_name = args.deployment
        assert k8s_name is not None  # __post_init__
        # Its own labels last: a user's must not unlink the selector from the pods.
        labels = {**args.labels, LABEL_NAME: k8s_name, LABEL_COMPONENT: "model", LABEL_PART_OF: PART_OF}
        selector = {LABEL_NAME: k8s_name}
        meta = {"name": k8s_name, "namespace": args.namespace, "labels": labels}

        volumes: list[dict] = [{"name": "spool", "emptyDir": {}}]
        scorer_mounts = [{"name": "spool", "mountPath": SPOOL_DIR}]
        init: list[dict] = []
        annotations: dict[str, pulumi.Input[str]] = dict(SCRAPE)
        if args.connections_sha256 is not None:
            # No secret, though made from secrets: a secret annotation turned the whole spec into one in every preview.
            annotations["aks-model-serving/connections-sha256"] = pulumi.Output.unsecret(
                pulumi.Output.from_input(args.connections_sha256))
        if args.models:
            # A Secret: a model url may carry a SAS token (its query), which the fetch reads as its credential.
            manifest = pulumi.Output.secret(pulumi.Output.all(*[m.url for m in args.models]).apply(
                lambda urls: json.dumps([{"name": m.name, "version": m.version, "url": u} for m, u in zip(args.models, urls)],
                                        indent=1, sort_keys=True)))
            models = k8s.core.v1.Secret(
                f"{name}-models", metadata={**meta, "name": f"{k8s_name}-models"}, type="Opaque",
                string_data={"models.json": manifest}, opts=pulumi.ResourceOptions(parent=self))
            # Models are read once at start: a changed list must roll the replicas.
            annotations["aks-model-serving/models-sha256"] = self._digest(name, manifest)
            volumes += [{"name": "models", "emptyDir": {}},
                        {"name": "models-manifest", "secret": {"secretName": models.metadata.name, "defaultMode": SECRET_FILE_MODE}}]
            scorer_mounts.append({"name": "models", "mountPath": MODEL_ROOT, "readOnly": True})
            fetch_env: list[dict] = [{"name": "MODEL_ROOT", "value": MODEL_ROOT},
                                     {"name": "MODELS_MANIFEST", "value": f"{MANIFEST_DIR}/models.json"}]
            if args.workload_identity is not None:
                fetch_env.append({"name": "AZURE_STORAGE_ACCOUNT_URL", "value": args.workload_identity.account_url})
            elif args.connections_secret is not None:
                fetch_env.append({"name": "AZURE_STORAGE_CONNECTION_STRING",
                                  "valueFrom": {"secretKeyRef": {"name": args.connections_secret, "key": STORAGE_KEY}}})
            init.append({
                "name": "fetch-models", "image": args.fetch_image, "command": ["python", "-c", FETCH_MODELS],
                "env": fetch_env, "resources": FETCH_RESOURCES, "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "models", "mountPath": MODEL_ROOT},
                                 {"name": "models-manifest", "mountPath": MANIFEST_DIR, "readOnly": True}],
            })

        variables_secret = None
        from_spec = spec.inference_config.environment.secret_variables if spec.inference_config else {}
        given: dict[str, pulumi.Input[str]] = {k: v.get_secret_value() for k, v in from_spec.items()}
        given |= args.secret_variables
        if given:
            values = {k: pulumi.Output.secret(v) for k, v in given.items()}
            variables = k8s.core.v1.Secret(
                f"{name}-env", metadata={**meta, "name": f"{k8s_name}-env"}, type="Opaque", string_data=values,
                opts=pulumi.ResourceOptions(parent=self))
            variables_secret = variables.metadata.name
            # Read at a container's start: a changed value must roll the replicas.
            annotations["aks-model-serving/env-sha256"] = self._digest(
                name, pulumi.Output.all(**values).apply(lambda v: json.dumps(v, sort_keys=True)))

        scorer = {
            "name": "scorer",
            "image": args.image,
            "workingDir": APP_ROOT,  # what AZUREML_MODEL_DIR is relative to, whatever the image's WORKDIR
            "ports": [{"name": "http", "containerPort": SCORER_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}],
            "env": scorer_env(k8s_name, spec, args.models, args.connections_secret, args.data_container,
                              args.data_workspace, variables_secret, sorted(given),
                              args.workload_identity.account_url if args.workload_identity else None),
            "resources": _resources(spec),
            "volumeMounts": scorer_mounts,
            "securityContext": CONTAINER_SECURITY,
            "lifecycle": PRE_STOP,
            **_probes(spec),
        }
        pod_labels: dict[str, str] = dict(labels)
        identity: dict[str, pulumi.Input[str]] = {}
        if args.workload_identity is not None:
            pod_labels[WORKLOAD_IDENTITY_LABEL] = "true"
            identity["serviceAccountName"] = args.workload_identity.service_account
        # The router owns the replica count when it autoscales: Pulumi sets the starting size only.
        autoscaled = bool(spec.autoscale_enabled)
        deployment = k8s.apps.v1.Deployment(
            name,
            metadata={**meta, "annotations": {**_metadata(spec, args.annotations), **owned_count(autoscaled)}},
            spec={
                "replicas": spec.replicas,
                "selector": {"matchLabels": selector},
                **_rollout(spec),
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": annotations},
                    "spec": {"initContainers": init, "containers": [scorer], "volumes": volumes,
                             "securityContext": POD_SECURITY, "terminationGracePeriodSeconds": termination_grace_seconds(spec),
                             # A scoring script is the user's code: it gets no API credentials (the webhook's
                             # federated token is good for Azure AD alone, as the pods' own identity).
                             "automountServiceAccountToken": False, **identity,
                             **spread(selector), **_accelerator(spec)},
                },
            },
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["spec.replicas"] if autoscaled else None,
                                        custom_timeouts=ACCELERATOR_TIMEOUTS if spec.gpu_cores or spec.fpga_cores else None),
        )
        # Headless: the router balances over the replicas itself, from the EndpointSlices.
        k8s.core.v1.Service(
            name,
            metadata=meta,
            spec={"clusterIP": "None", "selector": selector,
                  "ports": [{"name": "http", "port": SCORER_PORT, "targetPort": "http"}]},
            opts=pulumi.ResourceOptions(parent=self),
        )
        disruption_budget(name, meta, selector, self)
        # The scorer asks for no key or token: the router does. Only the router's pods may reach it, or any
        # pod in the cluster could score past auth, the traffic split and the queue (the cluster's
        # network.policy engine enforces it). Its metrics port serves nothing else: Prometheus, in whatever
        # namespace it runs, may scrape it (pods only, not the VNet behind an azure CNI).
        k8s.networking.v1.NetworkPolicy(
            name,
            metadata=meta,
            spec={"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": ROUTER_PODS}}],
                               "ports": [{"protocol": "TCP", "port": SCORER_PORT}]},
                              {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": METRICS_PORT}]}]},
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.deployment_name = deployment.metadata.name
        access = args.access
        self.scoring_uri = pulumi.Output.from_input(access.scoring_uri) if access else None
        self.swagger_uri = pulumi.Output.from_input(access.swagger_uri) if access else None
        self.primary_key = pulumi.Output.secret(access.primary_key) if access and access.primary_key is not None else None
        self.secondary_key = pulumi.Output.secret(access.secondary_key) if access and access.secondary_key is not None else None
        self.register_outputs({
            "deployment_name": self.deployment_name,
            "scoring_uri": self.scoring_uri,
            "swagger_uri": self.swagger_uri,
            "primary_key": self.primary_key,
            "secondary_key": self.secondary_key,
        })

    def _digest(self, name: str, text: pulumi.Output[str]) -> pulumi.Output[str]:
        """A short digest of secret text, for a pod annotation that rolls the replicas when it changes. The
        annotation is readable by whoever reads Deployments: keyed with a random key of the service's own,
        so that a short secret (a PIN) cannot be found by hashing guesses."""
        if self._digest_key is None:
            self._digest_key = random.RandomPassword(f"{name}-digest-key", length=32, special=False,
                                                     opts=pulumi.ResourceOptions(parent=self)).result
        return pulumi.Output.unsecret(pulumi.Output.all(self._digest_key, text).apply(
            lambda kt: hmac.new(kt[0].encode(), kt[1].encode(), "sha256").hexdigest()[:16]))
