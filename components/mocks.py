"""Running a Pulumi program without an engine or a cloud: shared by the tests and the offline plan.

`run(program)` executes `program` under `pulumi.runtime.set_mocks` (with `preview=False`, so
every `apply` runs) and returns a `Recording`: each resource's type, name, parent and inputs as
plain Python (secret envelopes removed, integral floats back to ints), plus the invokes made and
the values the program returned, resolved. Assertions then run on ordinary data after the program
finished, so a test cannot pass by never reaching them (the pitfall of an un-awaited Output).

`AzureMocks` fills the provider-computed outputs the components read (a mock otherwise echoes
inputs, leaving e.g. a cluster's `fqdn` None): ids, names, the registry login server, storage
endpoints, the cluster's FQDN, kubelet identity and OIDC issuer, a managed identity's client and principal ids,
connection strings, and the invokes
`listManagedClusterUserCredentials`, `getManagedCluster`, `listStorageAccountKeys`,
`getClientConfig`. HashedImage's registry lookup is answered from `registry_images` (an image
"exists" when its name is there) while `run` runs. Values are deterministic: derived from the resource's name, never random.

`RecordingMonitor` records what only the engine sees (parent, provider, protect,
additional_secret_outputs, dependencies): a mock's `new_resource` is never told the parent.

This module imports pulumi; the rest of `components` imports it lazily (the `check` command runs
without the infra extra).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as _mocks
from pulumi.runtime import settings as _settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.regions import region_name

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
TENANT_ID = "11111111-1111-1111-1111-111111111111"
# What a serialized secret looks like in mock inputs: {SECRET_SIG_KEY: SECRET_SIG, "value": ...}.
_SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def plain(value: Any) -> Any:
    """Mock inputs as a stack file or manifest would say them: no secret envelopes, 2.0 -> 2."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG_KEY) == _SECRET_SIG:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_secret(value: Any) -> bool:
    """True for a raw mock input that arrived as a secret."""
    return isinstance(value, dict) and value.get(_SECRET_SIG_KEY) == _SECRET_SIG


def fake_guid(*parts: str) -> str:
    """A GUID derived from `parts`: stable across runs, distinct per resource."""
    return str(uuid.UUID(hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]))


def fake_digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


# ------------------------------------------------------------------ computed outputs

# azure-native type -> (ARM type path under the resource group, input holding the resource's name).
_ARM: dict[str, tuple[str, str]] = {
    "containerregistry:Registry": ("Microsoft.ContainerRegistry/registries", "registryName"),
    "storage:StorageAccount": ("Microsoft.Storage/storageAccounts", "accountName"),
    "storage:BlobContainer": ("Microsoft.Storage/storageAccounts/{accountName}/blobServices/default/containers", "containerName"),
    "operationalinsights:Workspace": ("Microsoft.OperationalInsights/workspaces", "workspaceName"),
    "applicationinsights:Component": ("Microsoft.Insights/components", "resourceName"),
    "containerservice:ManagedCluster": ("Microsoft.ContainerService/managedClusters", "resourceName"),
    "containerservice:AgentPool": ("Microsoft.ContainerService/managedClusters/{resourceName}/agentPools", "agentPoolName"),
    "network:VirtualNetwork": ("Microsoft.Network/virtualNetworks", "virtualNetworkName"),
    "network:Subnet": ("Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets", "subnetName"),
    "privatedns:PrivateZone": ("Microsoft.Network/privateDnsZones", "privateZoneName"),
    "privatedns:VirtualNetworkLink": ("Microsoft.Network/privateDnsZones/{privateZoneName}/virtualNetworkLinks", "virtualNetworkLinkName"),
    "managedidentity:UserAssignedIdentity": ("Microsoft.ManagedIdentity/userAssignedIdentities", "resourceName"),
    "managedidentity:FederatedIdentityCredential": (
        "Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}/federatedIdentityCredentials",
        "federatedIdentityCredentialResourceName"),
}


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return key


def _azure_name(short_type: str, name: str, inputs: dict) -> str:
    """The name Azure would have: the explicit input, else Pulumi's auto-name (logical name + suffix)."""
    key = _ARM.get(short_type, ("", "name"))[1]
    if short_type == "resources:ResourceGroup":
        key = "resourceGroupName"
    explicit = plain(inputs.get(key))
    if explicit:
        return explicit
    suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
    # Registries and storage accounts take alphanumerics only.
    if short_type in ("containerregistry:Registry", "storage:StorageAccount"):
        return ("".join(c for c in name.lower() if c.isalnum()) + suffix)[:24]
    return f"{name}{suffix}"


