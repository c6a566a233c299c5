"""ModelService under Pulumi mocks: the Deployment and headless Service a spec yields."""

from __future__ import annotations

import hashlib
import json
import math

import kubernetes_validate
import pulumi
import pytest
from pydantic import SecretStr

from components.mocks import run
from components.service import ModelService, ModelServiceArgs, ModelSource, RouteAccess, WorkloadIdentity
from components.spec import EndpointVersionSpec, ServiceSpec
from scoring_image.config import ScorerSettings

IMAGE = "mlw.azurecr.io/scorer@sha256:" + "a" * 64
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"


def spec(**settings) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "iris", "inference_config": {"entry_script": "score.py"}, **settings})


def models(n: int) -> list[ModelSource]:
    return [ModelSource(f"m{i}", 1, f"https://mlw.blob.core.windows.net/models/m{i}/1") for i in range(n)]


def deploy(s: ServiceSpec, sources: list[ModelSource] = (), **kw):
    def program():
        svc = ModelService(s.name, ModelServiceArgs(spec=s, namespace="azureml", image=IMAGE, fetch_image=IMAGE,
                                                    models=sources, connections_secret="workspace-connections", **kw))
        return {"scoring_uri": svc.scoring_uri, "primary_key": svc.primary_key, "deployment": svc.deployment_name}
    return run(program)


def pod(rec) -> dict:
    return rec.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]


def env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment_and_headless_service_share_the_name_the_router_watches():
    rec = deploy(spec(), models(1))
    d, s = rec.one(DEPLOYMENT), rec.one(SERVICE)
    assert d.inputs["metadata"]["name"] == s.inputs["metadata"]["name"] == "iris"
    assert d.inputs["metadata"]["labels"]["app.kubernetes.io/component"] == "model"
    assert s.inputs["spec"]["clusterIP"] == "None"
    assert s.inputs["spec"]["selector"] == d.inputs["spec"]["selector"]["matchLabels"]
    assert s.inputs["spec"]["ports"] == [{"name": "http", "port": 5001, "targetPort": "http"}]
    assert d.parent_type == s.parent_type == "aks-model-serving:index:ModelService"
    assert not rec.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")


def test_requests_and_limits_from_cpu_cores_memory_gb_and_their_limits():
    rec = deploy(spec(cpu_cores=0.5, memory_gb=1, cpu_cores_limit=2, memory_gb_limit=1.5))
    scorer = pod(rec)["containers"][0]
    assert scorer["resources"] == {"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": "2000m", "memory": "1536Mi"}}
    assert env(scorer)["WORKER_COUNT"] == "2"


def test_a_gpu_service_runs_one_worker_whatever_its_cpu_limit():
    """Each worker process loads the model: one per core of a 4-core limit put four copies of it on the one GPU
    (CUDA out of memory in init(), or a quarter of the memory each). Azure ML runs one worker unless WORKER_COUNT
    says otherwise; a CPU service keeps one per core."""
    assert env(pod(deploy(spec(gpu_cores=1, cpu_cores=4, memory_gb=16)))["containers"][0])["WORKER_COUNT"] == "1"
    assert env(pod(deploy(spec(cpu_cores=4, memory_gb=16)))["containers"][0])["WORKER_COUNT"] == "4"


