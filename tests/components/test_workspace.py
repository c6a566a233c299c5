"""Workspace under Pulumi mocks: the Azure resources a WorkspaceSpec yields and the outputs it gives."""

from __future__ import annotations

import pytest

from components.mocks import SUBSCRIPTION_ID, run
from components.spec import WorkspaceSpec, registry_name, storage_account_name
from components.workspace import Workspace

WORKSPACE = "aks-model-serving:index:Workspace"
OUTPUTS = [
    "resource_group_name", "registry_login_server", "registry_id", "storage_account_name", "blob_endpoint",
    "table_endpoint", "models_container", "data_container", "data_collection_workspace", "log_analytics_workspace_id",
    "log_analytics_customer_id", "app_insights_connection_string", "storage_connection_string", "registry_password",
]


def deploy(**fields):
    spec = WorkspaceSpec.model_validate({"name": "mlw-dev", "resource_group": "rg-ml-dev", **fields})

    def program():
        ws = Workspace("ws", spec, "westeurope")
        return {name: getattr(ws, name) for name in OUTPUTS}

    return run(program)


def test_declares_group_registry_storage_and_monitoring_all_parented_by_the_workspace():
    rec = deploy()
    types = sorted(r.type for r in rec.resources if r.type != WORKSPACE)
    assert types == [
        "azure-native:applicationinsights:Component",
        "azure-native:containerregistry:Registry",
        "azure-native:operationalinsights:Workspace",
        "azure-native:resources:ResourceGroup",
        "azure-native:storage:BlobContainer",
        "azure-native:storage:BlobContainer",
        "azure-native:storage:StorageAccount",
    ]
    assert {r.parent_type for r in rec.resources if r.type != WORKSPACE} == {WORKSPACE}


def test_registry_has_no_admin_user_and_the_spec_sku():
    acr = deploy(registry_sku="Premium").one("azure-native:containerregistry:Registry").inputs
    assert acr["adminUserEnabled"] is False
    assert acr["sku"] == {"name": "Premium"}
    assert acr["registryName"] == "mlwdevacr"


def test_storage_is_private_https_only_with_models_and_modeldata_containers():
    rec = deploy()
    account = rec.one("azure-native:storage:StorageAccount").inputs
    assert account["allowBlobPublicAccess"] is False
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    containers = rec.of_type("azure-native:storage:BlobContainer")
    assert sorted(c.inputs["containerName"] for c in containers) == ["modeldata", "models"]
    assert {c.inputs["publicAccess"] for c in containers} == {"None"}
    assert {c.inputs["accountName"] for c in containers} == {"mlwdevstorage"}


def test_app_insights_is_workspace_based_on_the_log_analytics_workspace():
    rec = deploy(log_retention_days=90)
    logs = rec.one("azure-native:operationalinsights:Workspace")
    assert logs.inputs["retentionInDays"] == 90
    insights = rec.one("azure-native:applicationinsights:Component")
    assert insights.inputs["workspaceResourceId"] == logs.id
    assert insights.inputs["ingestionMode"] == "LogAnalytics"
    assert "connectionString" in insights.additional_secret_outputs