def _azure_outputs(short_type: str, name: str, inputs: dict) -> tuple[str, dict]:
    """The id and the outputs Azure computes, for the resources whose outputs the components read."""
    azure_name = _azure_name(short_type, name, inputs)
    rg = plain(inputs.get("resourceGroupName")) or "rg"
    location = plain(inputs.get("location")) or "westeurope"
    out: dict[str, Any] = {"name": azure_name}
    if short_type == "resources:ResourceGroup":
        rid = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{azure_name}"
    elif short_type == "authorization:RoleAssignment":
        scope = plain(inputs.get("scope")) or f"/subscriptions/{SUBSCRIPTION_ID}"
        rid = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{fake_guid(name)}"
    else:
        path = _ARM.get(short_type, (f"Mock.{short_type.replace(':', '/')}", ""))[0]
        path = path.format_map(_Missing({k: plain(v) for k, v in inputs.items()}))
        rid = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}/providers/{path}/{azure_name}"

    if short_type == "containerregistry:Registry":
        out["loginServer"] = f"{azure_name.lower()}.azurecr.io"
    elif short_type == "storage:StorageAccount":
        out["primaryEndpoints"] = {
            kind: f"https://{azure_name}.{kind}.core.windows.net/" for kind in ("blob", "table", "queue", "file", "dfs", "web")
        }
    elif short_type == "operationalinsights:Workspace":
        out["customerId"] = fake_guid("customerId", name)
    elif short_type == "applicationinsights:Component":
        key = fake_guid("instrumentationKey", name)
        out |= {
            "instrumentationKey": key,
            "appId": fake_guid("appId", name),
            "connectionString": f"InstrumentationKey={key};IngestionEndpoint=https://{location}-0.in.applicationinsights.azure.com/",
        }
    elif short_type == "containerservice:ManagedCluster":
        out |= _cluster_outputs(azure_name, rg, location, plain(inputs.get("dnsPrefix")) or azure_name)
        if (plain(inputs.get("oidcIssuerProfile")) or {}).get("enabled"):
            out["oidcIssuerProfile"] = {"enabled": True, "issuerURL": f"https://{region_name(location)}.oic.prod-aks.azure.com/"
                                        f"{TENANT_ID}/{fake_guid('issuer', azure_name)}/"}
    elif short_type == "managedidentity:UserAssignedIdentity":
        out |= {"clientId": fake_guid("client", name), "principalId": fake_guid("principal", name), "tenantId": TENANT_ID}
    elif short_type == "authorization:RoleAssignment":
        out["name"] = fake_guid(name)
    return rid, out


# What getManagedCluster says of an attached cluster's network (a test may change it).
ATTACHED_NETWORK_PROFILE: dict[str, str] = {"networkPlugin": "azure", "networkPolicy": "calico"}


def _cluster_outputs(name: str, rg: str, location: str, dns_prefix: str) -> dict:
    location = region_name(location)  # as Azure names it in the FQDN and the node resource group
    node_rg = f"MC_{rg}_{name}_{location}"
    return {
        "fqdn": f"{dns_prefix}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.hcp.{location}.azmk8s.io",
        "nodeResourceGroup": node_rg,
        "identity": {"type": "SystemAssigned", "principalId": fake_guid("principal", name), "tenantId": TENANT_ID},
        "identityProfile": {
            "kubeletidentity": {
                "clientId": fake_guid("kubelet-client", name),
                "objectId": fake_guid("kubelet-object", name),
                "resourceId": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{node_rg}/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}-agentpool",
            }
        },
    }


def fake_kubeconfig(server: str, name: str = "cluster") -> str:
    """A kubeconfig naming `server`; what listManagedClusterUserCredentials returns, decoded."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n    server: {server}\n"
        f"contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: clusterUser_{name}\n"
        f"current-context: {name}\n"
        f"users:\n- name: clusterUser_{name}\n  user:\n    token: mock-token\n"
    )


def _parse_cluster_id(args: dict) -> tuple[str, str]:
    return plain(args.get("resourceGroupName")) or "rg", plain(args.get("resourceName")) or "cluster"


def _kubernetes_status(typ: str, meta: dict, inputs: dict) -> dict:
    """What the cluster fills in that the components read: a LoadBalancer Service's address."""
    if typ == "kubernetes:core/v1:Service" and (plain(inputs.get("spec")) or {}).get("type") == "LoadBalancer":
        octet = int(hashlib.sha256(meta["name"].encode()).hexdigest()[:2], 16)
        return {"status": {"loadBalancer": {"ingress": [{"ip": f"20.0.0.{octet}"}]}}}
    return {}


