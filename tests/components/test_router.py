"""ModelRouter under Pulumi mocks: RBAC, config, secrets, TLS sources, Service, scaling."""

from __future__ import annotations

import json

import kubernetes_validate
import pulumi
import pytest

from components.mocks import run
from components.router import ModelRouter, ModelRouterArgs
from components.routes import routes
from components.spec import AuthSettings, RouterSpec, SslSpec, StackSpec
from router_image.config import RouterConfig

IMAGE = "mlw.azurecr.io/router@sha256:" + "b" * 64
INTERNAL = {"service.beta.kubernetes.io/azure-load-balancer-internal": "true",
            "service.beta.kubernetes.io/azure-load-balancer-internal-subnet": "lb"}

STACK = StackSpec.model_validate({
    "services": [{"name": "iris", "inference_config": {"entry_script": "score.py"}, "primary_key_rotation": 0}],
    "endpoints": [{"name": "fraud", "auth_enabled": False, "token_auth_enabled": True, "versions": [
        {"version_name": "control", "inference_config": {"entry_script": "score.py"}, "is_default": True, "traffic_percentile": 80},
        {"version_name": "treatment", "inference_config": {"entry_script": "score.py"}, "traffic_percentile": 20}]}],
})


def build(purpose="fast_prod", ssl=None, router=None, annotations=None, rotation=(0, 0), auth=None, stack=STACK, certificate=None,
          location="westeurope"):
    spec = RouterSpec.model_validate(router or {"min_replicas": 2, "max_replicas": 6, "dns_label": "mlw-scoring"})
    ssl_spec = SslSpec.model_validate(ssl) if ssl else None
    rs = routes(stack)

    def program():
        r = ModelRouter("router", ModelRouterArgs(
            spec=spec, routes=rs, image=IMAGE, cluster_purpose=purpose, location=location, ssl=ssl_spec,
            service_annotations=annotations or {}, certificate=certificate() if certificate else None,
            auth=auth if auth is not None else {"service.iris": AuthSettings(primary_key_rotation=rotation[0],
                                                                              secondary_key_rotation=rotation[1])}))
        iris = r.access(rs[0])
        return {"host": r.host, "iris_uri": iris.scoring_uri, "iris_swagger": iris.swagger_uri,
                "iris_primary": iris.primary_key, "iris_secondary": iris.secondary_key,
                "fraud_key": r.access(rs[1]).primary_key, "token_signing_key": r.token_signing_key}
    return run(program)


def named(rec, typ: str, name: str):
    found = [r for r in rec.of_type(typ) if r.inputs["metadata"]["name"] == name]
    assert len(found) == 1, [r.inputs["metadata"]["name"] for r in rec.of_type(typ)]
    return found[0]


def config(rec) -> RouterConfig:
    return RouterConfig.model_validate_json(named(rec, "kubernetes:core/v1:ConfigMap", "model-router-config").inputs["data"]["config.json"])