def test_gpu_cores_get_the_gpu_resource_toleration_and_selector():
    rec = deploy(spec(gpu_cores=1, cpu_cores=1, memory_gb=4))
    p = pod(rec)
    assert p["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert p["nodeSelector"] == {"aks-model-serving/accelerator": "gpu"}
    assert p["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]


@pytest.mark.parametrize(("settings", "strategy"), [
    ({"gpu_cores": 1, "autoscale_min_replicas": 2}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    ({"gpu_cores": 1, "num_replicas": 3}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    # One replica: a surge, or the service stops during the rollout.
    ({"gpu_cores": 1}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}),
    # CPU: a surge, and no serving replica taken out before its successor is ready (Kubernetes' default takes 25 %).
    ({"autoscale_min_replicas": 4}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}),
])
def test_accelerator_rollouts_need_no_spare_accelerator_when_others_keep_serving(settings, strategy):
    """A surge pod on a full GPU pool stays Pending and the rollout stalls."""
    deployment = deploy(spec(cpu_cores=1, memory_gb=4, **settings)).one(DEPLOYMENT).inputs["spec"]
    assert deployment.get("strategy") == strategy


@pytest.mark.parametrize(("settings", "timeouts"), [
    ({"gpu_cores": 1}, {"create": "30m", "update": "30m"}),
    ({"fpga_cores": 1}, {"create": "30m", "update": "30m"}),
    ({}, {}),  # Pulumi's own 10 minutes
])
def test_accelerator_deployments_wait_for_a_new_node_longer_than_pulumis_default(settings, timeouts):
    assert deploy(spec(cpu_cores=1, memory_gb=4, **settings)).one(DEPLOYMENT).custom_timeouts == timeouts


def test_description_and_tags_are_the_deployments_annotations():
    """Azure ML's service metadata: accepted from the spec (and deploymentconfig.json), so kept where kubectl shows it."""
    tagged = deploy(spec(description="iris classifier, retrained weekly", tags={"team": "fraud ops", "cost center": "42"}))
    assert tagged.one(DEPLOYMENT).inputs["metadata"]["annotations"] == {
        "kubernetes.io/description": "iris classifier, retrained weekly",
        "aks-model-serving/tags": '{"cost center": "42", "team": "fraud ops"}'}
    assert deploy(spec()).one(DEPLOYMENT).inputs["metadata"]["annotations"] == {}


def test_prometheus_finds_the_scorers_metrics_on_their_own_port():
    d = deploy(spec()).one(DEPLOYMENT).inputs["spec"]["template"]
    scorer = d["spec"]["containers"][0]
    assert scorer["ports"] == [{"name": "http", "containerPort": 5001}, {"name": "metrics", "containerPort": 5002}]
    assert env(scorer)["SCORER_METRICS_PORT"] == "5002"
    assert {k: v for k, v in d["metadata"]["annotations"].items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "5002", "prometheus.io/path": "/metrics"}


def test_cpu_service_has_no_accelerator_scheduling():
    p = pod(deploy(spec()))
    assert "nodeSelector" not in p and "tolerations" not in p


def test_probes_from_azure_ml_settings():
    scorer = pod(deploy(spec(period_seconds=5, initial_delay_seconds=20, timeout_seconds=3, success_threshold=2,
                             failure_threshold=4)))["containers"][0]
    assert scorer["livenessProbe"] == {"httpGet": {"path": "/", "port": "http"}, "initialDelaySeconds": 20, "periodSeconds": 5,
                                       "timeoutSeconds": 3, "successThreshold": 1, "failureThreshold": 4}
    assert scorer["readinessProbe"] == {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3,
                                        "successThreshold": 2, "failureThreshold": 4}


def test_one_model_dir_is_its_version_folder_and_models_come_from_the_manifest():
    rec = deploy(spec(), models(1))
    p = pod(rec)
    # Relative to the app root, the working directory, as Azure ML sets it: MLOpsPython's `.split('/')[1]` is the name.
    assert env(p["containers"][0])["AZUREML_MODEL_DIR"] == "azureml-models/m0/1"
    assert p["containers"][0]["workingDir"] == "/var/azureml-app"
    assert {"name": "models", "mountPath": "/var/azureml-app/azureml-models", "readOnly": True} in p["containers"][0]["volumeMounts"]
    fetch = p["initContainers"][0]
    assert fetch["name"] == "fetch-models" and fetch["image"] == IMAGE
    assert env(fetch)["AZURE_STORAGE_CONNECTION_STRING"] == {"secretKeyRef": {"name": "workspace-connections", "key": "storage-connection-string"}}
    # A Secret: a model url may carry a SAS token.
    secret = rec.one("kubernetes:core/v1:Secret")
    assert secret.secret_inputs == ["stringData"] and rec.of_type(CONFIG_MAP) == []
    manifest = json.loads(secret.inputs["stringData"]["models.json"])
    assert manifest == [{"name": "m0", "version": 1, "url": "https://mlw.blob.core.windows.net/models/m0/1"}]
    assert {"name": "models-manifest", "secret": {"secretName": "iris-models", "defaultMode": 0o440}} in p["volumes"]


def test_the_connections_hash_rolls_the_pods_when_a_key_is_rotated():
    """The connection strings are env, read once at a container's start."""
    pod_template = deploy(spec(), connections_sha256="0123456789abcdef").one(DEPLOYMENT)
    annotations = pod_template.inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["aks-model-serving/connections-sha256"] == "0123456789abcdef"


def test_several_models_share_the_root_and_a_changed_list_rolls_the_pods():
    a, b = deploy(spec(), models(3)), deploy(spec(), models(4))
    assert env(pod(a)["containers"][0])["AZUREML_MODEL_DIR"] == "azureml-models"
    sha = "aks-model-serving/models-sha256"
    annotations = [r.one(DEPLOYMENT).inputs["spec"]["template"]["metadata"]["annotations"][sha] for r in (a, b)]
    assert annotations[0] != annotations[1]
    # Keyed, as env-sha256: a model url's SAS token is a secret too.
    manifest = a.one("kubernetes:core/v1:Secret").inputs["stringData"]["models.json"]
    assert annotations[0] != hashlib.sha256(manifest.encode()).hexdigest()[:16]
    assert len(a.of_type("random:index/randomPassword:RandomPassword")) == 1


def test_no_models_no_init_container():
    p = pod(deploy(spec()))
    assert p["initContainers"] == [] and not any(v["name"] == "models" for v in p["volumes"])


def test_data_collection_and_app_insights_read_the_connection_secret():
    e = env(pod(deploy(spec(collect_model_data=True, enable_app_insights=True, models=["m0:1", "m1:1"]), models(2),
                       data_container="modeldata", data_workspace="sub-1/rg-1/mlw"))["containers"][0])
    assert e["AZUREML_DATA_COLLECTION_ENABLED"] == "true"
    assert e["AZUREML_DATA_COLLECTION_MODELS"] == "m0:1,m1:1"
    assert e["AZUREML_DATA_COLLECTION_CONTAINER"] == "modeldata"
    assert e["AZUREML_DATA_COLLECTION_WORKSPACE"] == "sub-1/rg-1/mlw"  # the first folders of Azure ML's layout
    assert e["AZUREML_DATA_COLLECTION_CONNECTION_STRING"] == {"secretKeyRef": {"name": "workspace-connections", "key": "storage-connection-string"}}
    assert e["APPLICATIONINSIGHTS_CONNECTION_STRING"] == {"secretKeyRef": {"name": "workspace-connections", "key": "appinsights-connection-string"}}
    assert e["OTEL_SERVICE_NAME"] == "iris"  # its cloud role in Application Insights
    assert "from-secret" not in json.dumps(e)


def test_a_collecting_scorer_requests_the_disk_its_spool_may_fill():
    """While the store is down the spool grows to its budget (1 GiB) on the node's disk: unrequested, the scheduler
    packed as many collecting replicas on a node as their CPU allowed (Azure ML's default is 0.1 core), an outage
    took more disk than the node had, and the kubelet evicted first the pods over their request: the scorers,
    the records in their spools with them."""
    def requested(**settings) -> dict:
        return pod(deploy(spec(**settings), models(1)))["containers"][0]["resources"]["requests"]

    budget = ScorerSettings.model_fields["data_collection_spool_max_mb"].default
    assert requested(collect_model_data=True, models=["m0:1"])["ephemeral-storage"] == f"{math.ceil(budget)}Mi"
    assert "ephemeral-storage" not in requested()


def test_a_variable_the_user_sets_is_the_one_entry_of_its_name():
    """Azure ML's WORKER_COUNT, an OTel user's own service name: theirs wins, as one entry (a server-side
    apply refuses two of a name)."""
    s = spec(enable_app_insights=True, inference_config={"entry_script": "score.py", "environment": {
        "environment_variables": {"WORKER_COUNT": "4", "OTEL_SERVICE_NAME": "fraud-scoring"}}})
    variables = pod(deploy(s, models(1)))["containers"][0]["env"]
    names = [e["name"] for e in variables]
    assert len(names) == len(set(names))
    assert env({"env": variables})["WORKER_COUNT"] == "4" and env({"env": variables})["OTEL_SERVICE_NAME"] == "fraud-scoring"


def test_without_collection_no_connection_strings_reach_the_scorer():
    e = env(pod(deploy(spec(), models(1)))["containers"][0])
    assert e["AZUREML_DATA_COLLECTION_ENABLED"] == "false"
    assert "AZUREML_DATA_COLLECTION_CONNECTION_STRING" not in e and "APPLICATIONINSIGHTS_CONNECTION_STRING" not in e
    assert "OTEL_SERVICE_NAME" not in e
    assert e["AZUREML_ENTRY_SCRIPT"] == "score.py" and e["AML_APP_ROOT"] == "/var/azureml-app"
    assert e["SCORING_TIMEOUT_MS"] == "60000"


def test_autoscaled_replicas_are_left_to_the_router():
    rec = deploy(spec(autoscale_min_replicas=2, autoscale_max_replicas=5))
    assert rec.one(DEPLOYMENT).inputs["spec"]["replicas"] == 2
    fixed = deploy(spec(num_replicas=3))
    assert fixed.one(DEPLOYMENT).inputs["spec"]["replicas"] == 3


def test_a_count_pulumi_owns_is_taken_back_from_the_router_that_scaled_it():
    """The router scales through the scale subresource, which makes it the owner of spec.replicas; Pulumi's
    server-side apply does not overwrite another manager's field, so the `up` that turned autoscaling off
    (num_replicas, or a dev_test cluster) failed on a field conflict. An autoscaled count stays the router's."""
    fixed = deploy(spec(num_replicas=3)).one(DEPLOYMENT)
    assert fixed.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}
    assert fixed.ignore_changes == []
    autoscaled = deploy(spec()).one(DEPLOYMENT)
    assert autoscaled.inputs["metadata"]["annotations"] == {} and autoscaled.ignore_changes == ["spec.replicas"]


def test_the_pod_may_finish_its_slowest_request_and_last_upload_before_it_is_killed():
    """The grace counts from the preStop pause; then the scorer drains requests for up to the scoring
    timeout, then ships what it collected."""
    assert pod(deploy(spec()))["terminationGracePeriodSeconds"] == 5 + 60 + 5 + 10  # Azure ML's 60 s default
    assert pod(deploy(spec(scoring_timeout_ms=120_500)))["terminationGracePeriodSeconds"] == 5 + 126 + 10


def test_a_replica_being_deleted_serves_until_the_router_has_dropped_it():
    """SIGTERM comes after the pause; the pod left the EndpointSlices at once and the router's watch
    drops it within it, so no request reaches a replica that has stopped listening."""
    scorer = pod(deploy(spec()))["containers"][0]
    assert scorer["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}


def test_replicas_spread_over_nodes_and_zones_are_drained_one_at_a_time_and_get_no_api_token():
    rec = deploy(spec(num_replicas=3))
    p = pod(rec)
    term = p["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term == {"labelSelector": {"matchLabels": {"app.kubernetes.io/name": "iris"}}, "topologyKey": "kubernetes.io/hostname"}
    # The scheduler's own zone default tolerates a skew of 5: 3 replicas could all run in one zone.
    assert p["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "iris"}}, "matchLabelKeys": ["pod-template-hash"]}]
    budget = rec.one("kubernetes:policy/v1:PodDisruptionBudget").inputs
    assert budget["metadata"]["name"] == "iris"
    # Replicas running but not ready (an init() that keeps failing) are evictable: else a drain waits for ever.
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "iris"}},
                              "unhealthyPodEvictionPolicy": "AlwaysAllow"}
    assert p["automountServiceAccountToken"] is False


def test_runs_as_non_root():
    p = pod(deploy(spec(), models(1)))
    assert p["securityContext"]["runAsNonRoot"] is True
    for c in p["containers"] + p["initContainers"]:
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) >= {"cpu", "memory"}


