"""Each policy rule passes a compliant resource and fails a broken one, naming what is wrong.

The props are the camelCase form the engine and the mocks hand over, numbers as floats.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
from pulumi_policy import (PolicyProviderResource, PolicyResource, PolicyResourceOptions, ResourceValidationArgs,
                           StackValidationArgs)
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy import rules

REGISTRY = "mlwprod.azurecr.io"
DIGEST = "sha256:" + "ab" * 32


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=None, additional_secret_outputs=[])


def check_resource(rule, typ: str, props: dict, config: dict | None = None) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(typ, props, f"urn:pulumi:s::p::{typ}::x", "x", _opts(), None, config or {})
    rule(args, lambda message, urn=None: found.append(message))
    return found


def check_stack(rule, resources: list[tuple[str, dict]], config: dict | None = None,
                provider: dict | None = None) -> list[tuple[str, str | None]]:
    """`provider`: the props of the Kubernetes provider every resource is declared with (None: none said)."""
    found: list[tuple[str, str | None]] = []
    # As the engine hands them over: reading a value a preview cannot know raises UnknownValueError.
    k8s = provider if provider is None else PolicyProviderResource(
        "pulumi:providers:kubernetes", unknown_checking_proxy(provider), "urn:pulumi:s::p::pulumi:providers:kubernetes::k8s", "k8s")
    stack = [PolicyResource(typ, unknown_checking_proxy(props), f"urn:pulumi:s::p::{typ}::r{i}", f"r{i}", _opts(), k8s,
                            None, [], {})
             for i, (typ, props) in enumerate(resources)]
    rule(StackValidationArgs(stack, config or {}), lambda message, urn=None: found.append((message, urn)))
    return found


def container(**overrides) -> dict:
    c = {
        "name": "scorer",
        "image": f"{REGISTRY}/scorer@{DIGEST}",
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "100m", "memory": "512Mi"}},
    }
    c.update(overrides)
    return c


def deployment(*cs: dict, labels: dict | None = None, name: str = "iris", pod: dict | None = None) -> dict:
    spec = {"containers": list(cs) or [container()]}
    spec.update(pod or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "azureml", "labels": labels or {"app.kubernetes.io/component": "model"}},
        "spec": {"replicas": 1.0, "template": {"spec": spec}},
    }


# ---------------------------------------------------------------- requests and limits


def test_requests_and_limits_pass():
    assert check_resource(rules.requests_and_limits, rules.DEPLOYMENT, deployment()) == []


def test_requests_and_limits_fail_names_container_and_missing_fields():
    init = container(name="fetch-models", resources={"requests": {"cpu": "100m"}})
    found = check_resource(rules.requests_and_limits, rules.DEPLOYMENT, deployment(container(), pod={"initContainers": [init]}))
    assert found == ["container 'fetch-models' has no resources requests.memory, limits.cpu, limits.memory"]


def test_a_limit_without_a_request_is_the_request_as_kubernetes_reads_it():
    """Kubernetes copies a limit to the unset request: the scheduler packs the container by it, and the rule
    refused a container stating both by its limits alone."""
    limits = {"cpu": "1500m", "memory": "2Gi"}
    assert check_resource(rules.requests_and_limits, rules.DEPLOYMENT, deployment(container(resources={"limits": limits}))) == []
    found = check_resource(rules.requests_and_limits, rules.DEPLOYMENT,
                           deployment(container(resources={"requests": limits})))
    assert found == ["container 'scorer' has no resources limits.cpu, limits.memory"]


def test_requests_and_limits_reach_cronjob_pods():
    props = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container(resources={})]}}}}}}
    assert len(check_resource(rules.requests_and_limits, "kubernetes:batch/v1:CronJob", props)) == 1


@pytest.mark.parametrize("typ", ["kubernetes:apps/v1:DeploymentPatch", "kubernetes:core/v1:ReplicationController"])
def test_requests_and_limits_reach_patches_and_replication_controllers(typ):
    """A DeploymentPatch adds a sidecar to someone's Deployment as surely as a Deployment declares one."""
    assert len(check_resource(rules.requests_and_limits, typ, deployment(container(resources={})))) == 1


def test_requests_and_limits_reach_pod_templates():
    props = {"template": {"spec": {"containers": [container(resources={})]}}}
    assert len(check_resource(rules.requests_and_limits, "kubernetes:core/v1:PodTemplate", props)) == 1


def test_non_workloads_are_ignored():
    assert check_resource(rules.requests_and_limits, rules.CONFIG_MAP, {"data": {"a": "b"}}) == []


# ---------------------------------------------------------------- images


def images(props: dict, config: dict | None = None, registry_login: str | None = None) -> list[str]:
    resources = [(rules.DEPLOYMENT, props)] + ([(rules.REGISTRY, {"loginServer": registry_login})] if registry_login else [])
    return [message for message, _ in check_stack(rules.registry_images, resources, config)]


@pytest.mark.parametrize("image", [f"{REGISTRY}/scorer@{DIGEST}", f"{REGISTRY}/scorer:0123456789abcdef0123",
                                   f"{REGISTRY}/scorer:0123456789ab@{DIGEST}"])
def test_registry_images_pass(image):
    assert images(deployment(container(image=image)), {"registry": REGISTRY}) == []


@pytest.mark.parametrize("image, message", [
    (f"{REGISTRY}/scorer:latest", "is tagged 'latest'"),
    (f"{REGISTRY}/scorer", "is untagged"),
    (f"{REGISTRY}/scorer:v1.2", "is tagged 'v1.2'"),
    (f"{REGISTRY}/scorer:202611270930", "is tagged '202611270930'"),
    (f"{REGISTRY}/scorer:abc", "is tagged 'abc'"),  # hex, but too short to be a content hash
    (f"{REGISTRY}/scorer:0123456789ab-mutable", "is tagged '0123456789ab-mutable'"),  # a hash with a suffix
    (f"{REGISTRY}/scorer@sha256:abc", "pin it by digest"),  # not a digest: 64 hex digits are
    (f"{REGISTRY}/scorer@sha256:{'ab' * 31}", "pin it by digest"),  # nor 62 of them
    # The registry's name inside the path, not as its host: the image is pulled from evil.io.
    (f"evil.io/{REGISTRY}/scorer@{DIGEST}", "is not from the workspace registry"),
    (f"otherreg.azurecr.io/scorer@{DIGEST}", "is not from the workspace registry"),
    (f"mlwprod.evil.io/scorer@{DIGEST}", "is not from the workspace registry"),  # the registry's name, not its host
    ("python:3.11-slim", "is not from the workspace registry"),
])
def test_registry_images_fail(image, message):
    found = images(deployment(container(image=image)), {"registry": REGISTRY})
    assert len(found) == 1 and message in found[0] and image in found[0] and found[0].startswith("iris: container")


def test_without_config_the_stacks_own_registry_is_the_one():
    """Under `pulumi preview` (no config): another registry's image must not pass as any *.azurecr.io would."""
    other = deployment(container(image=f"someoneelse.azurecr.io/miner@{DIGEST}"))
    assert "is not from the workspace registry mlwprod.azurecr.io" in images(other, registry_login=REGISTRY)[0]
    assert images(deployment(), registry_login=REGISTRY) == []


def test_registry_images_without_a_known_registry_want_an_acr():
    """A registry created in this very preview has no loginServer yet."""
    assert images(deployment()) == []
    found = images(deployment(container(image=f"docker.io/lib/x@{DIGEST}")))
    assert found and "Azure Container Registry" in found[0]


