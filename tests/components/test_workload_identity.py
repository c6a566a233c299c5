"""The scorer pods' storage access: Azure AD workload identity on a cluster the stack creates, never the account key.

The scorer runs the user's entry script: whatever reaches its pod (env, envFrom, a mounted Secret, an init
container's) is the script's too. With the workspace's connection string it could read, overwrite or delete every
blob of the workspace; with the pods' own identity it reads models and writes collected data, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import yaml

from components.mocks import Recorded, Recording, fake_kubeconfig, run
from components.plan import declare
from components.stackfile import load_stack

CLUSTER = "azure-native:containerservice:ManagedCluster"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
FEDERATED = "azure-native:managedidentity:FederatedIdentityCredential"
ROLE = "azure-native:authorization:RoleAssignment"
CONTAINER = "azure-native:storage:BlobContainer"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
# Azure's built-in roles (the same GUID in every subscription).
BLOB_DATA_READER_ROLE = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
BLOB_DATA_CONTRIBUTOR_ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def scorer_deployments(rec: Recording) -> list[Recorded]:
    found = [r for r in rec.of_type(DEPLOYMENT)
             if r.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "model"]
    assert found
    return found


def account_keys(rec: Recording) -> set[str]:
    """The storage account keys the program was handed (listStorageAccountKeys' answer, as the mock gives it)."""
    accounts = [r.outputs["name"] for r in rec.of_type("azure-native:storage:StorageAccount")]
    assert accounts
    return {base64.b64encode(hashlib.sha256(a.encode()).digest()).decode() for a in accounts}


def reachable_key_paths(rec: Recording, pod: dict, namespace: str) -> list[str]:
    """Every way a pod spec reaches a value holding a storage key: a literal env value, an env var or envFrom from a
    Secret holding one, a Secret volume (plain or projected) holding one; in its containers and init containers."""
    keys = account_keys(rec)

    def holds(value: object) -> bool:
        return any(k in str(value) for k in keys)

    secrets = {r.inputs["metadata"]["name"]: {**(r.inputs.get("stringData") or {}), **(r.inputs.get("data") or {})}
               for r in rec.of_type(SECRET) if r.inputs["metadata"].get("namespace") == namespace}
    found: list[str] = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if holds(e.get("value")) or (ref and holds(secrets.get(ref["name"], {}).get(ref["key"]))):
                found.append(f"{c['name']} env {e['name']}")
        for source in c.get("envFrom", []):
            if "secretRef" in source and holds(secrets.get(source["secretRef"]["name"])):
                found.append(f"{c['name']} envFrom {source['secretRef']['name']}")
    for v in pod.get("volumes", []):
        names = [v["secret"]["secretName"]] if "secret" in v else [
            s["secret"]["name"] for s in (v.get("projected") or {}).get("sources", []) if "secret" in s]
        found += [f"volume {v['name']}" for name in names if holds(secrets.get(name))]
    return found


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_a_created_clusters_scorer_pods_reach_no_storage_key(project, name):
    rec = run(declare(load_stack(project / "stacks" / f"Pulumi.{name}.yaml")))
    keys = account_keys(rec)
    assert [s.name for s in rec.of_type(SECRET) if any(k in str(s.inputs) for k in keys)] == []  # nowhere in the cluster
    for d in scorer_deployments(rec):
        pod = d.inputs["spec"]["template"]["spec"]
        assert reachable_key_paths(rec, pod, d.inputs["metadata"]["namespace"]) == [], d.name


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_the_federated_credential_trusts_the_clusters_issuer_for_the_scorers_service_account(project, name):
    rec = run(declare(load_stack(project / "stacks" / f"Pulumi.{name}.yaml")))
    cluster = rec.one(CLUSTER)
    assert cluster.inputs["oidcIssuerProfile"] == {"enabled": True}
    assert cluster.inputs["securityProfile"]["workloadIdentity"] == {"enabled": True}
    issuer = cluster.outputs["oidcIssuerProfile"]["issuerURL"]
    assert issuer.startswith("https://") and rec.outputs["oidc_issuer_url"] == issuer

    identity, credential = rec.one(IDENTITY), rec.one(FEDERATED)
    assert credential.inputs["issuer"] == issuer
    assert credential.inputs["audiences"] == ["api://AzureADTokenExchange"]
    assert credential.inputs["resourceName"] == identity.outputs["name"]
    # The subject is the ServiceAccount each scorer pod really runs as, in the namespace its Deployment is in.
    accounts = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r
                for r in rec.of_type("kubernetes:core/v1:ServiceAccount")}
    for d in scorer_deployments(rec):
        template = d.inputs["spec"]["template"]
        used = (d.inputs["metadata"]["namespace"], template["spec"]["serviceAccountName"])
        assert credential.inputs["subject"] == f"system:serviceaccount:{used[0]}:{used[1]}", d.name
        assert accounts[used].inputs["metadata"]["annotations"]["azure.workload.identity/client-id"] == identity.outputs["clientId"]
        assert "cluster-k8s" in accounts[used].provider  # in the cluster the scorers run in
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        # The webhook projects its own token (audience api://AzureADTokenExchange): still no Kubernetes API token.
        assert template["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_the_scorer_identity_may_read_the_models_and_write_the_collected_data_containers_only(project, name):
    rec = run(declare(load_stack(project / "stacks" / f"Pulumi.{name}.yaml")))
    principal = rec.one(IDENTITY).outputs["principalId"]
    containers = {r.inputs["containerName"]: r.id for r in rec.of_type(CONTAINER)}
    granted = {(r.inputs["scope"], r.inputs["roleDefinitionId"].rsplit("/", 1)[-1])
               for r in rec.of_type(ROLE) if r.inputs["principalId"] == principal}
    assert granted == {(containers["models"], BLOB_DATA_READER_ROLE), (containers["modeldata"], BLOB_DATA_CONTRIBUTOR_ROLE)}
    assert all(r.inputs["principalType"] == "ServicePrincipal" for r in rec.of_type(ROLE) if r.inputs["principalId"] == principal)


def test_the_scorer_and_the_fetch_are_given_the_account_url_not_a_connection_string(project):
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.prod.yaml")))
    blob = rec.one("azure-native:storage:StorageAccount").outputs["primaryEndpoints"]["blob"]
    for d in scorer_deployments(rec):
        pod = d.inputs["spec"]["template"]["spec"]
        [fetch], [scorer] = pod["initContainers"], pod["containers"]
        fetch_env = {e["name"]: e.get("value") for e in fetch["env"]}
        assert fetch_env["AZURE_STORAGE_ACCOUNT_URL"] == blob and "AZURE_STORAGE_CONNECTION_STRING" not in fetch_env
        scorer_env = {e["name"]: e.get("value") for e in scorer["env"]}
        assert scorer_env["AZUREML_DATA_COLLECTION_ACCOUNT_URL"] == blob
        assert "AZUREML_DATA_COLLECTION_CONNECTION_STRING" not in scorer_env


def attached(project: Path) -> Path:
    """The dev stack on a cluster attached by kubeconfig: the stack cannot enable an OIDC issuer there."""
    kubeconfig = project / "kubeconfig"
    kubeconfig.write_text(fake_kubeconfig("https://k8s.example.internal:6443", "onprem"))
    path = project / "stacks" / "Pulumi.dev.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"]["aks-model-serving:cluster"] = {"name": "onprem", "cluster_purpose": "dev_test",
                                                  "attach": {"kubeconfig": str(kubeconfig)}}
    for service in doc["config"]["aks-model-serving:services"]:
        service["collect_model_data"] = True
    path.write_text(yaml.safe_dump(doc))
    return path


def test_an_attached_cluster_keeps_the_key_path_and_says_so(project, monkeypatch):
    import pulumi

    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    rec = run(declare(load_stack(attached(project))))
    assert not rec.of_type(IDENTITY) and not rec.of_type(FEDERATED) and not rec.of_type(CLUSTER)
    [d] = scorer_deployments(rec)
    pod = d.inputs["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and "azure.workload.identity/use" not in d.inputs["spec"]["template"]["metadata"]["labels"]
    assert sorted(reachable_key_paths(rec, pod, d.inputs["metadata"]["namespace"])) == [
        "fetch-models env AZURE_STORAGE_CONNECTION_STRING", "scorer env AZUREML_DATA_COLLECTION_CONNECTION_STRING"]
    assert [w for w in warned if "workload identity" in w] == [
        "cluster onprem: an attached cluster gets no Azure AD workload identity from the stack, so its "
        "scorer pods read models and write collected data with the workspace storage account's key (every blob of the "
        "workspace, to the entry script too); create the cluster with the stack to give them an identity of their own"]