def test_outputs_uri_and_keys_as_secrets():
    access = RouteAccess("https://h/api/v1/service/iris/score", "https://h/api/v1/service/iris/swagger.json", "k1", "k2")
    rec = deploy(spec(), access=access)
    assert rec.outputs == {"scoring_uri": "https://h/api/v1/service/iris/score", "primary_key": "k1", "deployment": "iris"}
    assert rec.secret_outputs == ["primary_key"]


@pytest.mark.parametrize("settings", [{}, {"gpu_cores": 1, "collect_model_data": True, "enable_app_insights": True,
                                           "models": ["m0:1", "m1:1"]}])
def test_manifests_validate_against_kubernetes_1_35(settings):
    rec = deploy(spec(**settings), models(2))
    manifests = rec.kubernetes_manifests()
    assert sorted(m["kind"] for m in manifests) == ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service"]
    for doc in manifests:
        kubernetes_validate.validate(doc, "1.35", strict=True)


def test_secret_variables_reach_the_scorer_from_a_secret_of_their_own_and_roll_the_pods():
    """A `secure:` environment variable: a Kubernetes Secret, never a value in the Deployment."""
    def with_password(password: str) -> ServiceSpec:
        return spec(inference_config={"entry_script": "score.py", "environment": {
            "environment_variables": {"PLAIN": "1", "DB_PASSWORD": SecretStr(password)}}})

    rec = deploy(with_password("hunter2"))
    e = env(pod(rec)["containers"][0])
    assert e["PLAIN"] == "1"
    assert e["DB_PASSWORD"] == {"secretKeyRef": {"name": "iris-env", "key": "DB_PASSWORD"}}
    secret = next(r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name == "iris-env")
    assert secret.inputs["stringData"] == {"DB_PASSWORD": "hunter2"} and secret.secret_inputs == ["stringData"]
    assert secret.parent_type == "aks-model-serving:index:ModelService"
    assert "hunter2" not in json.dumps(rec.one(DEPLOYMENT).inputs)
    # Read at the container's start: a new value rolls the replicas.
    annotation = [r.one(DEPLOYMENT).inputs["spec"]["template"]["metadata"]["annotations"]["aks-model-serving/env-sha256"]
                  for r in (rec, deploy(with_password("hunter3")))]
    assert annotation[0] != annotation[1]
    assert not [r for r in deploy(spec()).of_type("kubernetes:core/v1:Secret") if r.name == "iris-env"]