def test_without_a_known_registry_the_host_must_end_in_azurecr_io():
    """An ACR's name inside a host of someone else's domain is not an ACR."""
    for image in (f"x.azurecr.io.evil.com/x@{DIGEST}", f"evilazurecr.io/x@{DIGEST}", f"evil.com/x.azurecr.io/x@{DIGEST}"):
        found = images(deployment(container(image=image)))
        assert len(found) == 1 and "is not from an Azure Container Registry" in found[0], image
    assert images(deployment(container(image=f"x.azurecr.io/x@{DIGEST}"))) == []


def test_a_registrys_default_https_port_names_the_same_registry():
    """`x.azurecr.io:443` is the registry `x.azurecr.io`, as docker pulls it; another port is another server."""
    assert images(deployment(container(image=f"{REGISTRY}:443/scorer@{DIGEST}")), {"registry": REGISTRY}) == []
    assert images(deployment(container(image=f"x.azurecr.io:443/scorer@{DIGEST}"))) == []
    found = images(deployment(container(image=f"{REGISTRY}:8443/scorer@{DIGEST}")), {"registry": REGISTRY})
    assert len(found) == 1 and "is not from the workspace registry" in found[0]


def test_registry_images_check_what_a_first_preview_knows():
    """In a first preview the registry's loginServer and the images this update builds are unknown, and
    pulumi-policy raises on reading one, which skipped the whole rule: a hand-written image went unchecked."""
    unknown = UNKNOWN_STRING_VALUE
    built = deployment(container(image=unknown), container(name="sidecar", image="docker.io/lib/x:latest"))
    stack = [PolicyResource(typ, unknown_checking_proxy(props), f"urn:pulumi:s::p::{typ}::r{i}", f"r{i}", _opts(),
                            None, None, [], {})
             for i, (typ, props) in enumerate([(rules.DEPLOYMENT, built), (rules.REGISTRY, {"loginServer": unknown})])]
    found: list[str] = []
    rules.registry_images(StackValidationArgs(stack, {}), lambda message, urn=None: found.append(message))
    assert len(found) == 1 and "'sidecar'" in found[0] and "is not from an Azure Container Registry" in found[0]


def test_registry_images_allowed_prefix_exempts_addons():
    props = deployment(container(image="mcr.microsoft.com/oss/nvidia/k8s-device-plugin:v0.14.1"))
    assert images(props, {"registry": REGISTRY, "allowedImages": ["mcr.microsoft.com/oss/nvidia/"]}) == []
    assert images(props, {"registry": REGISTRY, "allowedImages": []})


@pytest.mark.parametrize("image, said", [
    ("busybox:1.36.1", None),
    (f"busybox:1.36.1@{DIGEST}", None),  # the same tag, pinned
    ("busybox:1.36.1-musl", "is not from an Azure Container Registry"),  # a moving tag of Docker Hub's
    ("nvcr.io/nvidia/k8s-device-plugin:v0.17.10", "is not from an Azure Container Registry"),
])
def test_an_allowed_image_with_a_tag_exempts_that_image_alone(image, said):
    """An add-on allowed by its tag was matched as a prefix: a longer tag beginning with it passed unchecked."""
    found = images(deployment(container(image=image)))
    assert found == ([] if said is None else [f"iris: container 'scorer': image {image!r} {said}"])


@pytest.mark.parametrize("entry, image, exempt", [
    ("mcr.microsoft.com/oss/nvidia", "mcr.microsoft.com/oss/nvidia/k8s-device-plugin:v0.14.1", True),
    ("mcr.microsoft.com/oss/nvidia/", "mcr.microsoft.com/oss/nvidia/k8s-device-plugin:v0.14.1", True),
    ("mcr.microsoft.com/oss/nvidia", "mcr.microsoft.com/oss/nvidia:v1", True),  # the repository the entry names
    # Another repository, or another host, whose name merely begins with the entry.
    ("mcr.microsoft.com/oss/nvidia", "mcr.microsoft.com/oss/nvidia-miner:latest", False),
    ("mcr.microsoft.com", "mcr.microsoft.com.evil.io/oss/nvidia/x:latest", False),
])
def test_an_allowed_registry_path_exempts_the_images_under_it_alone(entry, image, exempt):
    """A path matched as a bare prefix exempted any repository or host whose name began with it."""
    found = images(deployment(container(image=image)), {"registry": REGISTRY, "allowedImages": [entry]})
    assert found == ([] if exempt else [f"iris: container 'scorer': image {image!r} is not from the workspace registry {REGISTRY}"])


# ---------------------------------------------------------------- GPU scheduling

GPU_POD = {"tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
           "nodeSelector": {"aks-model-serving/accelerator": "gpu"}}


def gpu_container() -> dict:
    return container(resources={"requests": {"cpu": 1.0, "memory": "4Gi", "nvidia.com/gpu": 1.0},
                                "limits": {"cpu": 1.0, "memory": "4Gi", "nvidia.com/gpu": 1.0}})


def test_gpu_scheduling_pass():
    assert check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=GPU_POD)) == []


def test_gpu_scheduling_pass_with_exists_toleration_and_node_affinity():
    pod = {"tolerations": [{"operator": "Exists"}],
           "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
               {"matchExpressions": [{"key": "aks-model-serving/accelerator", "operator": "In", "values": ["gpu"]}]}]}}}}
    assert check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod)) == []


def test_gpu_scheduling_fail_without_toleration_and_selector():
    found = check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container()))
    assert found == ["containers 'scorer' ask for nvidia.com/gpu but the pod has no toleration for sku=gpu:NoSchedule "
                     "and no node selector aks-model-serving/accelerator=gpu"]


def test_gpu_scheduling_fail_with_wrong_toleration_value():
    pod = copy.deepcopy(GPU_POD)
    pod["tolerations"][0]["value"] = "fpga"
    found = check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod))
    assert len(found) == 1 and "no toleration" in found[0] and "node selector" not in found[0]


@pytest.mark.parametrize("toleration", [
    {"operator": "Exists", "key": "other"},  # Exists on another key tolerates that key's taints only
    {"operator": "Exists", "effect": "NoExecute"},  # every key, but another effect
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "PreferNoSchedule"},
    {"key": "other", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
])
def test_gpu_scheduling_fail_with_a_toleration_that_misses_the_taint(toleration):
    pod = {**GPU_POD, "tolerations": [toleration]}
    found = check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod))
    assert len(found) == 1 and "no toleration for sku=gpu:NoSchedule" in found[0] and "node selector" not in found[0]


def _affinity(*terms: list[dict]) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": expressions} for expressions in terms]}}}


GPU_IN = {"key": "aks-model-serving/accelerator", "operator": "In", "values": ["gpu"]}


@pytest.mark.parametrize("affinity", [
    _affinity([{**GPU_IN, "operator": "NotIn"}]),  # names the pool to keep away from it
    _affinity([GPU_IN], [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]),  # OR: any linux node
    _affinity([GPU_IN], [{**GPU_IN, "values": ["fpga"]}]),  # OR: the FPGA pool too
    _affinity([{**GPU_IN, "key": "accelerator"}]),
    _affinity([{**GPU_IN, "values": ["gpu", "other"]}]),  # In lets it have either: the other pool too
])
def test_gpu_scheduling_fail_with_node_affinity_that_does_not_pin_the_gpu_pool(affinity):
    """Node selector terms are OR-ed: every one of them must require the GPU pool, or the pod may land elsewhere."""
    pod = {"tolerations": GPU_POD["tolerations"], "affinity": affinity}
    found = check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod))
    assert len(found) == 1 and "no node selector aks-model-serving/accelerator=gpu" in found[0]
    assert "toleration" not in found[0]