def test_role_is_limited_to_endpointslices_scale_of_the_router_and_model_deployments_and_the_lease():
    rec = build()
    rules = rec.one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs["rules"]
    assert rules == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["model-router-autoscaler"], "verbs": ["get", "update"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["fraud-control", "fraud-treatment", "iris", "model-router"],
         "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["fraud-control", "fraud-treatment", "iris", "model-router"],
         "verbs": ["patch"]},
    ]
    binding = rec.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "model-router", "namespace": "azureml"}]
    namespace = rec.one("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["name"] == "azureml"
    # An attached cluster's `azureml` may be the Azure ML extension's, which server-side apply adopts: destroy
    # must not delete it (and what runs there) with the stack; every other resource is deleted as usual.
    assert namespace.retain_on_delete
    assert not [r.name for r in rec.resources if r.custom and r.retain_on_delete and r is not namespace]
    assert not rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")


def test_a_fixed_size_version_can_be_read_but_not_scaled():
    fixed = STACK.model_copy(update={"services": [STACK.services[0].model_copy(update={"autoscale_enabled": False})]})
    rules = build(stack=fixed).one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs["rules"]
    scale = {r["verbs"][0]: r["resourceNames"] for r in rules if "deployments/scale" in r["resources"]}
    assert scale == {"get": ["fraud-control", "fraud-treatment", "iris", "model-router"],
                     "patch": ["fraud-control", "fraud-treatment", "model-router"]}


def test_config_is_the_routers_own_schema_rendered_from_the_specs():
    c = config(build(ssl={"self_signed": True}))
    assert c.backend == "kubernetes" and c.namespace == "azureml" and c.host == "0.0.0.0" and c.port == 8080
    assert c.keys_dir == "/etc/model-router/keys" and c.token.public_key_file == "/etc/model-router/token/signing-key.pub.pem"
    assert c.tls.cert_file == "/etc/model-router/tls/tls.crt"
    assert c.peers.service == "model-router-peers" and c.autoscale_enabled
    assert [(r.kind, r.name, [v.deployment for v in r.versions]) for r in c.routes] == [
        ("service", "iris", ["iris"]), ("endpoint", "fraud", ["fraud-control", "fraud-treatment"])]
    assert [v.traffic_percentile for v in c.routes[1].versions] == [80, 20]


def test_a_routes_cors_origins_are_its_scorers_aml_cors_origins():
    """The router answers a route's CORS preflights (no replica gets an anonymous request): from the origins its
    scorers admit, read as the scorer reads AML_CORS_ORIGINS, of every version of an endpoint."""
    def env(origins: str | None) -> dict:
        variables = {"AML_CORS_ORIGINS": origins} if origins is not None else {}
        return {"entry_script": "score.py", "environment": {"environment_variables": variables}}
    stack = StackSpec.model_validate({
        "services": [{"name": "web", "inference_config": env("https://a.example, https://b.example")},
                     {"name": "plain", "inference_config": env(None)}],
        "endpoints": [{"name": "abtest", "versions": [
            {"version_name": "one", "inference_config": env("https://a.example"), "is_default": True},
            {"version_name": "two", "inference_config": env("*"), "traffic_percentile": 10}]}]})
    assert {r.name: r.cors_origins for r in routes(stack)} == {
        "web": ("https://a.example", "https://b.example"), "plain": (), "abtest": ("https://a.example", "*")}


def test_dev_test_turns_router_autoscaling_off_and_fixes_replicas():
    rec = build(purpose="dev_test")
    assert config(rec).autoscale_enabled is False and config(rec).router_scale is None
    assert not rec.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["replicas"] == 2
    # The counts are read, never set: no patch rule at all (one without names would cover every Deployment).
    rules = rec.one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs["rules"]
    assert [r["verbs"] for r in rules if "deployments/scale" in r["resources"]] == [["get"]]
    assert "model-router" not in rules[-1]["resourceNames"]


def test_a_fixed_router_count_is_taken_back_from_the_pods_that_scaled_it():
    """The router's leader scales its own Deployment through the scale subresource: an `up` that fixes the count
    (dev_test, or min_replicas == max_replicas) must overwrite that field, which server-side apply refuses unless forced."""
    fixed = named(build(purpose="dev_test"), "kubernetes:apps/v1:Deployment", "model-router")
    assert fixed.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"} and fixed.ignore_changes == []
    autoscaled = named(build(), "kubernetes:apps/v1:Deployment", "model-router")
    assert autoscaled.inputs["metadata"]["annotations"] == {} and autoscaled.ignore_changes == ["spec.replicas"]


def test_config_and_keys_are_mounted_whole_so_changes_roll_nothing():
    rec = build()
    spec = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]
    pod = spec["template"]["spec"]
    assert "annotations" not in spec["template"]["metadata"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert all("subPath" not in m for m in mounts.values())
    assert mounts["config"]["mountPath"] == "/etc/model-router/config" and mounts["keys"]["mountPath"] == "/etc/model-router/keys"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "model-router-config"}}
    assert volumes["token"] == {"name": "token", "configMap": {"name": "model-router-token"}}
    # Readable by the router's group only: the kubelet's default (0644) lets any user in the container read the keys.
    assert volumes["keys"] == {"name": "keys", "secret": {"secretName": "model-router-keys", "defaultMode": 0o440}}
    assert pod["containers"][0]["command"] == ["python", "-m", "router_image", "--config", "/etc/model-router/config/config.json"]
    assert pod["serviceAccountName"] == "model-router"