def test_the_kubernetes_name_is_the_routes_so_one_service_runs_under_two_routers():
    """The Deployment took the component's (Pulumi) name: 'iris-prod' for a spec named 'iris', which the
    router watches and scales as 'iris'. And a program with the same service under two routers had to
    give both components one name, which Pulumi refuses (one URN twice)."""
    s = spec()

    def program():
        for team in ("a", "b"):
            ModelService(f"{team}-iris", ModelServiceArgs(spec=s, namespace=f"team-{team}", image=IMAGE, fetch_image=IMAGE,
                                                          models=models(1), connections_secret="workspace-connections"))
    rec = run(program)
    assert len({r.urn for r in rec.resources}) == len(rec.resources)
    deployments = [(d.inputs["metadata"]["namespace"], d.inputs["metadata"]["name"]) for d in rec.of_type(DEPLOYMENT)]
    assert sorted(deployments) == [("team-a", "iris"), ("team-b", "iris")]
    secrets = sorted(r.inputs["metadata"]["name"] for r in rec.of_type("kubernetes:core/v1:Secret"))
    assert secrets == ["iris-models", "iris-models"]


def test_an_endpoint_versions_kubernetes_name_must_be_given_and_valid():
    version = EndpointVersionSpec.model_validate({"version_name": "blue", "inference_config": {"entry_script": "score.py"}})
    with pytest.raises(ValueError, match=r"ModelServiceArgs.deployment: an endpoint version's Deployment is named"):
        ModelServiceArgs(spec=version, namespace="ml", image=IMAGE, fetch_image=IMAGE)
    with pytest.raises(ValueError, match=r"'Fraud_Blue' is not a Kubernetes Service name"):
        ModelServiceArgs(spec=version, namespace="ml", image=IMAGE, fetch_image=IMAGE, deployment="Fraud_Blue")


