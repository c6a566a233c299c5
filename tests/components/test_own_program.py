"""A platform team's own Pulumi program on the components, as the README offers it: built from the public
Args and ComponentResource classes alone, with the options (provider, protect) a program passes."""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_azure_native as azure_native
import pulumi_azure_native.resources as resources
import pulumi_kubernetes as k8s
import pulumi_random as random
import pytest

from components.cluster import AksCluster
from components.endpoint import EndpointVersion, ModelEndpoint, ModelEndpointArgs
from components.image import HashedImageArgs
from components.mocks import run
from components.router import ModelRouter, ModelRouterArgs
from components.routes import routes
from components.service import ModelService, ModelServiceArgs
from components.spec import AuthSettings, ClusterSpec, EndpointSpec, RouterSpec, ServiceSpec, SslSpec, StackSpec, WorkspaceSpec
from components.workspace import Workspace

IMAGE = "mlw.azurecr.io/scorer@sha256:" + "a" * 64
SECRET = "kubernetes:core/v1:Secret"
IRIS = ServiceSpec.model_validate({"name": "iris", "inference_config": {"entry_script": "score.py"}})
FRAUD = EndpointSpec.model_validate({"name": "fraud", "versions": [
    {"version_name": "blue", "inference_config": {"entry_script": "score.py"}, "is_default": True, "traffic_percentile": 80},
    {"version_name": "green", "inference_config": {"entry_script": "score.py"}, "traffic_percentile": 20}]})
ROUTES = routes(StackSpec(services=[IRIS], endpoints=[FRAUD]))


def router_args(namespace: str = "azureml", **kw) -> ModelRouterArgs:
    return ModelRouterArgs(spec=RouterSpec(namespace=namespace), routes=ROUTES, image=IMAGE, cluster_purpose="fast_prod",
                           location="westeurope", **kw)


def test_two_teams_routers_services_and_endpoints_on_an_attached_cluster_in_one_program():
    """Every child takes the provider and protect given to its component, no URN is declared twice, and a
    key from another resource stays secret in every output a program would export."""
    def program():
        cluster = k8s.Provider("attached", kubeconfig="apiVersion: v1\nkind: Config\n")
        out = {}
        for team in ("a", "b"):
            opts = pulumi.ResourceOptions(provider=cluster, protect=True)
            vault = random.RandomPassword(f"{team}-vault-key", length=32)
            router = ModelRouter(f"{team}-router", router_args(
                f"team-{team}", keys={"service.iris": (vault.result, pulumi.Output.from_input("from-a-plain-output"))}),
                opts=opts)
            iris = ModelService(f"{team}-iris", ModelServiceArgs(spec=IRIS, namespace=router.namespace, image=IMAGE,
                                                                 fetch_image=IMAGE, access=router.access(ROUTES[0])), opts=opts)
            fraud = ModelEndpoint(f"{team}-fraud", ModelEndpointArgs(
                spec=FRAUD, namespace=router.namespace, fetch_image=IMAGE, access=router.access(ROUTES[1]),
                versions=[EndpointVersion(v, IMAGE) for v in FRAUD.versions]), opts=opts)
            out |= {f"{team}_iris_primary": iris.primary_key, f"{team}_iris_secondary": iris.secondary_key,
                    f"{team}_fraud_primary": fraud.primary_key, f"{team}_iris_uri": iris.scoring_uri}
        return out

    rec = run(program)
    assert len({r.urn for r in rec.resources}) == len(rec.resources)
    children = [r for r in rec.resources if r.parent_type.startswith("aks-model-serving:")]
    assert {r.provider.rsplit("::", 1)[-1] for r in children if r.type.startswith("kubernetes:")} == {"attached-id"}
    assert all(r.protect for r in children)
    assert rec.secret_outputs == sorted(f"{t}_{k}" for t in "ab" for k in ("iris_primary", "iris_secondary", "fraud_primary"))
    assert rec.outputs["a_iris_secondary"] == "from-a-plain-output"
    deployments = sorted((d.inputs["metadata"]["namespace"], d.inputs["metadata"]["name"])
                         for d in rec.of_type("kubernetes:apps/v1:Deployment"))
    assert deployments == [(f"team-{t}", n) for t in "ab" for n in ("fraud-blue", "fraud-green", "iris", "model-router")]