def test_pods_know_their_own_name_for_the_lease_and_the_peer_list():
    rec = build()
    container = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_keys_are_random_per_key_route_secret_and_rotate_one_at_a_time_with_their_counters():
    """As Azure ML's regen_key: one key is replaced while clients use the other, so a rotation refuses no one.
    One counter for both replaced both at once, and every client was refused until it had a new key."""
    a, b = build(rotation=(0, 0)), build(rotation=(0, 1))
    passwords = [p for p in a.of_type("random:index/randomPassword:RandomPassword") if p.name != "router-peers"]
    assert sorted(p.name for p in passwords) == ["router-service.iris-primary", "router-service.iris-secondary"]
    assert {p.inputs["keepers"]["rotation"] for p in passwords} == {"0"}  # as the one counter's 0: no key replaced
    # Letters and digits, as Azure ML's keys: sent in a header and pasted into shells and URLs unquoted.
    assert all(p.inputs["length"] == 32 and p.inputs["special"] is False for p in passwords)
    assert {p.name: p.inputs["keepers"]["rotation"] for p in b.of_type("random:index/randomPassword:RandomPassword")
            if p.name != "router-peers"} == {"router-service.iris-primary": "0", "router-service.iris-secondary": "1"}
    secret = named(a, "kubernetes:core/v1:Secret", "model-router-keys")
    assert sorted(secret.inputs["stringData"]) == ["service.iris.primary", "service.iris.secondary"]
    assert "stringData" in secret.secret_inputs
    assert secret.inputs["stringData"]["service.iris.primary"] == a.outputs["iris_primary"]
    assert a.outputs["iris_primary"] != a.outputs["iris_secondary"]
    assert a.outputs["fraud_key"] is None  # token auth: no keys
    assert {"iris_primary", "iris_secondary"} <= set(a.secret_outputs)


def test_keys_given_in_the_stack_are_used_verbatim():
    rec = build(auth={"service.iris": AuthSettings(primary_key="p" * 32, secondary_key="s" * 32)})
    assert [p.name for p in rec.of_type("random:index/randomPassword:RandomPassword")] == ["router-peers"]
    assert rec.outputs["iris_primary"] == "p" * 32 and rec.outputs["iris_secondary"] == "s" * 32
    # Plain strings in the stack file: the component marks them secret, or `pulumi stack output` prints them.
    assert {"iris_primary", "iris_secondary"} <= set(rec.secret_outputs)
    assert "stringData" in named(rec, "kubernetes:core/v1:Secret", "model-router-keys").secret_inputs


SIGNING_KEY = "tls:index/privateKey:PrivateKey"
PUBLIC_KEYS = "signing-key.pub.pem"


def signing_keys(rec) -> dict[str, object]:
    return {k.name: k for k in rec.of_type(SIGNING_KEY) if k.name.startswith("router-token")}


def published(rec) -> str:
    data = named(rec, "kubernetes:core/v1:ConfigMap", "model-router-token").inputs["data"]
    assert list(data) == [PUBLIC_KEYS]
    return data[PUBLIC_KEYS]


@pytest.mark.parametrize("algorithm, expected", [("ES256", {"algorithm": "ECDSA", "ecdsaCurve": "P256"}),
                                                 ("RS256", {"algorithm": "RSA", "rsaBits": 2048})])
