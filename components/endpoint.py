"""ModelEndpoint: up to 6 versions of a model behind one URL (Azure ML's AksEndpoint).

Each version is a ModelService whose Deployment is named `<endpoint>-<version>`; the traffic split (percentiles,
the default taking the remainder, one control and its treatments) lives in the router's
config, which routes `/api/v1/endpoint/<name>/score` over the versions' replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi

from components.service import (DEFAULT_DATA_WORKSPACE, ENDPOINT_DESCRIPTION, LABEL_ENDPOINT, LABEL_VERSION, ModelService,
                                ModelServiceArgs, ModelSource, RouteAccess, WorkloadIdentity)
from components.spec import MAX_ENDPOINT_VERSIONS, EndpointSpec, EndpointVersionSpec, deployment_name


@dataclass(frozen=True)
class EndpointVersion:
    """One version's deployment inputs: its settings, the image that runs it, its models, and environment
    variables from other resources (a Key Vault's secrets: ModelServiceArgs.secret_variables)."""

    spec: EndpointVersionSpec
    image: pulumi.Input[str]
    models: Sequence[ModelSource] = ()
    secret_variables: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


@dataclass
class ModelEndpointArgs:
    """An endpoint's versions and what they share (see ModelServiceArgs for the fields)."""

    spec: EndpointSpec
    namespace: pulumi.Input[str]
    versions: Sequence[EndpointVersion]
    fetch_image: pulumi.Input[str]
    access: RouteAccess
    connections_secret: pulumi.Input[str] | None = None
    connections_sha256: pulumi.Input[str] | None = None
    data_container: pulumi.Input[str] = "modeldata"
    data_workspace: pulumi.Input[str] = DEFAULT_DATA_WORKSPACE
    workload_identity: WorkloadIdentity | None = None


class ModelEndpoint(pulumi.ComponentResource):
    """Outputs: scoring_uri, swagger_uri, the keys (secrets; None with token auth), and
    versions: the Deployment of each version by version_name."""

    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str] | None
    secondary_key: pulumi.Output[str] | None
    versions: dict[str, ModelService]

    def __init__(self, name: str, args: ModelEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:ModelEndpoint", name, None, opts)
        spec = args.spec
        if len(args.versions) > MAX_ENDPOINT_VERSIONS:
            raise ValueError(f"endpoint {spec.name}: {len(args.versions)} versions; at most {MAX_ENDPOINT_VERSIONS}")
        # The router splits traffic over the spec's versions: one without a Deployment would get its share.
        given, declared = sorted(v.spec.version_name for v in args.versions), sorted(v.version_name for v in spec.versions)
        if given != declared:
            raise ValueError(f"ModelEndpointArgs.versions: {given} are not the versions its spec declares, {declared}")
        self.versions = {}
        for version in args.versions:
            self.versions[version.spec.version_name] = ModelService(
                f"{name}-{version.spec.version_name}",
                ModelServiceArgs(
                    spec=version.spec, namespace=args.namespace, image=version.image, fetch_image=args.fetch_image,
                    models=version.models, secret_variables=version.secret_variables, connections_secret=args.connections_secret,
                    connections_sha256=args.connections_sha256, data_container=args.data_container,
                    data_workspace=args.data_workspace, workload_identity=args.workload_identity,
                    labels={LABEL_ENDPOINT: spec.name, LABEL_VERSION: version.spec.version_name},
                    annotations={ENDPOINT_DESCRIPTION: spec.description} if spec.description else {},
                    deployment=deployment_name(spec.name, version.spec.version_name)),
                opts=pulumi.ResourceOptions(parent=self))

        access = args.access
        self.scoring_uri = pulumi.Output.from_input(access.scoring_uri)
        self.swagger_uri = pulumi.Output.from_input(access.swagger_uri)
        self.primary_key = pulumi.Output.secret(access.primary_key) if access.primary_key is not None else None
        self.secondary_key = pulumi.Output.secret(access.secondary_key) if access.secondary_key is not None else None
        self.register_outputs({
            "scoring_uri": self.scoring_uri,
            "swagger_uri": self.swagger_uri,
            "primary_key": self.primary_key,
            "secondary_key": self.secondary_key,
            "versions": {v: s.deployment_name for v, s in self.versions.items()},
        })