@pytest.mark.parametrize("term", [
    [{**GPU_IN, "values": ["gpu", "other"]}, GPU_IN],  # AND-ed within a term: gpu alone
    [{**GPU_IN, "values": ["gpu", "other"]}, {**GPU_IN, "operator": "NotIn", "values": ["other"]}],
])
def test_gpu_scheduling_passes_where_a_terms_expressions_together_leave_the_gpu_pool_alone(term):
    pod = {"tolerations": GPU_POD["tolerations"], "affinity": _affinity(term)}
    assert check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod)) == []


def test_gpu_scheduling_passes_with_every_ored_term_selecting_the_gpu_pool():
    pod = {"tolerations": GPU_POD["tolerations"], "affinity": _affinity(
        [GPU_IN], [GPU_IN, {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}])}
    assert check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment(gpu_container(), pod=pod)) == []


def test_cpu_only_pods_need_no_gpu_pool():
    assert check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, deployment()) == []


# ---------------------------------------------------------------- no HPA on models


def hpa(target: str, namespace: str = "azureml") -> tuple[str, dict]:
    return ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
            {"metadata": {"name": f"{target}-hpa", "namespace": namespace},
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                      "minReplicas": 1.0, "maxReplicas": 4.0}})


def test_hpa_on_router_passes():
    router = deployment(labels={"app.kubernetes.io/component": "router"}, name="model-router")
    assert check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), (rules.DEPLOYMENT, router),
                                                hpa("model-router")]) == []


def test_hpa_on_model_deployment_fails_naming_the_hpa():
    found = check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), hpa("iris")])
    assert len(found) == 1
    message, urn = found[0]
    assert "'iris-hpa' targets the model Deployment 'iris'" in message and urn.endswith("::r1")


def test_an_hpa_patch_on_a_model_deployment_fails_too():
    typ, props = hpa("iris")
    assert len(check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), (typ + "Patch", props)])) == 1


def test_hpa_in_another_namespace_is_not_on_the_model():
    assert check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), hpa("iris", namespace="other")]) == []


SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"


def scaled_object(ref: dict, typ: str = SCALED_OBJECT) -> tuple[str, dict]:
    """A KEDA ScaledObject as a pulumi-kubernetes CustomResource hands it over."""
    return typ, {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "iris-so", "namespace": "azureml"},
                 "spec": {"scaleTargetRef": ref, "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}}


@pytest.mark.parametrize("typ, ref", [
    (SCALED_OBJECT, {"name": "iris"}),  # KEDA's default kind: a Deployment
    (SCALED_OBJECT, {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}),
    (SCALED_OBJECT + "Patch", {"name": "iris"}),
])
def test_a_keda_scaled_object_on_a_model_deployment_fails(typ, ref):
    """KEDA scales its target through an HPA of its own, which fights the router's autoscaler as an HPA does:
    a ScaledObject on a model Deployment passed."""
    found = check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), scaled_object(ref, typ)])
    assert [m for m, _ in found] == ["ScaledObject 'iris-so' targets the model Deployment 'iris'; "
                                     "the router scales model deployments, remove the ScaledObject"]


@pytest.mark.parametrize("other", [
    scaled_object({"kind": "StatefulSet", "name": "iris"}),
    ("kubernetes:autoscaling.k8s.io/v1:VerticalPodAutoscaler", {  # sets requests, not replicas
        "metadata": {"name": "iris-vpa", "namespace": "azureml"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}}}),
])
def test_what_scales_no_model_deployments_replicas_passes(other):
    assert check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), other]) == []


def test_an_hpa_naming_the_model_by_an_old_api_version_still_fails():
    """`extensions/v1beta1` names the same Deployment: the target is matched by kind and name."""
    typ, props = hpa("iris")
    props["spec"]["scaleTargetRef"]["apiVersion"] = "extensions/v1beta1"
    assert len(check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), (typ, props)])) == 1


# ---------------------------------------------------------------- versions per endpoint


def versions(n: int) -> list[tuple[str, dict]]:
    labels = {"app.kubernetes.io/component": "model", "aks-model-serving/endpoint": "fraud"}
    return [(rules.DEPLOYMENT, deployment(labels=labels, name=f"fraud-v{i}")) for i in range(n)]


def test_six_versions_pass():
    assert check_stack(rules.endpoint_versions, versions(6)) == []


def test_seven_versions_fail():
    found = check_stack(rules.endpoint_versions, versions(7))
    assert found == [("endpoint 'fraud' has 7 versions; at most 6", "urn:pulumi:s::p::kubernetes:apps/v1:Deployment::r6")]


# ---------------------------------------------------------------- what a first preview cannot know

# The cluster's DNS check Job: its metadata and spec are made from the cluster's fqdn and the registry's
# login server, which a first preview does not know.
UNKNOWN_JOB = ("kubernetes:batch/v1:Job", {"metadata": UNKNOWN_STRING_VALUE, "spec": UNKNOWN_STRING_VALUE})


@pytest.mark.parametrize("name", sorted(rules.STACK_RULES))
def test_a_stack_rule_checks_the_rest_beside_a_resource_a_first_preview_cannot_know(name):
    """pulumi-policy turns a rule that raises UnknownValueError into one advisory note: two mandatory rules
    read every resource's metadata or pod spec first and so checked nothing in the prod stack's first preview."""
    check_stack(rules.STACK_RULES[name][1], [UNKNOWN_JOB])  # raises nothing


@pytest.mark.parametrize("name", sorted(rules.RESOURCE_RULES))
def test_a_resource_rule_leaves_a_pod_spec_a_first_preview_cannot_know_to_the_update(name):
    """Reading it raised: an advisory "can't run policy" note in place of the check the update makes."""
    assert check_resource(rules.RESOURCE_RULES[name][1], UNKNOWN_JOB[0], unknown_checking_proxy(UNKNOWN_JOB[1])) == []


@pytest.mark.parametrize("rule,resources,said", [
    (rules.endpoint_versions, versions(7), "endpoint 'fraud' has 7 versions"),
    (rules.registry_images, [(rules.DEPLOYMENT, deployment(container(image="nginx:latest")))], "is not from an Azure"),
], ids=["versions", "images"])
def test_a_violation_beside_a_resource_a_first_preview_cannot_know_is_still_found(rule, resources, said):
    assert any(said in message for message, _ in check_stack(rule, [UNKNOWN_JOB, *resources]))


def test_hpa_rule_matches_what_a_first_preview_knows_and_passes_what_it_cannot():
    """An HPA whose target or namespace is an output, or a model whose namespace is, raised, which turned the
    whole rule into an advisory note: the known HPA on a known model went unreported."""
    unknown_name, unknown_ref, unknown_namespace = hpa("iris"), hpa("iris"), hpa("iris")
    unknown_name[1]["spec"]["scaleTargetRef"]["name"] = UNKNOWN_STRING_VALUE
    unknown_ref[1]["spec"]["scaleTargetRef"] = UNKNOWN_OBJECT_VALUE
    unknown_namespace[1]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    hidden = deployment(name="fraud")
    hidden["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    found = check_stack(rules.no_hpa_on_models, [unknown_name, unknown_ref, unknown_namespace, (rules.DEPLOYMENT, hidden),
                                                 hpa("fraud"), (rules.DEPLOYMENT, deployment()), hpa("iris")])
    assert [urn for _, urn in found] == ["urn:pulumi:s::p::kubernetes:autoscaling/v2:HorizontalPodAutoscaler::r6"]