def test_token_signing_key_matches_the_algorithm(algorithm, expected):
    rec = build(router={"token_algorithm": algorithm})
    keys = signing_keys(rec)
    assert keys and all(k.inputs == expected for k in keys.values())
    assert config(rec).token.algorithm == algorithm
    # In the cluster only the public halves: a reader of the namespace's objects cannot mint tokens.
    assert published(rec).startswith(keys["router-token"].outputs["publicKeyPem"])
    assert not [r for r in rec.resources for k in keys.values() if k.outputs["privateKeyPem"] in json.dumps(r.inputs, default=str)]


def test_rotation_0_keeps_the_signing_key_a_stack_has_today():
    """Before token_key_rotation there was one key, `router-token`: at rotation 0 it is declared with the same
    name and inputs, so upgrading a stack replaces it not, and no outstanding token is refused."""
    rec = build()
    keys = signing_keys(rec)
    assert keys["router-token"].inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    assert rec.outputs["token_signing_key"] == keys["router-token"].outputs["privateKeyPem"]
    assert "token_signing_key" in rec.secret_outputs


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_rotated_signing_key_was_published_before_it_signs_and_the_previous_one_stays_published(algorithm):
    """One signing key could only be replaced with every outstanding token refused, and the router's pods see a
    new public key only minutes after the `up` (the kubelet's refresh): tokens minted with a new key at once
    were refused meanwhile too. Each rotation signs with the key published since the one before, and keeps
    publishing the key it replaces, until the next rotation, for the tokens it signed."""
    before = None
    for rotation in range(4):
        rec = build(router={"token_algorithm": algorithm, "token_key_rotation": rotation})
        keys = signing_keys(rec)
        name = {g: "router-token" if g == 0 else f"router-token-{g}" for g in range(rotation + 2)}
        order = [rotation, *([rotation - 1] if rotation else []), rotation + 1]  # the signing key first
        assert list(keys) == sorted(name[g] for g in order)
        assert rec.outputs["token_signing_key"] == keys[name[rotation]].outputs["privateKeyPem"]
        assert "token_signing_key" in rec.secret_outputs
        assert published(rec) == "".join(keys[name[g]].outputs["publicKeyPem"] for g in order)
        if before is not None:
            signing, public = keys[name[rotation]].outputs["publicKeyPem"], before[1]
            assert signing in public  # the pods had it before it signed
            assert before[0] in published(rec)  # and still take the tokens of the key it replaced
        before = (keys[name[rotation]].outputs["publicKeyPem"], published(rec))


def test_a_signing_key_rotation_below_zero_is_refused():
    assert RouterSpec.model_validate({"token_key_rotation": 2}).token_key_rotation == 2
    with pytest.raises(ValueError, match=r"token_key_rotation\n  Input should be greater than or equal to 0"):
        RouterSpec.model_validate({"token_key_rotation": -1})