def test_collection_or_app_insights_without_the_connections_secret_is_refused():
    """Else the scorer's env referred to a Secret of no name: valid by the schema, refused by the API server."""
    with pytest.raises(ValueError, match="ModelServiceArgs.connections_secret: enable_app_insights"):
        ModelServiceArgs(spec=spec(enable_app_insights=True), namespace="ml", image=IMAGE, fetch_image=IMAGE)
    with pytest.raises(ValueError, match="and collect_model_data without a workload_identity"):
        ModelServiceArgs(spec=spec(collect_model_data=True, models=["m0:1"]), namespace="ml", image=IMAGE, fetch_image=IMAGE)
    # Collected data written as the pods' workload identity needs no connection string.
    ModelServiceArgs(spec=spec(collect_model_data=True, models=["m0:1"]), namespace="ml", image=IMAGE, fetch_image=IMAGE,
                     workload_identity=WorkloadIdentity("scorer", "https://a.blob.core.windows.net/"))


def test_labels_given_cannot_unlink_the_pods_from_their_selector():
    rec = deploy(spec(), labels={"app.kubernetes.io/name": "churn", "team": "fraud"})
    d = rec.one(DEPLOYMENT).inputs["spec"]
    assert d["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "iris" == d["selector"]["matchLabels"]["app.kubernetes.io/name"]
    assert d["template"]["metadata"]["labels"]["team"] == "fraud"


def test_secret_variables_from_other_resources_join_the_services_secret():
    """An Output (a Key Vault secret) for an environment variable: in the `<service>-env` Secret beside the
    spec's secure ones, winning over a plain one of the same name, and rolling the pods when it changes."""
    s = spec(inference_config={"entry_script": "score.py", "environment": {"environment_variables": {"API_URL": "plain"}}})

    def with_vault(value: str):
        def program():
            vault = {"API_URL": pulumi.Output.secret(value), "TOKEN": pulumi.Output.secret("t0k")}
            ModelService("iris", ModelServiceArgs(spec=s, namespace="azureml", image=IMAGE, fetch_image=IMAGE,
                                                  secret_variables=vault))
        return run(program)

    rec = with_vault("https://vault")
    secret = rec.one("kubernetes:core/v1:Secret")
    assert secret.inputs["stringData"] == {"API_URL": "https://vault", "TOKEN": "t0k"} and "stringData" in secret.secret_inputs
    e = env(pod(rec)["containers"][0])
    assert e["API_URL"] == {"secretKeyRef": {"name": "iris-env", "key": "API_URL"}}
    assert e["TOKEN"] == {"secretKeyRef": {"name": "iris-env", "key": "TOKEN"}}
    digest = rec.one(DEPLOYMENT).inputs["spec"]["template"]["metadata"]["annotations"]["aks-model-serving/env-sha256"]
    assert len(digest) == 16 and "https://vault" not in json.dumps(rec.one(DEPLOYMENT).inputs)
    # Keyed: whoever reads the Deployment cannot test guesses of a short secret against it.
    unkeyed = hashlib.sha256(json.dumps({"API_URL": "https://vault", "TOKEN": "t0k"}, sort_keys=True).encode()).hexdigest()
    assert digest != unkeyed[:16] and rec.of_type("random:index/randomPassword:RandomPassword")
    assert with_vault("https://other").one(DEPLOYMENT).inputs["spec"]["template"]["metadata"]["annotations"][
        "aks-model-serving/env-sha256"] != digest