def test_versions_whose_namespace_a_first_preview_cannot_know_count_in_no_endpoint():
    """Reading one raised, which skipped the rule for every endpoint: 7 known versions went unreported."""
    hidden = versions(1)[0][1]
    hidden["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    assert check_stack(rules.endpoint_versions, [(rules.DEPLOYMENT, hidden)] + versions(6)) == []
    found = check_stack(rules.endpoint_versions, [(rules.DEPLOYMENT, hidden)] + versions(7))
    assert found == [("endpoint 'fraud' has 7 versions; at most 6", "urn:pulumi:s::p::kubernetes:apps/v1:Deployment::r7")]


def test_rules_check_the_containers_a_first_preview_knows_beside_unknown_ones():
    """Init containers made from an output, a whole container or a container's name unknown: reading one
    raised, which skipped the resource's other containers (the image rule) or the whole rule (an unknown
    name in its message), so the known, broken containers went unchecked."""
    pod = deployment(UNKNOWN_OBJECT_VALUE, container(name=UNKNOWN_STRING_VALUE, image="nginx:latest", resources={}),
                     container(name="sidecar", image="docker.io/lib/x:latest", resources={}),
                     pod={"initContainers": UNKNOWN_ARRAY_VALUE})
    assert [m for m, _ in check_stack(rules.registry_images, [(rules.DEPLOYMENT, pod)])] == [
        "iris: container None: image 'nginx:latest' is not from an Azure Container Registry",
        "iris: container 'sidecar': image 'docker.io/lib/x:latest' is not from an Azure Container Registry"]
    found = check_resource(rules.requests_and_limits, rules.DEPLOYMENT, unknown_checking_proxy(pod))
    assert len(found) == 2 and "container 'sidecar' has no resources" in found[1]


def test_requests_and_limits_skip_only_the_resources_a_first_preview_cannot_know():
    """An unknown `resources`, requests or cpu is not a missing one; reading it raised, which skipped the
    rule for the whole resource, its known, broken containers too."""
    pod = deployment(container(name="whole", resources=UNKNOWN_OBJECT_VALUE),
                     container(resources={"requests": UNKNOWN_OBJECT_VALUE, "limits": {"cpu": UNKNOWN_STRING_VALUE}}),
                     container(name="sidecar", resources={}))
    assert check_resource(rules.requests_and_limits, rules.DEPLOYMENT, unknown_checking_proxy(pod)) == [
        "container 'scorer' has no resources limits.memory",
        "container 'sidecar' has no resources requests.cpu, requests.memory, limits.cpu, limits.memory"]


@pytest.mark.parametrize("pod, said", [
    ({"tolerations": UNKNOWN_ARRAY_VALUE}, "no node selector aks-model-serving/accelerator=gpu"),
    ({"tolerations": [UNKNOWN_OBJECT_VALUE]}, "no node selector aks-model-serving/accelerator=gpu"),
    ({"nodeSelector": UNKNOWN_OBJECT_VALUE}, "no toleration for sku=gpu:NoSchedule"),
    ({"affinity": {"nodeAffinity": UNKNOWN_OBJECT_VALUE}}, "no toleration for sku=gpu:NoSchedule"),
])
def test_gpu_scheduling_faults_what_a_first_preview_knows_and_passes_what_it_cannot(pod, said):
    """An unknown toleration or selector may be the right one, so it passes; the known half is still checked
    (reading the unknown one raised, which skipped the whole rule)."""
    found = check_resource(rules.gpu_scheduling, rules.DEPLOYMENT, unknown_checking_proxy(deployment(gpu_container(), pod=pod)))
    assert found == [f"containers 'scorer' ask for nvidia.com/gpu but the pod has {said}"]


def test_public_router_rules_check_the_routers_whose_config_a_first_preview_knows():
    """A router config made from outputs raised in the shared lookup, which skipped both rules for every
    router; its router is now left for the update, and the known one is still checked."""
    unknown = router("fast_prod", tls=False, routes=[route("open", False)])
    for _, props in unknown:
        props["metadata"]["namespace"] = "other"
    unknown[1][1]["data"]["config.json"] = UNKNOWN_STRING_VALUE
    stack = unknown + router("fast_prod", tls=False, routes=[route("open", False)])
    assert [urn for _, urn in check_stack(rules.public_router_tls, stack)] == ["urn:pulumi:s::p::kubernetes:core/v1:Service::r2"]
    assert [urn for _, urn in check_stack(rules.public_auth, stack)] == ["urn:pulumi:s::p::kubernetes:core/v1:Service::r2"]


# ---------------------------------------------------------------- public router: TLS and auth


def router(purpose: str = "fast_prod", *, tls: bool = True, internal: bool = False, routes: list | None = None) -> list[tuple[str, dict]]:
    labels = {"app.kubernetes.io/component": "router", "aks-model-serving/cluster-purpose": purpose}
    annotations = {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"} if internal else {}
    config = {"tls": {"cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key"} if tls else None,
              "routes": routes if routes is not None else []}
    return [
        (rules.SERVICE, {"metadata": {"name": "model-router", "namespace": "azureml", "labels": labels, "annotations": annotations},
                         "spec": {"type": "LoadBalancer", "ports": [{"port": 443.0}]}}),
        (rules.CONFIG_MAP, {"metadata": {"name": "model-router-config", "namespace": "azureml", "labels": labels},
                            "data": {"config.json": json.dumps(config)}}),
    ]


def test_public_router_with_tls_passes():
    assert check_stack(rules.public_router_tls, router()) == []
    token = (rules.CONFIG_MAP, {"metadata": {"name": "model-router-token", "namespace": "azureml",
                                             "labels": {"app.kubernetes.io/component": "router"}}, "data": {"public.pem": "k"}})
    assert check_stack(rules.public_router_tls, router() + [token]) == []  # the router's other ConfigMaps hold no config


@pytest.mark.parametrize("purpose", ["fast_prod", "dense_prod"])
def test_public_router_without_tls_in_production_fails(purpose):
    found = check_stack(rules.public_router_tls, router(purpose, tls=False))
    assert len(found) == 1 and f"public in a {purpose} cluster and serves plain HTTP" in found[0][0]
    assert found[0][1].endswith("::r0")


@pytest.mark.parametrize("kw", [{"purpose": "dev_test"}, {"internal": True}])
def test_plain_http_is_allowed_in_dev_test_or_behind_an_internal_load_balancer(kw):
    assert check_stack(rules.public_router_tls, router(tls=False, **kw)) == []


def route(name: str, key: bool, token: bool = False) -> dict:
    return {"kind": "service", "name": name, "auth": {"key_enabled": key, "token_enabled": token}, "versions": []}


def test_public_routes_with_auth_pass():
    assert check_stack(rules.public_auth, router(routes=[route("iris", True), route("fraud", False, True)])) == []


def test_public_route_without_auth_fails_by_name():
    found = check_stack(rules.public_auth, router(routes=[route("iris", True), route("open", False)]))
    assert len(found) == 1 and "service 'open' is reachable without auth" in found[0][0]


@pytest.mark.parametrize("auth, anonymous", [
    ({"key_enabled": "false"}, True),  # the router's schema reads the string as false: no key asked
    ({"key_enabled": 0, "token_enabled": "no"}, True),
    ({}, False),  # the router's default: key auth
    ({"token_enabled": True, "key_enabled": False}, False),
])
def test_a_routes_auth_is_read_as_the_router_reads_it(auth, anonymous):
    """The rule read `auth` as plain truthiness: "false" passed as on while the router served the route
    anonymously, and a route leaving key auth to its default was faulted."""
    served = {"kind": "service", "name": "open", "auth": auth, "versions": []}
    found = check_stack(rules.public_auth, router(routes=[served]))
    assert [m for m, _ in found] == (["service 'open' is reachable without auth on the public router 'model-router'; "
                                      "enable auth or list it in allowAnonymous"] if anonymous else [])


def test_a_public_service_selecting_the_router_pods_is_a_public_router_whatever_its_labels():
    """Kubernetes sends a Service's traffic to the pods its selector picks: an unlabelled public LoadBalancer
    beside the internal router's Service served its plain HTTP and open routes to the internet unchecked."""
    pods = {"app.kubernetes.io/name": "model-router", "app.kubernetes.io/component": "router",
            "aks-model-serving/cluster-purpose": "fast_prod"}
    deployment = (rules.DEPLOYMENT, {"metadata": {"name": "model-router", "namespace": "azureml", "labels": pods},
                                     "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "model-router"}},
                                              "template": {"metadata": {"labels": pods}, "spec": {"containers": [container()]}}}})
    def extra(selector: dict, namespace: str = "azureml") -> tuple[str, dict]:
        return rules.SERVICE, {"metadata": {"name": "debug", "namespace": namespace},
                               "spec": {"type": "LoadBalancer", "selector": selector, "ports": [{"port": 80.0}]}}
    stack = router(tls=False, internal=True, routes=[route("open", False)]) + [deployment]
    exposed = stack + [extra({"app.kubernetes.io/name": "model-router"})]
    assert [m for m, _ in check_stack(rules.public_router_tls, exposed)] == [
        "router Service 'debug' is public in a fast_prod cluster and serves plain HTTP; set cluster.ssl "
        "(certificate, leaf_domain_label or cert_manager_issuer)"]
    assert [m for m, _ in check_stack(rules.public_auth, exposed)] == [
        "service 'open' is reachable without auth on the public router 'debug'; enable auth or list it in allowAnonymous"]
    # Another app's pods, another namespace's, or no selector (endpoints written by hand): not the router's.
    for other in (extra({"app.kubernetes.io/name": "shop"}), extra({"app.kubernetes.io/name": "model-router"}, "shop"),
                  extra({})):
        assert check_stack(rules.public_router_tls, stack + [other]) == [] == check_stack(rules.public_auth, stack + [other])


def test_allow_anonymous_opts_a_route_out_by_name():
    assert check_stack(rules.public_auth, router(routes=[route("open", False)]), {"allowAnonymous": ["open"]}) == []


def test_internal_router_needs_no_auth():
    assert check_stack(rules.public_auth, router(internal=True, routes=[route("open", False)])) == []


@pytest.mark.parametrize("value", ["True", "TRUE", "yes", "false"])
def test_a_router_is_internal_only_when_its_annotation_says_exactly_true(value):
    """Azure's cloud provider makes a load balancer internal for the annotation value "true" alone (`l == "true"`):
    "True" gets a public address, and a pack that read it as internal let that router serve plain HTTP, and its
    routes without auth, on the internet."""
    stack = router(tls=False, routes=[route("open", False)])
    stack[0][1]["metadata"]["annotations"] = {"service.beta.kubernetes.io/azure-load-balancer-internal": value}
    assert len(check_stack(rules.public_router_tls, stack)) == 1
    assert len(check_stack(rules.public_auth, stack)) == 1


def test_addon_images_are_exempt_by_default_and_match_what_the_cluster_installs():
    from components.cluster import CHECK_IMAGE, NVIDIA_DEVICE_PLUGIN_IMAGE

    assert sorted(rules.ADDON_IMAGES) == sorted([NVIDIA_DEVICE_PLUGIN_IMAGE, CHECK_IMAGE])
    props = deployment(container(image=NVIDIA_DEVICE_PLUGIN_IMAGE))
    assert images(props, {"registry": REGISTRY}) == []
    assert images(props, {"registry": REGISTRY, "allowedImages": []})


# ---------------------------------------------------------------- model pods reachable from the router only


def model_pods(name: str = "iris") -> tuple[str, dict]:
    d = deployment(name=name)
    d["spec"]["template"]["metadata"] = {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model"}}
    return rules.DEPLOYMENT, d


def network_policy(selector: dict, peers: list[dict] | None, namespace: str = "azureml", types=("Ingress",)) -> tuple[str, dict]:
    spec: dict = {"podSelector": selector, "policyTypes": list(types)}
    if peers is not None:
        spec["ingress"] = [{"from": peers, "ports": [{"protocol": "TCP", "port": 5001.0}]}]
    return rules.NETWORK_POLICY, {"metadata": {"name": "guard", "namespace": namespace}, "spec": spec}


ROUTER_PEER = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-router", "app.kubernetes.io/component": "router"}}}
CLUSTER_WITH = {"networkProfile": {"networkPlugin": "kubenet", "networkPolicy": "calico"}}


def test_model_pods_guarded_by_a_router_only_policy_pass():
    assert check_stack(rules.models_admit_only_the_router, [
        model_pods(), network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER]),
        (rules.CLUSTER, CLUSTER_WITH), router_pods()]) == []
    by_expression = {"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["model"]}]}
    assert check_stack(rules.models_admit_only_the_router, [model_pods(), network_policy(by_expression, [ROUTER_PEER]),
                                                            router_pods()]) == []
    # Kubernetes' NotIn selects the pods without the label too: these carry no `team` label, so this guards them.
    not_in = {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["data"]}]}
    assert check_stack(rules.models_admit_only_the_router, [model_pods(), network_policy(not_in, [ROUTER_PEER]),
                                                            router_pods()]) == []