class AzureMocks(_mocks.Mocks):
    """Mocks for azure-native, kubernetes, docker, random and tls, filling what the code reads.

    registry_images: image name (`<login server>/<repo>:<tag>`) -> digest, for images that
    already exist in the registry (HashedImage reuses them); any other is missing (built).
    """

    def __init__(self, registry_images: dict[str, str] | None = None):
        self.registry_images = dict(registry_images or {})
        self.calls: list[tuple[str, dict]] = []
        self.call_providers: list[tuple[str, str]] = []  # (token, the provider reference it went through)
        self._local = threading.local()
        self._lock = threading.Lock()

    async def registry_digest(self, image_name: str, password: str | None = None) -> str | None:
        """Stands in for components.image.registry_lookup; recorded as a call `registry:lookup`."""
        with self._lock:
            self.calls.append(("registry:lookup", {"name": image_name, "token": password is not None}))
        return self.registry_images.get(image_name)

    def registry_token(self, login_server: str, arm_token: str, tenant_id: str) -> str:
        """Stands in for components.image.registry_token (the ACR token exchange); recorded as a call
        `registry:token`, with whether it ran on the event loop's thread (a network call must not)."""
        with self._lock:
            self.calls.append(("registry:token", {"login_server": login_server,
                                                  "on_loop": threading.current_thread() is threading.main_thread()}))
        return f"acr-refresh-token-for-{login_server}"

    # The monitor picks up what the last new_resource on its thread saw.
    def last(self) -> tuple[_mocks.MockResourceArgs, dict]:
        return self._local.last

    def new_resource(self, args: _mocks.MockResourceArgs) -> tuple[str | None, dict]:
        rid, computed = self._computed(args)
        outputs = dict(args.inputs) | computed
        self._local.last = (args, outputs)
        return rid, outputs

    def _computed(self, args: _mocks.MockResourceArgs) -> tuple[str, dict]:
        typ, name, inputs = args.typ, args.name, args.inputs
        if typ.startswith("azure-native:"):
            return _azure_outputs(typ.removeprefix("azure-native:"), name, inputs)
        if typ.startswith("kubernetes:") and not typ.startswith("kubernetes:helm"):
            meta = plain(inputs.get("metadata")) or {}
            meta.setdefault("name", name)
            ns = meta.get("namespace")
            return (f"{ns}/{meta['name']}" if ns else meta["name"]), {"metadata": meta, **_kubernetes_status(typ, meta, inputs)}
        if typ == "docker:index/image:Image":
            image = plain(inputs.get("imageName")) or name
            repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
            return image, {"imageName": image, "repoDigest": f"{repo}@{fake_digest(image)}"}
        if typ in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
            length = int(plain(inputs.get("length")) or 16)
            return name, {"result": (hashlib.sha256(name.encode()).hexdigest() * 4)[:length]}
        if typ == "random:index/randomUuid:RandomUuid":
            return name, {"result": fake_guid(name)}
        if typ == "tls:index/privateKey:PrivateKey":
            return name, {"privateKeyPem": f"-----BEGIN PRIVATE KEY-----\nmock-{name}\n-----END PRIVATE KEY-----\n",
                          "publicKeyPem": f"-----BEGIN PUBLIC KEY-----\nmock-{name}\n-----END PUBLIC KEY-----\n"}
        if typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            return name, {"certPem": f"-----BEGIN CERTIFICATE-----\nmock-{name}\n-----END CERTIFICATE-----\n"}
        return f"{name}-id", {}

    def call(self, args: _mocks.MockCallArgs) -> dict:
        with self._lock:
            self.calls.append((args.token, plain(args.args)))
            self.call_providers.append((args.token, args.provider or ""))
        token, a = args.token, args.args
        if token == "azure-native:containerservice:listManagedClusterUserCredentials":
            rg, name = _parse_cluster_id(a)
            fqdn = _cluster_outputs(name, rg, "westeurope", name)["fqdn"]
            value = base64.b64encode(fake_kubeconfig(f"https://{fqdn}:443", name).encode()).decode()
            return {"kubeconfigs": [{"name": "clusterUser", "value": value}]}
        if token == "azure-native:containerservice:getManagedCluster":
            rg, name = _parse_cluster_id(a)
            rid = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}"
            return {"id": rid, "name": name, "location": "westeurope", "networkProfile": ATTACHED_NETWORK_PROFILE,
                    **_cluster_outputs(name, rg, "westeurope", name)}
        if token == "azure-native:storage:listStorageAccountKeys":
            account = plain(a.get("accountName")) or "account"
            key = base64.b64encode(hashlib.sha256(account.encode()).digest()).decode()
            return {"keys": [{"keyName": "key1", "value": key, "permissions": "FULL"}]}
        if token == "azure-native:authorization:getClientToken":
            return {"token": "arm-access-token"}
        if token == "azure-native:authorization:getClientConfig":
            return {"subscriptionId": SUBSCRIPTION_ID, "tenantId": TENANT_ID,
                    "objectId": fake_guid("deployer"), "clientId": fake_guid("deployer-client")}
        return {}


