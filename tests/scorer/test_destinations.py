"""Which blob client the data-collection destination builds: a cluster's scorer signs in with its pod's Azure AD
workload identity (no storage key in the pod), the local stack and Azurite with a connection string."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.identity import WorkloadIdentityCredential
from pydantic import ValidationError

from scoring_image.collection.destinations import BlobContainer, open_destination
from scoring_image.config import ScorerSettings

ACCOUNT_URL = "https://mlwprodstore.blob.core.windows.net/"
# What the workload identity webhook sets in a pod labelled azure.workload.identity/use=true.
WORKLOAD_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")


def collecting(**destination: str) -> ScorerSettings:
    return ScorerSettings(data_collection_enabled=True, data_collection_models=["iris:1"],
                          data_collection_container="modeldata", **destination)


@pytest.fixture
def workload_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "azure-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")  # read only when a token is asked for: never here
    monkeypatch.setenv("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    monkeypatch.setenv("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token))
    for name in ("AZUREML_DATA_COLLECTION_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)


def test_with_an_account_url_and_the_pods_workload_identity_the_container_is_reached_with_a_token(workload_identity):
    settings = ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_ENABLED": "true",
                                        "AZUREML_DATA_COLLECTION_MODELS": "iris:1",
                                        "AZUREML_DATA_COLLECTION_ACCOUNT_URL": ACCOUNT_URL})
    destination = open_destination(settings)
    assert isinstance(destination, BlobContainer)
    client = destination._client
    assert client.url == "https://mlwprodstore.blob.core.windows.net/modeldata"
    assert (client.account_name, client.container_name) == ("mlwprodstore", "modeldata")
    assert isinstance(client.credential, WorkloadIdentityCredential)


@pytest.mark.parametrize("missing", WORKLOAD_ENV)
def test_an_account_url_without_the_workload_identity_fails_at_start_naming_what_is_missing(
        workload_identity, monkeypatch: pytest.MonkeyPatch, missing: str):
    monkeypatch.delenv(missing)
    with pytest.raises(ValueError, match=f"{missing} unset") as raised:
        open_destination(collecting(data_collection_account_url=ACCOUNT_URL))
    assert "azure.workload.identity/use" in str(raised.value)
    assert not {name for name in WORKLOAD_ENV if name != missing} & set(str(raised.value).split(" unset")[0].split(", "))


def test_neither_a_connection_string_nor_an_account_url_fails_naming_both():
    with pytest.raises(ValidationError, match="exactly one destination") as raised:
        collecting()
    assert "data_collection_account_url [AZUREML_DATA_COLLECTION_ACCOUNT_URL]" in str(raised.value)
    assert "data_collection_connection_string [AZUREML_DATA_COLLECTION_CONNECTION_STRING]" in str(raised.value)


@pytest.mark.parametrize("url, told", [
    ("blob.core.windows.net", "is not an http(s) URL"),
    (ACCOUNT_URL + "?sv=2022-11-02&sig=abc", "carries a query"),
])
def test_an_account_url_that_is_not_a_plain_endpoint_is_refused_without_quoting_it(url: str, told: str):
    with pytest.raises(ValidationError, match=told.replace("(", r"\(").replace(")", r"\)")) as raised:
        collecting(data_collection_account_url=url)
    assert "sig=abc" not in str(raised.value)


def test_a_connection_string_still_reaches_the_container_with_its_key(workload_identity):
    """The local stack, Azurite and clusters attached by kubeconfig (no OIDC issuer the stack can trust)."""
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    client = BlobContainer(collecting(data_collection_connection_string=(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")))._client
    assert client.url == "http://127.0.0.1:10000/devstoreaccount1/modeldata"
    assert not isinstance(client.credential, WorkloadIdentityCredential)