@pytest.mark.parametrize("guard", [
    None,
    network_policy({"matchLabels": {"app.kubernetes.io/name": "other"}}, [ROUTER_PEER]),
    network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER], namespace="other"),
    network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER], types=("Egress",)),
    network_policy({"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["iris"]}]}, [ROUTER_PEER]),
])
def test_model_pods_no_policy_selects_fail(guard):
    found = check_stack(rules.models_admit_only_the_router, [model_pods()] + ([guard] if guard else []))
    assert [m for m, _ in found] == ["the pods of model Deployment 'iris' are selected by no ingress NetworkPolicy: any pod "
                                     "in the cluster can reach its scorer past the router's auth"]


def guarded_pods(*ports: dict, opened: list[dict]) -> list[tuple[str, dict]]:
    """Model pods with these container ports, the router admitted to every port and anyone to `opened`."""
    pods = model_pods()
    pods[1]["spec"]["template"]["spec"]["containers"][0]["ports"] = list(ports)
    guard = network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER])
    guard[1]["spec"]["ingress"] = [{"from": [ROUTER_PEER]}, {"from": [{"namespaceSelector": {}}], "ports": opened}]
    return [pods, guard, (rules.CLUSTER, CLUSTER_WITH), router_pods()]


SCORER_PORTS = ({"name": "http", "containerPort": 5001.0}, {"name": "metrics", "containerPort": 5002.0})
# Triton's ports: HTTP, gRPC and metrics.
TRITON_PORTS = ({"name": "http", "containerPort": 8000.0}, {"name": "grpc", "containerPort": 8001.0},
                {"name": "metrics", "containerPort": 8002.0})


