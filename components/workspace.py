"""Workspace: what Azure ML's workspace gives a deployment, as plain Azure resources.

A resource group (new, or an existing one by name), an Azure Container Registry with the admin
user off (clusters pull with their kubelet identity: see AksCluster's AcrPull assignment), a
storage account with a `models` container and a `modeldata` container (Azure ML's name for
collected model data), and a Log Analytics workspace with a workspace-based Application
Insights component for request telemetry, cluster monitoring and Defender.

The storage and the monitoring hold what exists nowhere else (collected data, telemetry): as deleting
an Azure ML workspace keeps its storage account and Application Insights, `pulumi destroy` and a
replacement (a renamed workspace derives new names) leave them, and a resource group made here, in Azure.
"""

from __future__ import annotations

import asyncio

import pulumi
import pulumi_azure_native.applicationinsights as appinsights
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.containerregistry as containerregistry
import pulumi_azure_native.operationalinsights as operationalinsights
import pulumi_azure_native.resources as resources
import pulumi_azure_native.storage as storage

from components import image
from components.spec import WorkspaceSpec, registry_name, storage_account_name

MODELS_CONTAINER = "models"
DATA_CONTAINER = "modeldata"  # Azure ML's container for collected model data


class Workspace(pulumi.ComponentResource):
    """Registry, storage and monitoring shared by a stack's clusters and services.

    Outputs: resource_group_name, registry_login_server, registry_id, storage_account_name,
    blob_endpoint, table_endpoint, models_container, data_container, models_container_id and
    data_container_id (resource ids, the scopes the scorer pods' identity is granted), data_collection_workspace
    (`<subscription>/<resource group>/<workspace name>`), log_analytics_workspace_id
    (resource id), log_analytics_customer_id (the workspace GUID agents report to),
    app_insights_connection_string and storage_connection_string (both secrets).
    """

    resource_group_name: pulumi.Output[str]
    registry_login_server: pulumi.Output[str]
    registry_password: pulumi.Output[str | None]  # secret: an ACR refresh token (image.ACR_TOKEN_USER)
    registry_id: pulumi.Output[str]
    storage_account_name: pulumi.Output[str]
    blob_endpoint: pulumi.Output[str]
    table_endpoint: pulumi.Output[str]
    models_container: pulumi.Output[str]
    data_container: pulumi.Output[str]
    models_container_id: pulumi.Output[str]
    data_container_id: pulumi.Output[str]
    data_collection_workspace: pulumi.Output[str]
    log_analytics_workspace_id: pulumi.Output[str]
    log_analytics_customer_id: pulumi.Output[str]
    app_insights_connection_string: pulumi.Output[str]
    storage_connection_string: pulumi.Output[str]

    def __init__(self, name: str, spec: WorkspaceSpec, location: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:Workspace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        location = spec.location or location

        if spec.create_resource_group:
            group = resources.ResourceGroup(
                f"{name}-rg", resource_group_name=spec.resource_group, location=location, opts=kept
            )
            rg_name: pulumi.Output[str] = group.name
        else:
            rg_name = pulumi.Output.from_input(spec.resource_group)

        registry = containerregistry.Registry(
            f"{name}-acr",
            resource_group_name=rg_name,
            registry_name=registry_name(spec),
            location=location,
            sku=containerregistry.SkuArgs(name=spec.registry_sku),
            admin_user_enabled=False,
            opts=child,
        )

        account = storage.StorageAccount(
            f"{name}-storage",
            resource_group_name=rg_name,
            account_name=storage_account_name(spec),
            location=location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=storage.SkuName.STANDARD_LRS),
            allow_blob_public_access=False,
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            opts=kept,
        )
        containers = {
            container: storage.BlobContainer(
                f"{name}-{container}",
                resource_group_name=rg_name,
                account_name=account.name,
                container_name=container,
                public_access=storage.PublicAccess.NONE,
                opts=kept,
            )
            for container in (MODELS_CONTAINER, DATA_CONTAINER)
        }

        logs = operationalinsights.Workspace(
            f"{name}-logs",
            resource_group_name=rg_name,
            location=location,
            sku=operationalinsights.WorkspaceSkuArgs(name=operationalinsights.WorkspaceSkuNameEnum.PER_GB2018),
            retention_in_days=spec.log_retention_days,
            opts=kept,
        )
        insights = appinsights.Component(
            f"{name}-insights",
            resource_group_name=rg_name,
            location=location,
            kind="web",
            application_type=appinsights.ApplicationType.WEB,
            workspace_resource_id=logs.id,
            ingestion_mode=appinsights.IngestionMode.LOG_ANALYTICS,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True,
                                      additional_secret_outputs=["connectionString", "instrumentationKey"]),
        )

        keys = storage.list_storage_account_keys_output(resource_group_name=rg_name, account_name=account.name,
                                                        opts=pulumi.InvokeOutputOptions(parent=self))

        self.resource_group_name = rg_name
        self.registry_login_server = registry.login_server
        self.registry_id = registry.id
        # For the identity running Pulumi, as `az acr login` gets one: images are pushed in the very `up`
        # that creates the registry, whatever docker login this machine has. The exchange is an HTTPS call:
        # in a thread, so the program goes on registering resources meanwhile.
        arm_token = authorization.get_client_token_output(opts=pulumi.InvokeOutputOptions(parent=self)).token
        client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        tenant = client.tenant_id
        self.registry_password = pulumi.Output.secret(pulumi.Output.all(registry.login_server, arm_token, tenant).apply(
            lambda a: asyncio.to_thread(image.registry_token, *a)))
        self.storage_account_name = account.name
        self.blob_endpoint = account.primary_endpoints.blob
        self.table_endpoint = account.primary_endpoints.table
        self.models_container = containers[MODELS_CONTAINER].name
        self.data_container = containers[DATA_CONTAINER].name
        self.models_container_id = containers[MODELS_CONTAINER].id
        self.data_container_id = containers[DATA_CONTAINER].id
        # The first folders of Azure ML's collected-data layout, where its readers look (the scorer lowercases it).
        self.data_collection_workspace = pulumi.Output.concat(client.subscription_id, "/", rg_name, "/", spec.name)
        self.log_analytics_workspace_id = logs.id
        self.log_analytics_customer_id = logs.customer_id
        self.app_insights_connection_string = pulumi.Output.secret(insights.connection_string)
        self.storage_connection_string = pulumi.Output.secret(
            pulumi.Output.all(account.name, keys.keys[0].value, self.blob_endpoint, self.table_endpoint).apply(
                lambda a: f"DefaultEndpointsProtocol=https;AccountName={a[0]};AccountKey={a[1]};"
                f"BlobEndpoint={a[2]};TableEndpoint={a[3]}"
            )
        )
        self.register_outputs({
            "resource_group_name": self.resource_group_name,
            "registry_login_server": self.registry_login_server,
            "registry_id": self.registry_id,
            "storage_account_name": self.storage_account_name,
            "blob_endpoint": self.blob_endpoint,
            "table_endpoint": self.table_endpoint,
            "models_container": self.models_container,
            "data_container": self.data_container,
            "models_container_id": self.models_container_id,
            "data_container_id": self.data_container_id,
            "data_collection_workspace": self.data_collection_workspace,
            "log_analytics_workspace_id": self.log_analytics_workspace_id,
            "log_analytics_customer_id": self.log_analytics_customer_id,
            "app_insights_connection_string": self.app_insights_connection_string,
            "storage_connection_string": self.storage_connection_string,
        })