# ------------------------------------------------------------------ recording


@dataclass
class Recorded:
    """One resource as the engine received it."""

    type: str
    name: str
    urn: str
    inputs: dict  # plain: no secret envelopes, integral floats as ints
    outputs: dict
    id: str | None
    custom: bool
    parent: str  # the parent's URN ("" for the stack's children)
    provider: str
    protect: bool
    delete_before_replace: bool
    ignore_changes: list[str]
    additional_secret_outputs: list[str]
    dependencies: list[str]
    secret_inputs: list[str]  # top-level inputs that arrived as secrets
    custom_timeouts: dict[str, str] = field(default_factory=dict)  # create/update/delete, the ones given
    retain_on_delete: bool = False

    @property
    def parent_type(self) -> str:
        """Type token of the parent (the last `$` part of its URN's type), "" for none."""
        return self.parent.split("::")[2].split("$")[-1] if self.parent else ""


class RecordingMonitor(_mocks.MockMonitor):
    """A MockMonitor that keeps each registration's request: parent, provider, options."""

    mocks: AzureMocks

    def __init__(self, mocks: AzureMocks):
        super().__init__(mocks)
        self.records: list[Recorded] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        args, outputs = self.mocks.last()
        record = Recorded(
            type=request.type,
            name=request.name,
            urn=response.urn,
            inputs=plain(args.inputs),
            outputs=plain(outputs),
            id=response.id or None,
            custom=request.custom,
            parent=request.parent,
            provider=request.provider,
            protect=request.protect,
            delete_before_replace=request.deleteBeforeReplace,
            ignore_changes=list(request.ignoreChanges),
            retain_on_delete=request.retainOnDelete,
            custom_timeouts={k: v for k in ("create", "update", "delete") if (v := getattr(request.customTimeouts, k))},
            additional_secret_outputs=list(request.additionalSecretOutputs),
            dependencies=sorted(request.dependencies),
            secret_inputs=sorted(k for k, v in args.inputs.items() if is_secret(v)),
        )
        with self._lock:
            self.records.append(record)
        return response


@dataclass
class Recording:
    """What a program declared under mocks, sorted by URN (callbacks run on a thread pool)."""

    resources: list[Recorded]
    calls: list[tuple[str, dict]]
    outputs: Any = None  # what the program returned, resolved to plain values
    call_providers: list[tuple[str, str]] = field(default_factory=list)
    secret_outputs: list[str] = field(default_factory=list)  # keys of a returned dict that were secret

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Recorded:
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"expected one {typ}, found {len(found)}: {[r.name for r in found]}")
        return found[0]

    def kubernetes_manifests(self) -> list[dict]:
        """Every Kubernetes object as a manifest (the resource's inputs), in URN order."""
        return [r.inputs for r in self.resources if r.type.startswith("kubernetes:") and "apiVersion" in r.inputs]


def _usable_event_loop() -> None:
    """The SDK runs on the thread's current loop: give it one if `asyncio.run` elsewhere left none."""
    try:
        if not asyncio.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run(
    program: Callable[[], Any],
    *,
    mocks: AzureMocks | None = None,
    project: str = "aks-model-serving",
    stack: str = "plan",
    config: dict[str, str] | None = None,
) -> Recording:
    """Run `program` under mocks to completion and return what it declared.

    `config` is the flat `project:key -> JSON string` map Pulumi hands a program (stack files
    are not read under mocks). Resources created before this call bypass the mocks; so build
    components inside `program`. Each call starts from a fresh root stack.
    """
    mocks = mocks or AzureMocks()
    monitor = RecordingMonitor(mocks)
    _usable_event_loop()
    _settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config or {})
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    result: dict[str, Any] = {}

    async def body() -> None:
        returned = program()
        if returned is None:
            return
        if isinstance(returned, dict):
            for key, value in returned.items():
                if isinstance(value, pulumi.Output) and await value.is_secret():
                    result.setdefault("secret", []).append(key)
        result["value"] = await pulumi.Output.from_input(returned).future()

    from components import image  # the registry HashedImage asks is the mock's while this runs

    _settings.SETTINGS.rpc_manager.clear()
    _settings.SETTINGS.outputs.clear()
    real = image.registry_lookup, image.registry_token
    image.registry_lookup, image.registry_token = mocks.registry_digest, mocks.registry_token
    try:
        _sync_await(run_pulumi_func(body))
    finally:
        image.registry_lookup, image.registry_token = real
    return Recording(
        resources=sorted(monitor.records, key=lambda r: r.urn),
        calls=sorted(mocks.calls, key=repr),
        call_providers=sorted(mocks.call_providers),
        outputs=plain(result.get("value")),
        secret_outputs=sorted(result.get("secret", [])),
    )