@pytest.mark.parametrize("ports, opened", [
    (SCORER_PORTS, {"protocol": "TCP", "port": 5002.0}),  # by number, as the components render it
    (SCORER_PORTS, {"port": 5002}),
    (SCORER_PORTS, {"port": "metrics"}),
    (SCORER_PORTS, {"port": 5002.0, "endPort": 5002.0}),
    (TRITON_PORTS, {"port": 8002.0}),
    # The scoring port goes by another name than `http`: the metrics port is still the metrics port.
    (({"name": "scoring", "containerPort": 5001.0}, SCORER_PORTS[1]), {"port": 5002.0}),
    # UDP or SCTP reaches no TCP port: not the scorer's, whatever the number.
    (SCORER_PORTS, {"protocol": "UDP", "port": 5001.0}),
    (SCORER_PORTS, {"protocol": "SCTP"}),
])
def test_a_policy_admitting_anyone_to_the_declared_metrics_port_passes(ports, opened):
    """The metrics port serves /metrics alone: Prometheus may reach it from anywhere."""
    assert check_stack(rules.models_admit_only_the_router, guarded_pods(*ports, opened=[opened])) == []


@pytest.mark.parametrize("ports, opened, said", [
    (SCORER_PORTS, [{"port": "http"}], "port http"),
    (SCORER_PORTS, [{"port": 5001.0}], "port 5001"),
    (SCORER_PORTS, [{"port": 5002.0}, {"port": 5001.0}], "port 5002, 5001"),
    (SCORER_PORTS, [{"port": 5000.0, "endPort": 5003.0}], "port 5000-5003"),
    (SCORER_PORTS, [{"port": 5002.0, "endPort": 5003.0}], "port 5002-5003"),
    (SCORER_PORTS, [{"protocol": "TCP"}], "every port"),
    (SCORER_PORTS, [], "every port"),
    (TRITON_PORTS, [{"port": 8001.0}], "port 8001"),  # gRPC scores as HTTP does
    (TRITON_PORTS, [{"port": "grpc"}], "port grpc"),
    (SCORER_PORTS[:1], [{"port": 5002.0}], "port 5002"),  # no declared metrics port: nothing may be open to all
    (SCORER_PORTS, [{"protocol": "UDP", "port": 5001.0}, {"port": 5001.0}], "port 5001"),
    (SCORER_PORTS, [{"protocol": "UDP"}, {"protocol": "TCP"}], "every port"),
    # A UDP `metrics` port (a StatsD listener, say) is not the TCP port of that number: here the scorer's.
    (({"name": "http", "containerPort": 5001.0}, {"name": "metrics", "containerPort": 5001.0, "protocol": "UDP"}),
     [{"port": 5001.0}], "port 5001"),
])
def test_a_policy_admitting_anyone_to_another_port_than_the_metrics_port_fails(ports, opened, said):
    found = check_stack(rules.models_admit_only_the_router, guarded_pods(*ports, opened=opened))
    assert [m for m, _ in found] == [f"NetworkPolicy 'guard' admits pods other than the router's to model Deployment "
                                     f"'iris' on {said}; only its `metrics` port may admit them"]


@pytest.mark.parametrize("sidecar, said", [({"restartPolicy": "Always"}, []), ({}, ["port 9100"])])
def test_a_native_sidecars_metrics_port_is_the_pods_metrics_port(sidecar, said):
    """An init container with restartPolicy Always (Kubernetes 1.29+) serves beside the scorer, so its
    declared `metrics` port may be open to all; another init container has exited before the scorer starts."""
    stack = guarded_pods(SCORER_PORTS[0], opened=[{"protocol": "TCP", "port": 9100.0}])
    stack[0][1]["spec"]["template"]["spec"]["initContainers"] = [
        container(name="exporter", ports=[{"name": "metrics", "containerPort": 9100.0}], **sidecar)]
    assert [m.split(" on ")[1].split(";")[0] for m, _ in check_stack(rules.models_admit_only_the_router, stack)] == said


@pytest.mark.parametrize("peers", [
    [],  # a rule with no `from`: every source
    [ROUTER_PEER, {"podSelector": {}}],
    [{"podSelector": ROUTER_PEER["podSelector"], "namespaceSelector": {}}],  # router-labelled pods of any namespace
    [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
])
def test_a_policy_admitting_more_than_the_router_fails(peers):
    found = check_stack(rules.models_admit_only_the_router, [
        model_pods(), network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER]),
        network_policy({}, peers), router_pods()])
    assert found == [("NetworkPolicy 'guard' admits pods other than the router's to model Deployment 'iris' on port 5001; "
                      "only its `metrics` port may admit them", "urn:pulumi:s::p::kubernetes:networking.k8s.io/v1:NetworkPolicy::r2")]


def router_pods(namespace: str = "azureml") -> tuple[str, dict]:
    """The router's Deployment as ModelRouter renders it: it owns its pods by their name label."""
    labels = ROUTER_PEER["podSelector"]["matchLabels"]
    return rules.DEPLOYMENT, {"metadata": {"name": "model-router", "namespace": namespace, "labels": labels},
                              "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "model-router"}},
                                       "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}}}}


def router_namespace(*names: str) -> dict:
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}]}


def router_by(*expressions: dict) -> dict:
    return {"matchExpressions": list(expressions)}


NAMED_ROUTER = {"key": "app.kubernetes.io/name", "operator": "In", "values": ["model-router"]}
ROUTER_COMPONENT = {"key": "app.kubernetes.io/component", "operator": "In", "values": ["router"]}
CANARY_OUT = {"key": "track", "operator": "NotIn", "values": ["canary"]}


@pytest.mark.parametrize("peer, routers_in", [
    # The router's namespace named beside its pods (AND): the policy's own, or the one its Deployment runs in.
    ({**ROUTER_PEER, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "azureml"}}}, "azureml"),
    ({**ROUTER_PEER, "namespaceSelector": router_namespace("routing")}, "routing"),
    ({"podSelector": ROUTER_PEER["podSelector"], "namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "routing"}, "matchExpressions": [{"key": "team", "operator": "Exists"}]}},
     "routing"),
    # By its Deployment's selector, alone or with more of its labels, by expression too.
    ({"podSelector": router_by(NAMED_ROUTER)}, "azureml"),
    ({"podSelector": router_by(NAMED_ROUTER, ROUTER_COMPONENT)}, "azureml"),
    ({"podSelector": router_by(NAMED_ROUTER, {"key": "tier", "operator": "NotIn", "values": ["canary"]})}, "azureml"),
    ({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-router"}}}, "azureml"),
    ({"podSelector": router_by(NAMED_ROUTER), "namespaceSelector": router_namespace("routing")}, "routing"),
])
def test_a_peer_naming_the_routers_namespace_or_labels_its_own_way_passes(peer, routers_in):
    """Kubernetes' selectors say "the router's pods" more ways than matchLabels on the policy's namespace:
    each was refused, a false "admits pods other than the router's" for a policy that admits the router alone."""
    stack = [model_pods(), router_pods(routers_in), network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer]),
             (rules.CLUSTER, CLUSTER_WITH)]
    assert check_stack(rules.models_admit_only_the_router, stack) == []


