"""ScorerIdentity: the Azure AD identity scorer pods sign in to blob storage as, instead of the account key.

The scorer runs the user's entry script, so whatever credential its pod holds is the script's: the storage
account's key read, overwrote or deleted every blob of the workspace (every service's models, all collected
data). Instead a user-assigned managed identity, federated with the cluster's service account tokens (Azure AD
workload identity), may read the `models` container and write the collected-data container, nothing else: no
other container, no account settings, no keys.

Declared: the identity; a federated identity credential trusting the cluster's OIDC issuer for the scorer pods'
ServiceAccount (`system:serviceaccount:<namespace>:<name>`, audience api://AzureADTokenExchange); Storage Blob
Data Reader on the models container and Storage Blob Data Contributor on the data container; the
ServiceAccount, annotated with the identity's client id, which the pods name and the webhook reads. Its
Kubernetes side goes through the `kubernetes` provider given in opts (`providers`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pulumi
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_kubernetes as k8s

from components.cluster import builtin_role
from components.workspace import Workspace

# Built-in role definition ids (the same GUID in every subscription).
BLOB_DATA_READER_ROLE = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
BLOB_DATA_CONTRIBUTOR_ROLE = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
TOKEN_AUDIENCE = "api://AzureADTokenExchange"  # what Azure AD accepts a federated token for
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
SERVICE_ACCOUNT = "scorer"


@dataclass
class ScorerIdentityArgs:
    """`issuer`: the cluster's OIDC issuer URL; `namespace`: where the scorer pods (and their ServiceAccount) run."""

    workspace: Workspace
    issuer: pulumi.Input[str]
    namespace: pulumi.Input[str]
    location: pulumi.Input[str]


class ScorerIdentity(pulumi.ComponentResource):
    """The scorer pods' identity and ServiceAccount.

    Outputs: client_id, principal_id, service_account (the ServiceAccount's name, known once its grants exist:
    a pod naming it starts signed in with its rights, not before they are given).
    """

    client_id: pulumi.Output[str]
    principal_id: pulumi.Output[str]
    service_account: pulumi.Output[str]

    def __init__(self, name: str, args: ScorerIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:ScorerIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ws = args.workspace
        identity = managedidentity.UserAssignedIdentity(
            name, resource_group_name=ws.resource_group_name, location=args.location, opts=child)
        credential = managedidentity.FederatedIdentityCredential(
            name,
            resource_group_name=ws.resource_group_name,
            resource_name_=identity.name,
            federated_identity_credential_resource_name="scorer-pods",
            issuer=args.issuer,
            subject=pulumi.Output.concat("system:serviceaccount:", args.namespace, ":", SERVICE_ACCOUNT),
            audiences=[TOKEN_AUDIENCE],
            opts=child,
        )
        grants = [
            authorization.RoleAssignment(
                f"{name}-{what}",
                scope=scope,
                principal_id=identity.principal_id,
                principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                role_definition_id=scope.apply(functools.partial(builtin_role, role=role)),
                opts=child,
            )
            for what, scope, role in (("models-reader", ws.models_container_id, BLOB_DATA_READER_ROLE),
                                      ("data-contributor", ws.data_container_id, BLOB_DATA_CONTRIBUTOR_ROLE))
        ]
        account = k8s.core.v1.ServiceAccount(
            name,
            metadata={"name": SERVICE_ACCOUNT, "namespace": args.namespace,
                      "annotations": {CLIENT_ID_ANNOTATION: identity.client_id}},
            # Its token is the webhook's to project (audience TOKEN_AUDIENCE); the Kubernetes API's is not mounted.
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[credential, *grants]),
        )
        self.client_id = identity.client_id
        self.principal_id = identity.principal_id
        self.service_account = account.metadata.name
        self.register_outputs({"client_id": self.client_id, "principal_id": self.principal_id,
                               "service_account": self.service_account})