def test_auth_settings_for_no_route_are_refused_not_replaced_by_random_keys():
    """`auth` is keyed by RouteConfig.key_id, as `keys` is: settings under the bare name ('iris') were ignored, so
    the key given there was served by no route and a random one was made, and every client holding it got 401."""
    given = AuthSettings(primary_key="k-primary", secondary_key="k-secondary")
    with pytest.raises(ValueError, match=r"ModelRouterArgs.auth: iris is no route's key_id \(<service\|endpoint>.<name>"):
        router_args(auth={"iris": given})
    router_args(auth={"service.iris": given, "endpoint.fraud": AuthSettings()})


def test_access_to_a_route_the_router_does_not_serve_is_refused():
    """With two routers, the other one's route: the URIs pointed at a router that answers 404 for it and a key-auth
    route came back with no keys, as a token-auth one does, so the service exported no keys and said nothing."""
    other = routes(StackSpec(services=[IRIS.model_copy(update={"name": "churn"})]))[0]

    def program():
        router = ModelRouter("router", router_args())
        with pytest.raises(ValueError, match=r"ModelRouter.access: service churn is not a route of router router"):
            router.access(other)
        return {"key": router.access(ROUTES[0]).primary_key}

    assert run(program).outputs["key"]


def test_a_deployment_named_as_the_routers_objects_is_refused():
    """A stack refuses these names (StackSpec); a program's Args took them, and the service's Deployment and Service
    were the router's own ('model-router') or its peers' headless Service ('model-router-peers') in the namespace."""
    for spec, deployment in ((IRIS.model_copy(update={"name": "model-router"}), None), (FRAUD.versions[0], "model-router-peers")):
        with pytest.raises(ValueError, match=r"ModelServiceArgs.deployment: 'model-router(-peers)?' is the router's name "
                                             r"\(model-router and model-router-\*\)"):
            ModelServiceArgs(spec=spec, namespace="azureml", image=IMAGE, fetch_image=IMAGE, deployment=deployment)


def test_a_secret_variable_that_is_no_variable_name_is_refused():
    """The spec refuses such a name in environment_variables; from a program it went into the `<service>-env`
    Secret, whose keys the API server refuses ('DB PASSWORD'), at `pulumi up` after the rest was made."""
    for bad in ("DB PASSWORD", "db-password", "1ST"):
        with pytest.raises(ValueError, match=rf"ModelServiceArgs.secret_variables: '{bad}' is not a variable name"):
            ModelServiceArgs(spec=IRIS, namespace="azureml", image=IMAGE, fetch_image=IMAGE,
                             secret_variables={bad: "s"})
    ModelServiceArgs(spec=IRIS, namespace="azureml", image=IMAGE, fetch_image=IMAGE, secret_variables={"DB_PASSWORD": "s"})


def test_an_endpoint_version_takes_secret_variables_from_other_resources_as_a_service_does():
    """A version's scorer that reads a Key Vault secret: ModelServiceArgs.secret_variables had no counterpart for an
    endpoint's versions, whose ModelServices the endpoint makes, so only a stack's `secure:` value could reach one."""
    def program():
        vault = random.RandomPassword("vault-db-password", length=16)
        blue, green = FRAUD.versions
        ModelEndpoint("fraud", ModelEndpointArgs(
            spec=FRAUD, namespace="azureml", fetch_image=IMAGE, access=ModelRouter("router", router_args()).access(ROUTES[1]),
            versions=[EndpointVersion(blue, IMAGE, secret_variables={"DB_PASSWORD": vault.result}), EndpointVersion(green, IMAGE)]))

    rec = run(program)
    [secret] = [s for s in rec.of_type(SECRET) if s.inputs["metadata"]["name"] == "fraud-blue-env"]
    assert list(secret.inputs["stringData"]) == ["DB_PASSWORD"] and secret.secret_inputs == ["stringData"]
    env = {d.inputs["metadata"]["name"]: d.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
           for d in rec.of_type("kubernetes:apps/v1:Deployment")}
    assert {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "fraud-blue-env", "key": "DB_PASSWORD"}}} in env["fraud-blue"]
    assert not [e for e in env["fraud-green"] if e["name"] == "DB_PASSWORD"]