@pytest.mark.parametrize("peer, routers_in", [
    ({**ROUTER_PEER, "namespaceSelector": router_namespace("other")}, "azureml"),  # router-labelled pods, not the router's
    ({**ROUTER_PEER, "namespaceSelector": router_namespace("azureml", "other")}, "azureml"),
    ({**ROUTER_PEER, "namespaceSelector": {}}, "azureml"),
    ({**ROUTER_PEER, "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                                 "values": ["kube-system"]}]}}, "azureml"),
    ({"namespaceSelector": router_namespace("azureml")}, "azureml"),  # every pod of the router's namespace
    ({"podSelector": {}, "namespaceSelector": router_namespace("azureml")}, "azureml"),
    ({"podSelector": router_by({**NAMED_ROUTER, "values": ["model-router", "iris"]})}, "azureml"),
    ({"podSelector": router_by({**ROUTER_COMPONENT, "operator": "Exists", "values": []})}, "azureml"),
    ({"podSelector": router_by({**ROUTER_COMPONENT, "operator": "NotIn", "values": ["model"]})}, "azureml"),
    ({"podSelector": router_by(NAMED_ROUTER)}, "routing"),  # pods of the policy's namespace named so: not the router's
    ({"podSelector": router_by(NAMED_ROUTER), "namespaceSelector": router_namespace("routing")}, "azureml"),
])
def test_a_peer_that_may_admit_other_pods_than_the_routers_fails(peer, routers_in):
    stack = [model_pods(), router_pods(routers_in), network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer]),
             (rules.CLUSTER, CLUSTER_WITH)]
    assert [m for m, _ in check_stack(rules.models_admit_only_the_router, stack)] == [
        "NetworkPolicy 'guard' admits pods other than the router's to model Deployment 'iris' on port 5001; "
        "only its `metrics` port may admit them"]


@pytest.mark.parametrize("peer, routers", [
    # `component: router` pods of the policy's namespace, the stack's router in another: none is its router.
    ({"podSelector": router_by(ROUTER_COMPONENT)}, [router_pods("elsewhere")]),
    # The router's namespace, but not the pods its Deployment owns (by their name label): another chart's too.
    ({"podSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}}}, [router_pods()]),
    ({**ROUTER_PEER, "namespaceSelector": router_namespace("azureml")}, []),  # no router declared: none is known
])
def test_a_peer_by_the_router_label_alone_fails(peer, routers):
    """A label is anyone's to put on a pod: one the stack does not declare (an ingress controller's
    `component: router`) reached the scorer past the router's auth, and the peer was passed."""
    stack = [model_pods(), *routers, network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer]),
             (rules.CLUSTER, CLUSTER_WITH)]
    assert [m.split(" on ")[1].split(";")[0] for m, _ in check_stack(rules.models_admit_only_the_router, stack)] == [
        "port 5001"]


def test_a_deployment_whose_labels_a_first_preview_does_not_know_may_be_the_router():
    router = router_pods()
    router[1]["metadata"]["labels"] = UNKNOWN_OBJECT_VALUE
    stack = [model_pods(), router, network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER])]
    assert check_stack(rules.models_admit_only_the_router, stack) == []


SERVING = {"tier": "serving"}
BY_TIER_AND_NAME = {"matchLabels": SERVING, "matchExpressions": [NAMED_ROUTER]}
BY_TIER_NOT_CANARY = {"matchLabels": SERVING, "matchExpressions": [CANARY_OUT]}


@pytest.mark.parametrize("selector, peer, said", [
    (BY_TIER_AND_NAME, {"podSelector": {"matchLabels": SERVING}}, ["port 5001"]),  # the tier's other pods too
    (BY_TIER_AND_NAME, {"podSelector": {"matchLabels": {**SERVING, "app.kubernetes.io/name": "model-router"}}}, []),
    (BY_TIER_AND_NAME, {"podSelector": router_by(NAMED_ROUTER, {"key": "tier", "operator": "In", "values": ["serving"]})}, []),
    (BY_TIER_NOT_CANARY, {"podSelector": {"matchLabels": SERVING}}, ["port 5001"]),  # its canary pods too
    (BY_TIER_NOT_CANARY, {"podSelector": {"matchLabels": SERVING, "matchExpressions": [{**CANARY_OUT, "values": ["beta"]}]}},
     ["port 5001"]),
    (BY_TIER_NOT_CANARY, {"podSelector": {"matchLabels": SERVING, "matchExpressions": [CANARY_OUT]}}, []),
])
def test_a_peer_by_the_routers_deployment_selector_holds_all_of_it(selector, peer, said):
    """A router Deployment selecting its pods by matchLabels and matchExpressions owns only the pods both
    pick: a peer pinning its matchLabels alone admits other pods of the tier, and was passed."""
    router = router_pods()
    router[1]["spec"]["selector"] = selector
    router[1]["spec"]["template"]["metadata"]["labels"] = {**ROUTER_PEER["podSelector"]["matchLabels"], **SERVING}
    stack = [model_pods(), router, network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer]),
             (rules.CLUSTER, CLUSTER_WITH)]
    assert [m.split(" on ")[1].split(";")[0] for m, _ in check_stack(rules.models_admit_only_the_router, stack)] == said


@pytest.mark.parametrize("kind, props, said", [
    # A model named model-router: its pods carry the label ModelRouter's Deployment selects its own by.
    (*model_pods("model-router"), ["port 5001"]),
    (*model_pods("model-router")[:1], {**model_pods("model-router")[1], "metadata": {"name": "m", "namespace": "other"}}, []),
    # A Job of the stack, in the router's namespace, by that label too.
    ("kubernetes:batch/v1:Job", {"metadata": {"name": "load", "namespace": "azureml"}, "spec": {"template": {
        "metadata": {"labels": {"app.kubernetes.io/name": "model-router"}}, "spec": {"containers": [container()]}}}},
     ["port 5001"]),
    # The router's own second Deployment (a canary, say): router pods by their label.
    (*router_pods()[:1], {**router_pods()[1], "metadata": {"name": "model-router-canary", "namespace": "azureml"}}, []),
    (*model_pods("iris")[:1], {**model_pods("iris")[1], "spec": {"template": {"metadata": {"labels": UNKNOWN_OBJECT_VALUE}}}}, []),
])
def test_a_peer_by_the_routers_deployment_selector_picking_the_stacks_other_pods_fails(kind, props, said):
    """A Deployment's selector is no pod's own: other pods of its namespace may carry the labels it selects
    by. A peer naming the router by its Deployment's selector was passed though the stack's own models (or
    a Job) carry them, so their code reached the scorer past the router's auth."""
    peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-router"}}}
    stack = [model_pods(), router_pods(), (kind, props), (rules.CLUSTER, CLUSTER_WITH),
             network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer])]
    found = [m for m, _ in check_stack(rules.models_admit_only_the_router, stack) if m.startswith("NetworkPolicy")]
    assert [m.split(" on ")[1].split(";")[0] for m in found] == said


def test_a_peer_naming_the_namespace_of_a_router_a_first_preview_does_not_know_passes_until_known():
    """The router's namespace made from an output may be the one the peer names."""
    router = router_pods()
    router[1]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    peer = {**ROUTER_PEER, "namespaceSelector": router_namespace("routing")}
    policy = network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [peer])
    assert check_stack(rules.models_admit_only_the_router, [model_pods(), router, policy]) == []
    policy[1]["spec"]["ingress"][0]["from"] = [{**ROUTER_PEER, "namespaceSelector": {}}]
    assert len(check_stack(rules.models_admit_only_the_router, [model_pods(), router, policy])) == 1
    # Beside it in the rule, a peer known to admit every pod of the cluster: the unknown did not hide it.
    policy[1]["spec"]["ingress"][0]["from"] = [peer, {"namespaceSelector": {}}]
    assert len(check_stack(rules.models_admit_only_the_router, [model_pods(), router, policy])) == 1


def test_model_pods_on_the_hosts_network_fail_whatever_guards_them():
    """NetworkPolicies do not isolate a pod on its node's network (Kubernetes leaves it to the plugin, and
    Azure NPM, Calico and Cilium leave it open): any pod reaches the scorer at the node's address, past a
    router-only guard that passed."""
    pods = model_pods()
    pods[1]["spec"]["template"]["spec"]["hostNetwork"] = True
    guard = network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER])
    found = check_stack(rules.models_admit_only_the_router, [pods, guard, (rules.CLUSTER, CLUSTER_WITH), router_pods()])
    assert [m for m, _ in found] == ["the pods of model Deployment 'iris' run on their node's network (hostNetwork), "
                                     "where no NetworkPolicy isolates them: any pod can reach its scorer past the router's auth"]
    pods[1]["spec"]["template"]["spec"]["hostNetwork"] = False
    assert check_stack(rules.models_admit_only_the_router, [pods, guard, (rules.CLUSTER, CLUSTER_WITH), router_pods()]) == []