def test_public_service_has_dns_label_and_https_uris_with_tls():
    rec = build(ssl={"self_signed": True})
    svc = named(rec, "kubernetes:core/v1:Service", "model-router")
    assert svc.inputs["spec"]["type"] == "LoadBalancer"
    assert svc.inputs["metadata"]["annotations"] == {"service.beta.kubernetes.io/azure-dns-label-name": "mlw-scoring"}
    assert svc.inputs["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "http"}]
    assert svc.inputs["metadata"]["labels"]["aks-model-serving/cluster-purpose"] == "fast_prod"
    assert rec.outputs["iris_uri"] == "https://mlw-scoring.westeurope.cloudapp.azure.com/api/v1/service/iris/score"
    assert rec.outputs["iris_swagger"] == "https://mlw-scoring.westeurope.cloudapp.azure.com/api/v1/service/iris/swagger.json"
    cert = rec.one("tls:index/selfSignedCert:SelfSignedCert").inputs
    assert cert["dnsNames"] == ["mlw-scoring.westeurope.cloudapp.azure.com"]
    tls_secret = named(rec, "kubernetes:core/v1:Secret", "model-router-tls")
    pod = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "model-router-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert tls_secret.inputs["type"] == "kubernetes.io/tls" and "stringData" in tls_secret.secret_inputs


def test_a_region_given_by_its_display_name_still_names_a_host():
    """Azure takes `West Europe` for westeurope everywhere; a DNS name cannot hold it. The scoring URIs and
    the certificate named mlw-scoring.West Europe.cloudapp.azure.com, which no client can resolve."""
    rec = build(ssl={"self_signed": True}, location="West Europe")
    assert rec.outputs["host"] == "mlw-scoring.westeurope.cloudapp.azure.com"
    assert rec.outputs["iris_uri"] == "https://mlw-scoring.westeurope.cloudapp.azure.com/api/v1/service/iris/score"
    assert rec.one("tls:index/selfSignedCert:SelfSignedCert").inputs["dnsNames"] == ["mlw-scoring.westeurope.cloudapp.azure.com"]


def test_internal_load_balancer_without_dns_label_serves_plain_http_on_its_address():
    rec = build(router={"min_replicas": 1, "max_replicas": 2}, annotations=INTERNAL)
    svc = named(rec, "kubernetes:core/v1:Service", "model-router")
    assert svc.inputs["metadata"]["annotations"] == INTERNAL
    assert svc.inputs["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    assert rec.outputs["iris_uri"].startswith("http://20.0.0.") and config(rec).tls is None


def test_only_the_exact_internal_annotation_makes_the_load_balancer_internal():
    """Azure's cloud provider takes only "true" as internal: with "True" the router's address is public, and the
    router dropped its DNS label as if it were internal, so the public router had no name to call it by."""
    rec = build(annotations={"service.beta.kubernetes.io/azure-load-balancer-internal": "True"})
    svc = named(rec, "kubernetes:core/v1:Service", "model-router")
    assert svc.inputs["metadata"]["annotations"]["service.beta.kubernetes.io/azure-dns-label-name"] == "mlw-scoring"
    assert rec.outputs["host"] == "mlw-scoring.westeurope.cloudapp.azure.com"


def test_stack_certificate_and_cname():
    rec = build(ssl={"cname": "score.example.com", "certificate": "CERT", "key": "KEY"})
    secret = named(rec, "kubernetes:core/v1:Secret", "model-router-tls")
    assert secret.inputs["stringData"] == {"tls.crt": "CERT", "tls.key": "KEY"}
    assert secret.secret_inputs == ["stringData"]  # the stack file's private key, kept secret in the state
    assert rec.outputs["host"] == "score.example.com"
    assert not rec.of_type("tls:index/selfSignedCert:SelfSignedCert")


def test_a_programs_certificate_from_other_resources_is_served_as_a_secret():
    """A Key Vault's certificate: Outputs, which a stack's SslSpec (plain strings) cannot hold."""
    rec = build(ssl={"cname": "score.example.com"},
                certificate=lambda: (pulumi.Output.from_input("CERT"), pulumi.Output.secret("KEY")))
    secret = named(rec, "kubernetes:core/v1:Secret", "model-router-tls")
    assert secret.inputs["stringData"] == {"tls.crt": "CERT", "tls.key": "KEY"} and secret.secret_inputs == ["stringData"]
    assert rec.outputs["host"] == "score.example.com"


@pytest.mark.parametrize(("ssl", "certificate", "message"), [
    ({"cname": "score.example.com"}, None, "ssl.cname 'score.example.com' has no certificate and key"),
    ({"cname": "score.example.com", "certificate": "C", "key": "K"}, ("C", "K"), "given with no ssl.certificate"),
    ({"self_signed": True}, ("C", "K"), "the certificate and key of ssl.cname"),
])
def test_a_cname_has_one_certificate(ssl, certificate, message):
    with pytest.raises(ValueError, match=message):
        ModelRouterArgs(spec=RouterSpec(), routes=[], image=IMAGE, cluster_purpose="fast_prod", location="westeurope",
                        ssl=SslSpec.model_validate(ssl), certificate=certificate)


def test_cert_manager_certificate():
    """Each renewal with a new private key: cert-manager before 1.18 kept the first key for good (rotationPolicy
    Never), so a key that leaked from a pod's files stayed good through every renewal."""
    rec = build(ssl={"cert_manager_issuer": "letsencrypt"})
    cert = rec.one("kubernetes:cert-manager.io/v1:Certificate").inputs
    assert cert["spec"] == {"secretName": "model-router-tls", "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"},
                            "dnsNames": ["mlw-scoring.westeurope.cloudapp.azure.com"],
                            "privateKey": {"rotationPolicy": "Always"}}
    assert not rec.of_type("kubernetes:core/v1:Secret") or all(
        r.inputs["metadata"]["name"] != "model-router-tls" for r in rec.of_type("kubernetes:core/v1:Secret"))


def test_leaf_domain_label_names_the_load_balancer():
    rec = build(ssl={"leaf_domain_label": "mlw-leaf"}, router={"dns_label": "other"})
    svc = named(rec, "kubernetes:core/v1:Service", "model-router")
    assert svc.inputs["metadata"]["annotations"]["service.beta.kubernetes.io/azure-dns-label-name"] == "mlw-leaf"
    assert rec.outputs["host"] == "mlw-leaf.westeurope.cloudapp.azure.com"


def test_router_spreads_over_nodes_keeps_a_budget_and_scales_itself():
    rec = build()
    pod = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "model-router"}
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == ["topology.kubernetes.io/zone"]
    budget = rec.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    assert (budget["maxUnavailable"], budget["unhealthyPodEvictionPolicy"]) == (1, "AlwaysAllow")
    # No HPA: the scaling leader sizes the router on CPU and routing latency, from 2 pods to 6.
    assert not rec.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    scale = config(rec).router_scale
    assert scale.deployment == "model-router" and scale.cpu_cores == 0.5 and scale.max_routing_latency_ms == 5
    assert (scale.autoscale.min_replicas, scale.autoscale.max_replicas, scale.autoscale.target_utilization) == (2, 6, 70)
    assert scale.autoscale.scale_down_delay_seconds == 300