def test_a_cluster_in_the_region_of_another_resource_names_its_scoring_domain_there():
    """A program places the workspace and cluster in its resource group's region (`group.location`, an Output), as
    Pulumi programs do: with a scoring DNS label (or ssl.leaf_domain_label) the cluster raised "'Output' object is
    not callable" building <label>.<region>.cloudapp.azure.com from it."""
    def program():
        group = resources.ResourceGroup("ml", location="West Europe")
        workspace = Workspace("ws", WorkspaceSpec.model_validate({"name": "mlw", "resource_group": "rg-ml"}), group.location)
        cluster = AksCluster("aks", ClusterSpec.model_validate({
            "name": "aks-ml", "node_pools": [{"name": "system", "mode": "System", "vm_size": "Standard_D4s_v3", "count": 3}],
            "ssl": {"leaf_domain_label": "mlw-tls"}}), workspace, group.location, scoring_dns_label="mlw-scoring")
        return {"fqdns": cluster.required_fqdns}

    fqdns = run(program).outputs["fqdns"]
    assert {"mlw-scoring.westeurope.cloudapp.azure.com", "mlw-tls.westeurope.cloudapp.azure.com"} <= set(fqdns)


def test_labels_and_annotation_keys_kubernetes_would_refuse_are_refused_by_the_args():
    """The API server refuses them at `pulumi up`, after the rest of the stack was made; a node pool's labels in a
    stack were checked already, a program's service labels not."""
    for labels, annotations, message in (
            ({"cost center": "ml"}, {}, r"ModelServiceArgs.labels: 'cost center' is not a Kubernetes label key"),
            ({"team": "Fraud Detection"}, {}, r"ModelServiceArgs.labels: the value of team, 'Fraud Detection', is not a Kubernetes label value"),
            ({}, {"owner email": "a@b.c"}, r"ModelServiceArgs.annotations: 'owner email' is not a Kubernetes annotation key")):
        with pytest.raises(ValueError, match=message):
            ModelServiceArgs(spec=IRIS, namespace="azureml", image=IMAGE, fetch_image=IMAGE, labels=labels, annotations=annotations)
    ModelServiceArgs(spec=IRIS, namespace="azureml", image=IMAGE, fetch_image=IMAGE, labels={"example.com/team": "fraud-2"},
                     annotations={"example.com/owner": "Fraud Detection <fraud@example.com>"})


def test_a_connections_hash_computed_from_secret_connection_strings_leaves_the_deployment_reviewable():
    """Computed as the docstring says, from the Workspace's connection strings (secrets), the hash is a secret Output
    too: the whole Deployment spec became a secret, so every preview showed its changes (image, resources) as
    [secret]. A hash is no secret: the stack file's program unsecreted its own, a program's was not."""
    def program():
        strings = pulumi.Output.secret("DefaultEndpointsProtocol=https;AccountName=mlw;AccountKey=a2V5")
        sha = strings.apply(lambda s: hashlib.sha256(s.encode()).hexdigest()[:16])
        ModelService("iris", ModelServiceArgs(spec=IRIS.model_copy(update={"enable_app_insights": True}), namespace="azureml",
                                              image=IMAGE, fetch_image=IMAGE, connections_secret="workspace-connections",
                                              connections_sha256=sha))

    deployment = run(program).one("kubernetes:apps/v1:Deployment")
    assert deployment.secret_inputs == []
    annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["aks-model-serving/connections-sha256"]) == 16


