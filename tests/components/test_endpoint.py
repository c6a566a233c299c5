"""ModelEndpoint under Pulumi mocks: one ModelService per version, labelled for the policy."""

from __future__ import annotations

import pytest

from components.endpoint import EndpointVersion, ModelEndpoint, ModelEndpointArgs
from components.mocks import run
from components.service import ModelSource, RouteAccess
from components.spec import EndpointSpec

IMAGE = "mlw.azurecr.io/scorer@sha256:" + "c" * 64
URI = "https://h/api/v1/endpoint/fraud"


def endpoint(n: int = 2, **auth) -> EndpointSpec:
    versions = [{"version_name": f"ver{i}", "inference_config": {"entry_script": "score.py"}, "traffic_percentile": 10,
                 "is_default": i == 0, "gpu_cores": 1 if i == 1 else 0, "num_replicas": i + 1} for i in range(n)]
    return EndpointSpec.model_validate({"name": "fraud", "versions": versions, **auth})


def deploy(spec: EndpointSpec, keys=("k1", "k2")):
    def program():
        versions = [EndpointVersion(v, IMAGE, [ModelSource("fraud-net", i + 3, f"https://a.blob.core.windows.net/models/fraud-net/{i + 3}")])
                    for i, v in enumerate(spec.versions)]
        ep = ModelEndpoint(spec.name, ModelEndpointArgs(
            spec=spec, namespace="azureml", versions=versions, fetch_image=IMAGE,
            access=RouteAccess(f"{URI}/score", f"{URI}/swagger.json", *keys)))
        return {"scoring_uri": ep.scoring_uri, "swagger_uri": ep.swagger_uri, "primary_key": ep.primary_key,
                "secondary_key": ep.secondary_key}
    return run(program)


def test_each_version_is_a_model_service_named_endpoint_dash_version():
    rec = deploy(endpoint(3))
    services = rec.of_type("aks-model-serving:index:ModelService")
    assert sorted(s.name for s in services) == ["fraud-ver0", "fraud-ver1", "fraud-ver2"]
    assert {s.parent_type for s in services} == {"aks-model-serving:index:ModelEndpoint"}
    deployments = {d.inputs["metadata"]["name"]: d.inputs for d in rec.of_type("kubernetes:apps/v1:Deployment")}
    assert sorted(deployments) == ["fraud-ver0", "fraud-ver1", "fraud-ver2"]
    for version, d in deployments.items():
        labels = d["metadata"]["labels"]
        assert labels["aks-model-serving/endpoint"] == "fraud" and labels["aks-model-serving/version"] == version.removeprefix("fraud-")
        assert labels["app.kubernetes.io/component"] == "model"
    assert [deployments[f"fraud-ver{i}"]["spec"]["replicas"] for i in range(3)] == [1, 2, 3]
    # Each version keeps its own settings: only ver1 asked for a GPU.
    assert "nodeSelector" in deployments["fraud-ver1"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in deployments["fraud-ver0"]["spec"]["template"]["spec"]
    assert sorted(s.inputs["metadata"]["name"] for s in rec.of_type("kubernetes:core/v1:Service")) == sorted(deployments)


def test_the_endpoints_and_each_versions_description_annotate_its_deployment():
    spec = endpoint(2).model_copy(update={"description": "fraud scoring"})
    spec.versions[1] = spec.versions[1].model_copy(update={"description": "candidate", "tags": {"owner": "ml"}})
    annotations = {d.inputs["metadata"]["name"]: d.inputs["metadata"]["annotations"]
                   for d in deploy(spec).of_type("kubernetes:apps/v1:Deployment")}
    fixed = {"pulumi.com/patchForce": "true"}  # num_replicas: the counts are Pulumi's
    assert annotations == {
        "fraud-ver0": {"aks-model-serving/endpoint-description": "fraud scoring", **fixed},
        "fraud-ver1": {"aks-model-serving/endpoint-description": "fraud scoring", "kubernetes.io/description": "candidate",
                       "aks-model-serving/tags": '{"owner": "ml"}', **fixed}}


def test_outputs_the_endpoint_route_and_keys_as_secrets():
    rec = deploy(endpoint())
    assert rec.outputs == {"scoring_uri": f"{URI}/score", "swagger_uri": f"{URI}/swagger.json",
                           "primary_key": "k1", "secondary_key": "k2"}
    assert rec.secret_outputs == ["primary_key", "secondary_key"]


def test_token_auth_endpoint_has_no_keys():
    rec = deploy(endpoint(auth_enabled=False, token_auth_enabled=True), keys=(None, None))
    assert rec.outputs["primary_key"] is None and rec.outputs["secondary_key"] is None


def test_no_autoscaler_on_any_version():
    rec = deploy(endpoint(6))
    assert len(rec.of_type("kubernetes:apps/v1:Deployment")) == 6
    assert not [r for r in rec.resources if "HorizontalPodAutoscaler" in r.type]


def test_versions_not_those_of_the_spec_are_refused():
    """The router splits traffic over the spec's versions: one left out of the args got its share and no Deployment."""
    spec = endpoint(3)
    versions = [EndpointVersion(v, IMAGE) for v in spec.versions[:2]]
    with pytest.raises(ValueError, match=r"ModelEndpointArgs.versions: \['ver0', 'ver1'\] are not the versions its spec "
                                         r"declares, \['ver0', 'ver1', 'ver2'\]"):
        run(lambda: ModelEndpoint("fraud", ModelEndpointArgs(spec=spec, namespace="ml", versions=versions, fetch_image=IMAGE,
                                                             access=RouteAccess(f"{URI}/score", f"{URI}/swagger.json"))))


def test_one_endpoint_under_two_routers_declares_each_resource_once():
    """Its versions were named by the endpoint's name alone: two components of one endpoint (two teams'
    namespaces) declared the same URNs, which Pulumi refuses."""
    spec = endpoint(2)

    def program():
        for team in ("a", "b"):
            ModelEndpoint(f"{team}-fraud", ModelEndpointArgs(
                spec=spec, namespace=f"team-{team}", versions=[EndpointVersion(v, IMAGE) for v in spec.versions],
                fetch_image=IMAGE, access=RouteAccess(f"{URI}/score", f"{URI}/swagger.json")))
    rec = run(program)
    assert len({r.urn for r in rec.resources}) == len(rec.resources)
    names = sorted((d.inputs["metadata"]["namespace"], d.inputs["metadata"]["name"]) for d in rec.of_type("kubernetes:apps/v1:Deployment"))
    assert names == [("team-a", "fraud-ver0"), ("team-a", "fraud-ver1"), ("team-b", "fraud-ver0"), ("team-b", "fraud-ver1")]
