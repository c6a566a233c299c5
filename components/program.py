"""The whole stack, declared from a stack file: what `pulumi up` and the offline plan run.

Workspace -> cluster -> images -> router -> the scorer pods' identity -> services and endpoints. Every service and
endpoint's scoring_uri and swagger_uri become stack outputs (`<name>_scoring_uri`, ...), its
keys secret stack outputs (`<name>_primary_key`, ...).

Images: the router and the scorer are built from their Dockerfiles; each distinct pair of
(source_directory, environment) becomes one application image, the scorer image (or the
environment's own base) with the entry script's folder at the Azure ML app root, as Azure ML
builds an image per environment. Models with a local `path` are uploaded to the workspace's
`models` container as `<name>/<version>/...`; models with a `url` are read where they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pulumi
import pulumi_azure_native.storage as storage
import pulumi_kubernetes as k8s

from components.cluster import AksCluster, ingestion_host
from components.deployable import DOCKERFILES, deployable_problems
from components.endpoint import EndpointVersion, ModelEndpoint, ModelEndpointArgs
from components.identity import ScorerIdentity, ScorerIdentityArgs
from components.image import HashedImage, HashedImageArgs
from components.router import ModelRouter, ModelRouterArgs, dns_label
from components.routes import routes
from components.service import (APP_INSIGHTS_KEY, STORAGE_KEY, ModelService, ModelServiceArgs, ModelSource,
                                WorkloadIdentity)
from components.sources import app_context
from components.spec import ModelSpec, Deployable, registry_name
from components.stackfile import Stack
from components.workspace import Workspace

CONNECTIONS_SECRET = "workspace-connections"
REPOSITORY = "aks-model-serving"
# What each image's Dockerfile copies from the project: its tag changes with these alone.
IMAGE_FILES = {"scorer": ("pyproject.toml", "http_server", "scoring_image"),
               "router": ("pyproject.toml", "setup_compiled.py", "http_server", "router_image")}
# What each image's build reads of pyproject.toml: the image holds it reduced to these, and its tag changes
# with them alone (not with a dev dependency, [tool.pytest] or the infra extra). `pip install --no-deps .`
# reads the build system, the project's metadata and setuptools' package list; the scorer image keeps the
# file, where a custom base installs its `scorer` extra from (app images on it follow its tag); the router's
# compile stage runs mypyc with [tool.mypy].
_INSTALL = ("build-system", "project.name", "project.version", "project.description", "project.requires-python",
            "project.dependencies", "tool.setuptools")
IMAGE_PYPROJECT = {
    "scorer": (*_INSTALL, "project.optional-dependencies.scorer", "project.optional-dependencies.sklearn"),
    "router": (*_INSTALL, "project.optional-dependencies.router", "tool.mypy"),
}


def build(stack: Stack) -> None:
    """Declare every resource of `stack`; raise pulumi.RunError for a stack that cannot deploy."""
    spec = stack.spec
    for warning in spec.warnings:  # what `check` prints, shown in the preview too (a refused one's as well)
        pulumi.log.warn(f"stack {stack.name}: {warning}")
    problems = deployable_problems(stack)
    if problems:
        raise pulumi.RunError(f"stack {stack.name} cannot be deployed to a cluster:\n  " + "\n  ".join(problems))
    assert spec.cluster is not None and spec.workspace is not None and stack.location is not None
    location = stack.location

    cluster_spec = spec.cluster
    if cluster_spec.attach is not None and cluster_spec.attach.kubeconfig:  # relative to the project, as every path
        attach = cluster_spec.attach.model_copy(update={"kubeconfig": str(stack.resolve(cluster_spec.attach.kubeconfig))})
        cluster_spec = cluster_spec.model_copy(update={"attach": attach})
    workspace = Workspace("workspace", spec.workspace, location)
    cluster = AksCluster("cluster", cluster_spec, workspace, location,
                         scoring_dns_label=dns_label(spec.router, spec.cluster.ssl), reached=_reached(stack, workspace))
    in_cluster = pulumi.ResourceOptions(provider=cluster.provider)

    registry = (workspace.registry_login_server, workspace.registry_password)
    scorer = HashedImage("scorer-image", image_args("scorer", stack.project_dir, *registry))
    router_image = HashedImage("router-image", image_args("router", stack.project_dir, *registry))
    app_images = _AppImages(stack, workspace, scorer)

    route_configs = routes(spec)
    published_specs = {("service", s.name): s for s in spec.services} | {("endpoint", e.name): e for e in spec.endpoints}
    router = ModelRouter("router", ModelRouterArgs(
        spec=spec.router, routes=route_configs, image=router_image.image_ref, cluster_purpose=spec.cluster.cluster_purpose,
        location=location, ssl=spec.cluster.ssl, service_annotations=cluster.service_annotations,
        auth={r.key_id: published_specs[(r.kind, r.name)] for r in route_configs},
    ), opts=in_cluster)
    # The scorer pods run the user's entry script: on a cluster the stack created they reach storage as an identity
    # of their own (the models and data containers alone), and the account key is nowhere in the cluster.
    identity: WorkloadIdentity | None = None
    connection_strings = {APP_INSIGHTS_KEY: workspace.app_insights_connection_string}
    if cluster.workload_identity:
        scorer_identity = ScorerIdentity("scorer-identity", ScorerIdentityArgs(
            workspace=workspace, issuer=cluster.oidc_issuer_url.apply(lambda url: url or ""), namespace=router.namespace,
            location=location), opts=pulumi.ResourceOptions(providers=[cluster.provider]))
        identity = WorkloadIdentity(scorer_identity.service_account, workspace.blob_endpoint)
        pulumi.export("oidc_issuer_url", cluster.oidc_issuer_url)
    else:
        pulumi.log.warn(f"cluster {spec.cluster.name}: an attached cluster gets no Azure AD workload identity from the "
                        "stack, so its scorer pods read models and write collected data with the workspace storage "
                        "account's key (every blob of the workspace, to the entry script too); create the cluster with "
                        "the stack to give them an identity of their own")
        connection_strings[STORAGE_KEY] = workspace.storage_connection_string
    connections = k8s.core.v1.Secret(
        CONNECTIONS_SECRET, metadata={"name": CONNECTIONS_SECRET, "namespace": router.namespace}, type="Opaque",
        string_data=connection_strings, opts=in_cluster)
    models = _Models(stack, workspace)
    access = {(r.kind, r.name): router.access(r) for r in route_configs}
    # A hash of the connection strings: a rotated key rolls the replicas.
    connections_sha256 = pulumi.Output.all(*connection_strings.values()).apply(
        lambda values: hashlib.sha256("\n".join(values).encode()).hexdigest()[:16])
    shared = dict(namespace=router.namespace, fetch_image=scorer.image_ref, connections_secret=connections.metadata.name,
                  connections_sha256=connections_sha256, data_container=workspace.data_container,
                  data_workspace=workspace.data_collection_workspace, workload_identity=identity)

    published: list[tuple[str, ModelService | ModelEndpoint]] = []
    for s in spec.services:
        published.append((s.name, ModelService(s.name, ModelServiceArgs(
            spec=s, image=app_images.ref(s), models=models.sources(s), access=access[("service", s.name)], **shared),
            opts=in_cluster)))
    for e in spec.endpoints:
        versions = [EndpointVersion(v, app_images.ref(v), models.sources(v)) for v in e.versions]
        published.append((e.name, ModelEndpoint(e.name, ModelEndpointArgs(
            spec=e, versions=versions, access=access[("endpoint", e.name)], **shared), opts=in_cluster)))

    pulumi.export("router_host", router.host)
    pulumi.export("token_signing_key", router.token_signing_key)
    pulumi.export("required_fqdns", cluster.required_fqdns)
    for name, published_route in published:
        pulumi.export(f"{name}_scoring_uri", published_route.scoring_uri)
        pulumi.export(f"{name}_swagger_uri", published_route.swagger_uri)
        if published_route.primary_key is not None:
            pulumi.export(f"{name}_primary_key", published_route.primary_key)
            pulumi.export(f"{name}_secondary_key", published_route.secondary_key)


def _reached(stack: Stack, workspace: Workspace) -> list[pulumi.Input[str]]:
    """Hosts the pods reach besides the stack's own resources: the storage accounts of the models they read by url
    (one given as a secret is not named) and Application Insights' ingestion when a deployment reports to it (the host
    alone, not the key beside it in the connection string, so no secret)."""
    deployables = [dep for _, dep in stack.spec.deployments()]
    models = [stack.spec.model(ref) for dep in deployables for ref in dep.models]
    hosts: list[pulumi.Input[str]] = []
    hosts += sorted({urlsplit(m.url).hostname or "" for m in models if isinstance(m.url, str)})
    if any(dep.enable_app_insights for dep in deployables):
        hosts.append(pulumi.Output.unsecret(workspace.app_insights_connection_string.apply(ingestion_host)))
    return hosts


def image_args(name: str, project_dir: Path, registry_login_server: pulumi.Input[str],
               registry_password: pulumi.Input[str | None] | None = None) -> HashedImageArgs:
    """The router's or the scorer's image (`name`), built from its Dockerfile in the project."""
    return HashedImageArgs(
        repository=f"{REPOSITORY}/{name}", registry_login_server=registry_login_server,
        registry_password=registry_password, context=project_dir, dockerfile=project_dir / DOCKERFILES[name],
        include=IMAGE_FILES[name], pyproject=IMAGE_PYPROJECT[name])


class _AppImages:
    """One image per distinct (source folder, environment): deployables that agree share it."""

    def __init__(self, stack: Stack, workspace: Workspace, scorer: HashedImage):
        self._stack, self._workspace, self._scorer = stack, workspace, scorer
        # A generated Dockerfile names the scorer image by tag (a plain string, part of the hash); the
        # registry's login server is its lower-cased name in the public cloud.
        login = f"{registry_name(stack.spec.workspace).lower()}.azurecr.io"  # type: ignore[arg-type]
        self._scorer_ref = f"{login}/{REPOSITORY}/scorer:{scorer.tag}"
        self._images: dict[str, HashedImage] = {}

    def ref(self, dep: Deployable) -> pulumi.Output[str]:
        ic = dep.inference_config
        assert ic is not None  # the spec requires one
        context = app_context(self._stack, ic)
        # The folder as the stack names it, not where this checkout lies: the key names the image's resources,
        # and a checkout elsewhere (a CI runner's) would replace them.
        where = os.path.relpath(context, self._stack.project_dir)
        key = hashlib.sha256(json.dumps([where, ic.app_files, ic.environment.model_dump(mode="json")],
                                        sort_keys=True).encode()).hexdigest()[:12]
        if key not in self._images:
            # The build starts FROM the scorer image, or copies it in, so it waits for the scorer's push.
            self._images[key] = HashedImage(f"app-{key}", HashedImageArgs.from_environment(
                ic.environment, repository=f"{REPOSITORY}/app", registry_login_server=self._workspace.registry_login_server,
                registry_password=self._workspace.registry_password,
                context=context, include=ic.app_files, scorer_image=self._scorer_ref, base_dir=self._stack.project_dir),
                opts=pulumi.ResourceOptions(depends_on=[self._scorer]))
        return self._images[key].image_ref


class _Models:
    """Where each declared model is read from; local folders are uploaded once, file by file."""

    def __init__(self, stack: Stack, workspace: Workspace):
        self._stack, self._workspace = stack, workspace
        self._sources: dict[str, ModelSource] = {}

    def sources(self, dep: Deployable) -> list[ModelSource]:
        return [self._source(self._stack.spec.model(ref)) for ref in dep.models]

    def _source(self, model: ModelSpec) -> ModelSource:
        if model.ref not in self._sources:
            if model.url:
                url: pulumi.Input[str] = model.url if isinstance(model.url, str) else pulumi.Output.secret(model.url_text)
            else:
                blobs = self._upload(model)
                ws = self._workspace
                # Through the uploads, so the replicas that fetch the folder wait for its files.
                url = pulumi.Output.all(ws.blob_endpoint, ws.models_container, *[b.id for b in blobs]).apply(
                    lambda a: f"{a[0]}{a[1]}/{model.name}/{model.version}")
            self._sources[model.ref] = ModelSource(model.name, model.version, url)
        return self._sources[model.ref]

    def _upload(self, model: ModelSpec) -> list[storage.Blob]:
        path = self._stack.resolve(model.path)  # type: ignore[arg-type]
        folder = path.parent if path.is_file() else path
        files = [path.name] if path.is_file() else _files(path)
        if not files:
            # The replica's init container then stops with "no files under ...": the deploy fails loudly.
            pulumi.log.warn(f"models {model.ref}: {path} holds no files here; nothing is uploaded, so its replicas "
                            "cannot start until it is (train or copy the model, then run again)")
        ws = self._workspace
        return [storage.Blob(
            f"model-{model.name}-{model.version}-{rel}",
            resource_group_name=ws.resource_group_name, account_name=ws.storage_account_name,
            container_name=ws.models_container, blob_name=f"{model.name}/{model.version}/{rel}",
            type=storage.BlobType.BLOCK, source=pulumi.FileAsset(str(folder / rel))) for rel in files]


def _files(folder: Path) -> list[str]:
    return sorted(str(Path(root, f).relative_to(folder).as_posix()) for root, _, names in os.walk(folder) for f in names)