def test_an_attached_cluster_is_read_through_the_azure_provider_the_program_gives_it():
    """A program that signs in to Azure through a provider of its own (a service principal, OIDC) and gives it to the
    AksCluster: the attached cluster was read (its identity, its kubeconfig) through a provider made from the stack's
    azure-native settings instead, which such a program need not have, so as whatever identity the machine had, while
    its AcrPull grant was made through the program's."""
    mc_id = "/subscriptions/s/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/existing"

    def program():
        azure = azure_native.Provider("platform", subscription_id="s", client_id="app-id", client_secret="app-secret")
        workspace = Workspace("ws", WorkspaceSpec.model_validate({"name": "mlw", "resource_group": "rg-ml"}), "westeurope")
        AksCluster("aks", ClusterSpec.model_validate({"name": "existing", "attach": {"resource_id": mc_id}}), workspace,
                   "westeurope", opts=pulumi.ResourceOptions(provider=azure))

    rec = run(program)
    assert [p.name for p in rec.of_type("pulumi:providers:azure-native")] == ["platform"]
    through = {provider.split("::")[-1] for token, provider in rec.call_providers if "containerservice" in token}
    assert through == {"platform-id"}
    assert rec.one("azure-native:authorization:RoleAssignment").provider.split("::")[-1] == "platform-id"


def test_keys_and_certificate_must_be_pairs_not_one_value_whose_characters_became_the_pair():
    """One key (a Key Vault secret's Output, or a string) where the (primary, secondary) pair goes was indexed as the
    pair: the router served the value's first and second characters as the route's two keys, which anyone guesses,
    and the TLS Secret held one character of a PEM as the certificate and one as the key."""
    for keys in ({"service.iris": "one-key-for-both"}, {"service.iris": ("only-one",)}):
        with pytest.raises(TypeError, match=r"ModelRouterArgs.keys\['service.iris'\]: a \(primary, secondary\) pair"):
            router_args(keys=keys)

    def program():
        vault = random.RandomPassword("vault-key", length=32)
        with pytest.raises(TypeError, match=r"ModelRouterArgs.keys\['service.iris'\]: a \(primary, secondary\) pair"):
            router_args(keys={"service.iris": vault.result})
        with pytest.raises(TypeError, match=r"ModelRouterArgs.certificate: a \(certificate, key\) pair"):
            router_args(ssl=SslSpec(cname="scoring.example.com"), certificate=vault.result)

    run(program)


def test_an_image_refuses_one_string_where_a_list_goes(tmp_path):
    """pip='scikit-learn' (a string is a Sequence[str] too) was read letter by letter: the image ran
    `pip install s c i k i t - l e a r n`, installing whatever PyPI holds under those names or failing the build,
    and include='src' kept every top-level entry whose name is part of 'src' ('s', 'rc')."""
    for field_name in ("pip", "include", "pyproject"):
        with pytest.raises(TypeError, match=rf"HashedImageArgs.{field_name}: a list of strings, not one string"):
            HashedImageArgs(repository="app", registry_login_server="mlw.azurecr.io", context=tmp_path,
                            base_image="python:3.11-slim", **{field_name: "scikit-learn"})
    HashedImageArgs(repository="app", registry_login_server="mlw.azurecr.io", context=tmp_path, base_image="python:3.11-slim",
                    pip=["scikit-learn"], include=("src",))


def test_a_new_cluster_without_a_workspace_is_refused_naming_it():
    """A stack cannot say so (StackSpec); a program could, and got a bare AssertionError from inside the component
    (with python -O, an AttributeError on None), naming no argument."""
    spec = ClusterSpec.model_validate({"name": "aks-ml", "node_pools": [
        {"name": "system", "mode": "System", "vm_size": "Standard_D4s_v3", "count": 3}]})

    def program():
        with pytest.raises(ValueError, match=r"AksCluster aks: a new cluster \(no attach\) needs a workspace"):
            AksCluster("aks", spec, None, "westeurope")

    run(program)