def test_outputs_come_from_the_resources_and_connection_strings_are_secret():
    rec = deploy()
    out = rec.outputs
    assert out["registry_login_server"] == "mlwdevacr.azurecr.io"
    assert out["registry_id"].endswith("/providers/Microsoft.ContainerRegistry/registries/mlwdevacr")
    assert out["blob_endpoint"] == "https://mlwdevstorage.blob.core.windows.net/"
    assert out["table_endpoint"] == "https://mlwdevstorage.table.core.windows.net/"
    assert (out["models_container"], out["data_container"]) == ("models", "modeldata")
    # Azure ML's first folders of collected data: <subscription>/<resource group>/<workspace>/...
    assert out["data_collection_workspace"] == f"{SUBSCRIPTION_ID}/rg-ml-dev/mlw-dev"
    assert out["log_analytics_workspace_id"] == rec.one("azure-native:operationalinsights:Workspace").id
    assert out["app_insights_connection_string"].startswith("InstrumentationKey=")
    assert "AccountName=mlwdevstorage;AccountKey=" in out["storage_connection_string"]
    assert "BlobEndpoint=https://mlwdevstorage.blob.core.windows.net/" in out["storage_connection_string"]
    assert rec.secret_outputs == ["app_insights_connection_string", "registry_password", "storage_connection_string"]
    # An ACR refresh token for the identity running Pulumi: the new registry is pushed to in the same `up`.
    assert out["registry_password"] == "acr-refresh-token-for-mlwdevacr.azurecr.io"
    assert ("azure-native:authorization:getClientToken", {}) in rec.calls
    # The exchange (an HTTPS call) runs in a thread, not on the loop that registers the resources.
    assert ("registry:token", {"login_server": "mlwdevacr.azurecr.io", "on_loop": False}) in rec.calls
    assert ("azure-native:storage:listStorageAccountKeys", {"accountName": "mlwdevstorage", "resourceGroupName": "rg-ml-dev"}) in rec.calls


def test_an_existing_resource_group_is_used_by_name_not_declared():
    rec = deploy(create_resource_group=False, resource_group="rg-shared")
    assert rec.of_type("azure-native:resources:ResourceGroup") == []
    assert rec.one("azure-native:containerregistry:Registry").inputs["resourceGroupName"] == "rg-shared"
    assert rec.outputs["resource_group_name"] == "rg-shared"


def test_workspace_location_overrides_the_stack_location():
    rec = deploy(location="northeurope")
    assert rec.one("azure-native:storage:StorageAccount").inputs["location"] == "northeurope"


@pytest.mark.parametrize(("fields", "registry", "account"), [
    ({"name": "mlw-prod"}, "mlwprodacr", "mlwprodstorage"),
    ({"name": "A_very-long-workspace-name-x"}, "averylongworkspacenamexacr", "averylongworkspacenamexs"),
    ({"name": "mlw", "registry_name": "Given1", "storage_account_name": "given2"}, "Given1", "given2"),
])
def test_global_names_are_derived_from_the_workspace_name_unless_given(fields, registry, account):
    spec = WorkspaceSpec.model_validate({"resource_group": "rg", **fields})
    assert (registry_name(spec), storage_account_name(spec)) == (registry, account)
    assert len(storage_account_name(spec)) <= 24


def test_the_storage_keys_are_read_through_the_provider_the_workspace_is_given():
    """A Workspace given another subscription's provider made its account there but read its keys through the
    stack's default provider: the connection string's listKeys failed, or named another account's key."""
    import pulumi
    import pulumi_azure_native as azure_native

    spec = WorkspaceSpec.model_validate({"name": "mlw-dev", "resource_group": "rg-ml-dev"})

    def program():
        other = azure_native.Provider("other", subscription_id="22222222-2222-2222-2222-222222222222")
        ws = Workspace("ws", spec, "westeurope", opts=pulumi.ResourceOptions(providers=[other]))
        return {"connection": ws.storage_connection_string}

    rec = run(program)
    other = rec.one("pulumi:providers:azure-native").urn
    through = [provider for token, provider in rec.call_providers if token.endswith("listStorageAccountKeys")]
    assert through and all(provider.startswith(other) for provider in through)


def test_destroy_and_replacement_keep_the_data_as_deleting_an_azure_ml_workspace_does():
    # Collected model data and telemetry exist nowhere else: a `pulumi destroy`, or a workspace rename that
    # replaces the storage account (its name is derived from the workspace's), must leave them in Azure.
    kept = {r.type for r in deploy().resources if r.retain_on_delete}
    assert kept == {
        "azure-native:resources:ResourceGroup",  # deleting the group would delete what is kept in it
        "azure-native:storage:StorageAccount",
        "azure-native:storage:BlobContainer",
        "azure-native:operationalinsights:Workspace",
        "azure-native:applicationinsights:Component",
    }
    rec = deploy(create_resource_group=False)
    assert not rec.of_type("azure-native:resources:ResourceGroup")
    assert not rec.one("azure-native:containerregistry:Registry").retain_on_delete  # images are rebuilt by their hash