def test_a_stopping_router_pod_may_finish_its_slowest_request():
    """5 s still listening while the load balancer and kube-proxy stop sending it connections, then the
    queue wait + scoring timeout of the slowest version (Azure ML's defaults: 500 ms + 60 s), then the exit."""
    rec = build()
    pod = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert config(rec).drain_seconds == 60.5
    assert pod["terminationGracePeriodSeconds"] == 5 + 61 + 5


def test_peers_read_each_others_load_with_a_random_secret():
    rec = build()
    secret = named(rec, "kubernetes:core/v1:Secret", "model-router-peers")
    assert "stringData" in secret.secret_inputs and len(secret.inputs["stringData"]["secret"]) == 32
    assert config(rec).peers.secret_file == "/etc/model-router/peers/secret"
    pod = named(rec, "kubernetes:apps/v1:Deployment", "model-router").inputs["spec"]["template"]["spec"]
    assert {"name": "peers", "secret": {"secretName": "model-router-peers", "defaultMode": 0o440}} in pod["volumes"]
    assert {"name": "peers", "mountPath": "/etc/model-router/peers", "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_every_manifest_validates_against_kubernetes_1_30():
    rec = build(ssl={"self_signed": True})
    manifests = rec.kubernetes_manifests()
    assert len(manifests) >= 10
    for doc in manifests:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue
        kubernetes_validate.validate(doc, "1.35", strict=True)
    json.dumps(manifests)


@pytest.mark.parametrize("purpose", ["DevTest", "devtest"])
def test_azure_mls_spelling_of_the_cluster_purpose_is_understood(purpose):
    """'DevTest', as the cluster spec takes it, left the router autoscaling on a dev_test cluster."""
    assert config(build(purpose=purpose)).autoscale_enabled is False


def test_bad_purpose_or_a_location_not_yet_known_is_refused():
    base = dict(spec=RouterSpec(), routes=[], image=IMAGE, cluster_purpose="fast_prod", location="westeurope")
    with pytest.raises(ValueError, match="cluster_purpose: 'prod' is none of dev_test, fast_prod, dense_prod"):
        ModelRouterArgs(**{**base, "cluster_purpose": "prod"})
    # An Output here became "Calling __str__ on an Output[T]..." in the host, the URIs and the certificate.
    with pytest.raises(TypeError, match="ModelRouterArgs.location: a plain string"):
        ModelRouterArgs(**{**base, "location": pulumi.Output.from_input("westeurope")})


def test_the_namespace_can_be_the_platforms_own():
    """A platform team that manages its namespaces got a second Namespace object of the same name."""
    def program():
        r = ModelRouter("router", ModelRouterArgs(spec=RouterSpec(namespace="ml-team"), routes=routes(STACK), image=IMAGE,
                                                  cluster_purpose="fast_prod", location="westeurope", create_namespace=False))
        return {"namespace": r.namespace}
    rec = run(program)
    assert not rec.of_type("kubernetes:core/v1:Namespace")
    assert rec.outputs["namespace"] == "ml-team"
    assert {r.inputs["metadata"]["namespace"] for r in rec.resources if r.type.startswith("kubernetes:")} == {"ml-team"}


def test_keys_from_other_resources_are_served_and_kept_secret():
    """A platform team keeps its keys in Key Vault: they come as Outputs, which the specs (plain strings)
    could not take."""
    def program():
        vault = [pulumi.Output.secret("p" * 32), pulumi.Output.secret("s" * 32)]
        r = ModelRouter("router", ModelRouterArgs(spec=RouterSpec(), routes=routes(STACK), image=IMAGE, cluster_purpose="fast_prod",
                                                  location="westeurope", keys={"service.iris": (vault[0], vault[1])}))
        iris = r.access(routes(STACK)[0])
        return {"primary": iris.primary_key, "secondary": iris.secondary_key}
    rec = run(program)
    secret = named(rec, "kubernetes:core/v1:Secret", "model-router-keys")
    assert secret.inputs["stringData"] == {"service.iris.primary": "p" * 32, "service.iris.secondary": "s" * 32}
    assert "stringData" in secret.secret_inputs and {"primary", "secondary"} <= set(rec.secret_outputs)
    assert [p.name for p in rec.of_type("random:index/randomPassword:RandomPassword")] == ["router-peers"]
    with pytest.raises(ValueError, match="ModelRouterArgs.keys: service.irs is no key-auth route's key_id"):
        ModelRouterArgs(spec=RouterSpec(), routes=routes(STACK), image=IMAGE, cluster_purpose="fast_prod",
                        location="westeurope", keys={"service.irs": ("a", "b")})


def test_keys_a_program_gives_as_plain_strings_are_kept_secret():
    """ModelRouterArgs.keys takes any input: a key read from a file or an environment variable comes as a plain
    string, and the router marks it secret itself, in its Secret and in the route's access."""
    def program():
        r = ModelRouter("router", ModelRouterArgs(spec=RouterSpec(), routes=routes(STACK), image=IMAGE, cluster_purpose="fast_prod",
                                                  location="westeurope", keys={"service.iris": ("p" * 32, "s" * 32)}))
        iris = r.access(routes(STACK)[0])
        return {"primary": iris.primary_key, "secondary": iris.secondary_key}
    rec = run(program)
    secret = named(rec, "kubernetes:core/v1:Secret", "model-router-keys")
    assert secret.inputs["stringData"] == {"service.iris.primary": "p" * 32, "service.iris.secondary": "s" * 32}
    assert "stringData" in secret.secret_inputs
    assert rec.secret_outputs == ["primary", "secondary"]