@pytest.mark.parametrize("profile", [{"networkPlugin": "kubenet"}, {"networkPlugin": "azure", "networkPolicy": "none"}])
def test_a_cluster_enforcing_no_network_policy_fails(profile):
    found = check_stack(rules.models_admit_only_the_router, [(rules.CLUSTER, {"networkProfile": profile})])
    assert len(found) == 1 and "enforces no NetworkPolicy" in found[0][0] and "set cluster.network.policy" in found[0][0]


def test_model_pods_rule_checks_what_a_first_preview_knows_and_reads_the_unknown_conservatively():
    """Reading one unknown value raised, which skipped the whole stack rule. A policy whose selector is
    unknown may guard a Deployment (no "selected by no policy" for it), an unknown rule may be the router's
    (no fault), and the known pods, rules and cluster are still checked."""
    opener = network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [{"namespaceSelector": {}}])
    opener[1]["spec"]["ingress"].insert(0, UNKNOWN_OBJECT_VALUE)
    maybe = network_policy({"matchLabels": {"app.kubernetes.io/name": UNKNOWN_STRING_VALUE}}, [ROUTER_PEER])
    unlabelled = model_pods("fraud")
    unlabelled[1]["spec"]["template"]["metadata"]["labels"] = UNKNOWN_OBJECT_VALUE
    stack = [model_pods(), unlabelled, opener, maybe, (rules.CLUSTER, {"networkProfile": UNKNOWN_OBJECT_VALUE}),
             (rules.CLUSTER, {"networkProfile": {"networkPolicy": "none"}})]
    found = [m for m, _ in check_stack(rules.models_admit_only_the_router, stack)]
    assert found == ["NetworkPolicy 'guard' admits pods other than the router's to model Deployment 'iris' on port 5001; "
                     "only its `metrics` port may admit them",
                     "cluster 'r5' enforces no NetworkPolicy (networkProfile.networkPolicy is 'none'); set cluster.network.policy"]
    # Every policy known not to select them: unguarded, whatever else is unknown.
    other = network_policy({"matchLabels": {"app.kubernetes.io/name": "other"}}, [ROUTER_PEER])
    other[1]["spec"]["ingress"] = UNKNOWN_ARRAY_VALUE
    assert [m for m, _ in check_stack(rules.models_admit_only_the_router, [model_pods(), other])] == [
        "the pods of model Deployment 'iris' are selected by no ingress NetworkPolicy: any pod "
        "in the cluster can reach its scorer past the router's auth"]


# ---------------------------------------------------------------- a namespace left to the provider


def unplaced(resource: tuple[str, dict]) -> tuple[str, dict]:
    """The resource without metadata.namespace: pulumi-kubernetes puts it in its provider's."""
    typ, props = copy.deepcopy(resource)
    del props["metadata"]["namespace"]
    return typ, props


def kubeconfig(namespace: str | None) -> str:
    """A kubeconfig whose current context is `aks` (in `namespace`), beside a context `other` in `elsewhere`."""
    aks = {"cluster": "aks", "user": "u", **({"namespace": namespace} if namespace else {})}
    return json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "aks",
                       "contexts": [{"name": "aks", "context": aks},
                                    {"name": "other", "context": {"cluster": "aks", "user": "u", "namespace": "elsewhere"}}]})


@pytest.mark.parametrize("provider", [
    {"namespace": "azureml"},
    {"kubeconfig": kubeconfig("azureml")},
    {"kubeconfig": kubeconfig("elsewhere"), "context": "other", "namespace": "azureml"},  # its own beats the context's
])
def test_a_resource_without_a_namespace_is_in_its_providers(provider):
    """It was taken to be in `default`: an HPA or a policy opening the scorer to every pod, declared with a
    provider whose namespace is the model's, passed."""
    found = check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), unplaced(hpa("iris"))], provider=provider)
    assert len(found) == 1 and "'iris-hpa' targets the model Deployment 'iris'" in found[0][0]
    opener = unplaced(network_policy({}, [{"namespaceSelector": {}}]))
    stack = [model_pods(), router_pods(), network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER]), opener]
    assert [m for m, _ in check_stack(rules.models_admit_only_the_router, stack, provider=provider)] == [
        "NetworkPolicy 'guard' admits pods other than the router's to model Deployment 'iris' on port 5001; "
        "only its `metrics` port may admit them"]


def test_a_kubeconfig_context_without_a_namespace_is_default():
    found = check_stack(rules.no_hpa_on_models, [unplaced((rules.DEPLOYMENT, deployment())), hpa("iris", namespace="default")],
                        provider={"kubeconfig": kubeconfig(None)})
    assert len(found) == 1


@pytest.mark.parametrize("ambient", ["KUBECONFIG", "HOME"])
@pytest.mark.parametrize("given", ["nothing", "a path"])
def test_a_kubeconfig_file_is_read_as_pulumi_kubernetes_reads_it(tmp_path, monkeypatch, ambient, given):
    """A provider given no kubeconfig text reads the file (its `kubeconfig` path, else $KUBECONFIG's first, else
    ~/.kube/config), as pulumi-kubernetes does on the same machine: left unknown, a namespace-less model was never
    checked, not even by `pulumi up`."""
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(kubeconfig("azureml"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    if ambient == "KUBECONFIG":
        monkeypatch.setenv("KUBECONFIG", f"{tmp_path / '.kube' / 'config'}{os.pathsep}{tmp_path / 'absent'}")
    else:
        monkeypatch.setenv("HOME", str(tmp_path))
    provider = {"kubeconfig": str(tmp_path / ".kube" / "config")} if given == "a path" else {}
    found = check_stack(rules.no_hpa_on_models, [(rules.DEPLOYMENT, deployment()), unplaced(hpa("iris"))], provider=provider)
    assert len(found) == 1 and "'iris-hpa' targets the model Deployment 'iris'" in found[0][0]


@pytest.mark.parametrize("provider", [
    None,  # none said (the offline plan)
    {},  # no kubeconfig file to be found (HOME and KUBECONFIG point nowhere below)
    {"kubeconfig": "/nonexistent/.kube/aks.yaml"},  # a path to no file
    {"kubeconfig": kubeconfig("azureml"), "context": "missing"},
    {"namespace": UNKNOWN_STRING_VALUE},
])
def test_a_namespace_the_pack_cannot_know_is_not_taken_for_default(provider, tmp_path, monkeypatch):
    """Taken for `default`, a model left to a kubeconfig's namespace was faulted as guarded by no policy though
    its policy may well share it; where no kubeconfig says, it passes, as a first preview's unknown does."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    stack = [unplaced(model_pods()), router_pods(),
             network_policy({"matchLabels": {"app.kubernetes.io/name": "iris"}}, [ROUTER_PEER]), (rules.CLUSTER, CLUSTER_WITH)]
    assert check_stack(rules.models_admit_only_the_router, stack, provider=provider) == []
    assert check_stack(rules.endpoint_versions, [unplaced(v) for v in versions(4)] + [
        (typ, {**props, "metadata": {**props["metadata"], "namespace": "default"}}) for typ, props in versions(3)],
        provider=provider) == []
