"""What a stack may say: the one source of truth, as pydantic models.

Every model forbids unknown fields, so a misspelled key fails before any resource is
declared. Cross-field rules raise one line per problem in the form `field: message`;
`components.validation.format_errors` turns those into `path.to.field: message`.

The deployment settings carry the names and defaults of Azure ML's
`AksWebservice.deploy_configuration` / `AksServiceDeploymentConfiguration`
(https://learn.microsoft.com/python/api/azureml-core/azureml.core.webservice.aks.aksservicedeploymentconfiguration):
autoscale on unless num_replicas is set, min 1, max 10, refresh 1 s, target 70 %;
cpu_cores 0.1, memory_gb 0.5; auth_enabled True, token_auth_enabled False;
scoring_timeout_ms 60000; replica_max_concurrent_requests 1; max_request_wait_time 500 ms;
liveness probe period 10 s, initial delay 310 s, timeout 2 s, success 1, failure 3;
collect_model_data and enable_app_insights False. Cluster settings follow `AksCompute`
(https://learn.microsoft.com/python/api/azureml-core/azureml.core.compute.akscompute):
cluster_purpose FastProd by default, which needs at least 3 nodes and 12 vCPUs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from components.accelerators import SCHEDULING
from components.azureml import Finding, Findings, Origin, in_files, load_deployment_config, load_inference_config, named, told
from components.validation import KeysNamedClose

_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header carries as one token
SECURE = "<secure>"  # a secret still encrypted (components.stackfile): its value cannot be checked
_MODEL_URL = re.compile(r"^https://[a-z0-9]{3,24}\.blob\.core\.windows\.net/.+|^http://127\.0\.0\.1:\d+/.+")
MAX_MODELS_PER_SERVICE = 1000
MAX_ENDPOINT_VERSIONS = 6
FAST_PROD_MIN_NODES = 3
FAST_PROD_MIN_VCPUS = 12


class Spec(KeysNamedClose):
    """Base of every spec: each class adds `_rules`, and all of them run, so every problem
    of a model is reported at once rather than the first one only. A line whose message names other
    fields is a Finding that says which, so that an Azure ML file's problem names them by its keys."""

    # revalidate_instances: a spec given as a field is validated as a copy, so that rules resolving
    # it in context (a dev_test cluster turning autoscaling off) leave the caller's object alone.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, revalidate_instances="always")

    @model_validator(mode="after")
    def _check_rules(self) -> Spec:
        problems: list[str] = []
        for cls in reversed(type(self).__mro__):
            rules = cls.__dict__.get("_rules")
            if rules is not None:
                problems += rules(self)
        if problems:
            raise Findings(problems)
        return self


# Names Kubernetes and Azure accept. Azure ML service names: 3-32 chars, lowercase letters,
# digits and dashes, starting with a letter and not ending with a dash; that is also a valid
# DNS-1035 label, so it is safe for Kubernetes Services and Deployments.
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")]
K8sName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
# AKS agent pool names: lowercase alphanumerics, start with a letter, at most 12 characters.
PoolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,11}$")]
# Kubernetes label syntax: an optional DNS-subdomain prefix, a name of up to 63 characters; a value likewise.
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"^(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$"
_LABEL_VALUE = rf"^(?:{_LABEL_NAME})?$"
_LABEL_KEY_WORDS = "an optional DNS prefix and /, then up to 63 letters, digits, -, _ or ., beginning and ending with a letter or digit"
_LABEL_VALUE_WORDS = "up to 63 letters, digits, -, _ or ., beginning and ending with a letter or digit"
# AKS reserves node labels under these prefixes for its own; a pool that sets one is refused.
AKS_RESERVED_LABEL_PREFIXES = ("kubernetes.azure.com/", "kubernetes.io/")
# Kubernetes' own label domains, and the two of them a kubelet may label its node under (NodeRestriction,
# the kubelet's --node-labels): a node given any other such label never registers.
KUBERNETES_LABEL_DOMAINS = ("kubernetes.io", "k8s.io")
KUBELET_LABEL_DOMAINS = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _under(domain: str, domains: tuple[str, ...]) -> bool:
    """A label domain is one of `domains` or a subdomain of one, as the kubelet and NodeRestriction compare them."""
    return any(domain == d or domain.endswith("." + d) for d in domains)


# AKS's own taint for a System pool: only critical system pods run there, the rest on User pools.
CRITICAL_ADDONS_ONLY = "CriticalAddonsOnly=true:NoSchedule"
AzureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,61}[A-Za-z0-9]$")]
ResourceGroupName = Annotated[str, StringConstraints(pattern=r"^[-\w.()]{0,89}[-\w()]$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")]
Cidr = Annotated[str, StringConstraints(min_length=9)]
# A Kubernetes object name (a DNS-1123 subdomain), as a ClusterIssuer's is.
K8sObjectName = Annotated[str, StringConstraints(
    max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
# A name clients call: two or more DNS labels, nothing else (no scheme, port, path or trailing dot).
_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})+$")
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# The router's Deployment, Services, ConfigMap and Secrets are named this or start with "<it>-".
ROUTER_NAME = "model-router"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # an environment variable's name, as a shell and a Dockerfile ENV take it
K8S_NAME_MAX = 63  # a DNS-1035 label: Service names and the app.kubernetes.io/name label value


def label_problems(field: str, labels: Mapping[str, Any], kind: str = "label") -> list[str]:
    """What the API server (or AKS) would refuse in labels, or with kind "annotation" in annotations' keys (their
    values are free text), only at `pulumi up`. A value from another resource (an Output) is left to it."""
    problems = []
    for key, value in labels.items():
        if not re.match(_LABEL_KEY, key):
            problems.append(f"{field}: {key!r} is not a Kubernetes {kind} key ({_LABEL_KEY_WORDS})")
        if kind == "label" and isinstance(value, str) and not re.match(_LABEL_VALUE, value):
            problems.append(f"{field}: the value of {key}, {value!r}, is not a Kubernetes label value ({_LABEL_VALUE_WORDS})")
    return problems


def is_router_name(name: str) -> bool:
    """The router's own Kubernetes names (its Deployment, Services, Secrets): no model's may be one."""
    return name == ROUTER_NAME or name.startswith(f"{ROUTER_NAME}-")


def deployment_name(route: str, version: str | None = None) -> str:
    """Kubernetes name of a version's Deployment and headless Service."""
    return route if version is None else f"{route}-{version}"


def _network(value: str, field: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.ip_network(value, strict=True)  # type: ignore[return-value]
    except ValueError as exc:
        raise ValueError(f"{field}: {value!r} is not a CIDR block ({exc})") from None


# ---------------------------------------------------------------- workspace


class WorkspaceSpec(Spec):
    """Resource group, registry, storage, Log Analytics and Application Insights."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")]
    location: str | None = None  # defaults to the stack's azure-native:location
    resource_group: ResourceGroupName
    create_resource_group: bool = True
    # ACR: 5-50 alphanumerics; storage account: 3-24 lowercase alphanumerics. Derived from
    # the workspace name when not given.
    registry_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{5,50}$")] | None = None
    registry_sku: Literal["Basic", "Standard", "Premium"] = "Standard"
    storage_account_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{3,24}$")] | None = None
    log_retention_days: int = Field(30, ge=30, le=730)

    def _rules(self) -> list[str]:
        if len(registry_name(self)) < 5:
            return [f"registry_name: the name derived from the workspace name, {registry_name(self)!r}, is under the "
                    "registry's 5 characters; give registry_name"]
        return []


def _alnum(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def registry_name(spec: WorkspaceSpec) -> str:
    """The registry's global name: given, else the workspace name's alphanumerics + "acr"."""
    return spec.registry_name or _alnum(spec.name) + "acr"


def storage_account_name(spec: WorkspaceSpec) -> str:
    """The storage account's global name: given, else the workspace name's alphanumerics + "storage"
    (3-24 lowercase alphanumerics, as Azure requires)."""
    return spec.storage_account_name or (_alnum(spec.name) + "storage")[:24]


# ---------------------------------------------------------------- cluster

Accelerator = Literal["none", "gpu", "fpga"]
_GPU_SIZE = re.compile(r"^Standard_N[CDV]", re.I)
_FPGA_SIZE = re.compile(r"^Standard_PB", re.I)
# Azure's size names: family, vCPUs, then feature letters, where p marks an Arm64 CPU (Dpsv5, Epsv5, Bpsv2, ...).
_ARM_SIZE = re.compile(r"^Standard_[A-Z]+\d+(?:-\d+)?[a-z]*p[a-z]*_v\d+$")
# D-series v1 and v2, A-series v1 and G-series sizes are numbered by generation, not by vCPU; every later
# family (Av2, Dv3+, Ev3+, Fsv2, NC, ND, NV, PB, ...) puts the vCPU count in the name.
_D_VCPUS = {
    "D1": 1, "D2": 2, "D3": 4, "D4": 8, "D5": 16,
    "D11": 2, "D12": 4, "D13": 8, "D14": 16, "D15": 20,
    "DS1": 1, "DS2": 2, "DS3": 4, "DS4": 8, "DS5": 16,
    "DS11": 2, "DS12": 4, "DS13": 8, "DS14": 16, "DS15": 20,
}
_A_VCPUS = {"A0": 1, "A1": 1, "A2": 2, "A3": 4, "A4": 8, "A5": 2, "A6": 4, "A7": 8, "A8": 8, "A9": 16, "A10": 8, "A11": 16}
_G_VCPUS = {f"{family}{n}": 2 ** n for family in ("G", "GS") for n in range(1, 6)}  # G1 and GS1: 2 ... G5: 32
_UNVERSIONED_VCPUS = _A_VCPUS | _G_VCPUS
# What AKS refuses: a node of fewer vCPUs, a System pool of burstable (B-series) sizes, a kubenet cluster of more nodes.
AKS_MIN_VCPUS = 2
_BURSTABLE_SIZE = re.compile(r"^Standard_B\d", re.I)
KUBENET_MAX_NODES = 400


def vcpus(vm_size: str) -> int | None:
    """vCPUs of an Azure VM size, from its name; None when the name has no count.

    A constrained-core size names its active vCPUs after the dash: Standard_E96-48ads_v5 has 48.
    """
    m = re.match(r"^Standard_([A-Z]+)(\d+)(?:-(\d+))?[a-z]*(?:_[A-Za-z0-9]+)*?(_v(\d+))?$", vm_size, re.I)
    if not m:
        return None
    family, number, constrained, version = m.group(1).upper(), m.group(2), m.group(3), m.group(5)
    if constrained:
        return int(constrained)
    name = f"{family}{number}"
    if version in (None, "2") and name in _D_VCPUS:  # D3 and D3_v2 have 4 (a _Promo suffix reads as no version)
        return _D_VCPUS[name]
    if version is None and name in _UNVERSIONED_VCPUS:
        return _UNVERSIONED_VCPUS[name]
    return int(number)


# NVIDIA GPUs per node of the GPU sizes Azure offers now: what the NVIDIA device plugin advertises as
# nvidia.com/gpu, from Azure's size pages (an NVadsA10 v5 partition is one vGPU to the node). A size not
# listed (retired, or newer than this table) gets no capacity check.
_NVIDIA_GPUS = {
    **dict.fromkeys(("nc4as_t4_v3", "nc8as_t4_v3", "nc16as_t4_v3"), 1), "nc64as_t4_v3": 4,
    "nc6s_v3": 1, "nc12s_v3": 2, "nc24s_v3": 4, "nc24rs_v3": 4,
    "nc8ads_a10_v4": 1, "nc16ads_a10_v4": 1, "nc32ads_a10_v4": 2,
    "nc24ads_a100_v4": 1, "nc48ads_a100_v4": 2, "nc96ads_a100_v4": 4,
    "nc40ads_h100_v5": 1, "nc80adis_h100_v5": 2,
    "nd40rs_v2": 8, "nd96asr_v4": 8, "nd96amsr_a100_v4": 8, "nd96isr_h100_v5": 8, "nd96isr_h200_v5": 8,
    "nv12s_v3": 1, "nv24s_v3": 2, "nv48s_v3": 4,
    **dict.fromkeys(("nv6ads_a10_v5", "nv12ads_a10_v5", "nv18ads_a10_v5", "nv36ads_a10_v5", "nv36adms_a10_v5"), 1),
    "nv72ads_a10_v5": 2,
}
# GPU series Azure retired in 2023 (NC, NCv2, ND and NV v1: K80, P100, P40, M60), which AKS no longer creates nodes
# of; Azure ML's own GPU examples still name Standard_NC6.
_RETIRED_GPU_SIZE = re.compile(r"^Standard_(NC(6|12|24r?)(_Promo)?|NC(6|12|24r?)s_v2|ND(6|12|24r?)s|NV(6|12|24)(_Promo)?)$", re.I)
# AMD GPUs (Radeon MI25, MI300X, V620): no NVIDIA device plugin serves them, so no nvidia.com/gpu.
_AMD_GPU_SIZE = re.compile(r"^Standard_(NV\d+as_v4|ND\d+isr_MI300X_v5|NG\d+ads_V620_v1)$", re.I)


def gpus(vm_size: str) -> int | None:
    """NVIDIA GPUs per node of a VM size; None when not known."""
    return _NVIDIA_GPUS.get(vm_size.removeprefix("Standard_").lower())


def accelerator_of(vm_size: str) -> Accelerator:
    if _GPU_SIZE.match(vm_size) and not _AMD_GPU_SIZE.match(vm_size):
        return "gpu"
    if _FPGA_SIZE.match(vm_size):
        return "fpga"
    return "none"


class NodePoolSpec(Spec):
    name: PoolName
    vm_size: str = "Standard_D3_v2"  # AksCompute's default vm_size
    mode: Literal["System", "User"] = "User"
    count: int | None = Field(None, ge=0, le=1000)
    min_count: int | None = Field(None, ge=0, le=1000)
    max_count: int | None = Field(None, ge=1, le=1000)
    zones: list[Literal["1", "2", "3"]] = []
    labels: dict[str, str] = {}
    taints: list[Annotated[str, StringConstraints(pattern=r"^[\w./-]+=[\w.-]*:(NoSchedule|PreferNoSchedule|NoExecute)$")]] = []
    # Defaults to what the VM size carries: N-series -> gpu, PB-series -> fpga.
    accelerator: Accelerator | None = None

    def _rules(self) -> list[str]:
        problems = []
        if not re.match(r"^Standard_[A-Za-z0-9_]+(?:-[0-9]+[A-Za-z0-9_]*)?$", self.vm_size):  # E96-48ads_v5: constrained cores
            problems.append(f"vm_size: {self.vm_size!r} is not an Azure VM size like Standard_D4s_v3")
        if self.accelerator is None:
            self.accelerator = accelerator_of(self.vm_size)
        if _RETIRED_GPU_SIZE.match(self.vm_size):
            problems.append(f"vm_size: {self.vm_size} is of a GPU series Azure retired in 2023 (NC, NCv2, ND and NV v1), "
                            "which AKS no longer creates nodes of; choose a current NVIDIA size, e.g. Standard_NC4as_T4_v3")
        elif self.accelerator == "gpu" and _AMD_GPU_SIZE.match(self.vm_size):
            problems.append(f"accelerator: {self.vm_size} carries an AMD GPU; its nodes advertise no nvidia.com/gpu, "
                            "which replicas with gpu_cores ask for (choose an NVIDIA size: NC, ND or NVv3/NVadsA10 v5)")
        elif self.accelerator != "none" and accelerator_of(self.vm_size) != self.accelerator:
            family = "N-series (NC, ND, NV)" if self.accelerator == "gpu" else "PB-series"
            problems.append(f"accelerator: {self.accelerator} needs a {family} vm_size, not {self.vm_size}")
        problems += label_problems("labels", self.labels)
        for key in self.labels:
            domain = key.rpartition("/")[0]
            if not re.match(_LABEL_KEY, key):
                continue  # label_problems names it
            if key.startswith(AKS_RESERVED_LABEL_PREFIXES):
                problems.append(f"labels: {key!r} is under {key.split('/')[0]}/, which AKS reserves for its own node labels; "
                                "choose a prefix of your own")
            elif _under(domain, KUBERNETES_LABEL_DOMAINS) and not _under(domain, KUBELET_LABEL_DOMAINS):
                problems.append(f"labels: {key!r} is under {domain}/, which the kubelet refuses to label its node with "
                                f"(of Kubernetes' own prefixes only {'/ and '.join(KUBELET_LABEL_DOMAINS)}/), so the pool's "
                                "nodes would never register; choose a prefix of your own")
        for taint in self.taints:  # a taint's key and value are a label's, which AKS checks only at pulumi up
            key, _, rest = taint.partition("=")
            value = rest.rpartition(":")[0]
            if not re.match(_LABEL_KEY, key):
                problems.append(f"taints: the key of {taint!r}, {key!r}, is not a Kubernetes label key ({_LABEL_KEY_WORDS})")
            if not re.match(_LABEL_VALUE, value):
                problems.append(f"taints: the value of {taint!r}, {value!r}, is not a Kubernetes label value ({_LABEL_VALUE_WORDS})")
        cores = vcpus(self.vm_size)
        if cores is not None and cores < AKS_MIN_VCPUS:
            problems.append(f"vm_size: {self.vm_size} has fewer than {AKS_MIN_VCPUS} vCPUs ({cores}), which AKS refuses "
                            "for a node; choose e.g. Standard_D2s_v3")
        if self.mode == "System" and _BURSTABLE_SIZE.match(self.vm_size):
            problems.append(f"vm_size: {self.vm_size} is a B-series (burstable) size, which AKS does not support for a "
                            "System pool; choose e.g. Standard_D4s_v3, or make this a User pool")
        if _ARM_SIZE.match(self.vm_size):
            problems.append(f"vm_size: {self.vm_size} is an Arm64 size (the p in it); the router and scorer images are "
                            "built for linux/amd64, so their pods would not start there")
        if self.mode == "User" and self.accelerator in ("gpu", "fpga") and self.taints:
            problems.append(f"taints: a {self.accelerator} pool is tainted sku={self.accelerator}:NoSchedule, which the "
                            "scorer replicas and the device plugin tolerate; another taint would keep them off its nodes")
        autoscaled = self.min_count is not None or self.max_count is not None
        if autoscaled and (self.min_count is None or self.max_count is None):
            problems.append("min_count: cluster-autoscaler bounds need both min_count and max_count")
        elif autoscaled and self.min_count > self.max_count:  # type: ignore[operator]
            problems.append(f"min_count: {self.min_count} exceeds max_count {self.max_count}")
        elif autoscaled and self.count is not None and not self.min_count <= self.count <= self.max_count:  # type: ignore[operator]
            problems.append(f"count: {self.count} is outside min_count..max_count ({self.min_count}..{self.max_count})")
        if self.mode == "System" and (self.count == 0 or self.min_count == 0):
            field = "count" if self.count == 0 else "min_count"
            problems.append(f"{field}: a System pool keeps at least one node for the cluster's own pods")
        if self.count is None and not autoscaled:
            self.count = 3 if self.mode == "System" else 1
        if self.mode == "System" and self.taints and self.taints != [CRITICAL_ADDONS_ONLY]:
            problems.append(f"taints: a System pool runs the cluster's own pods, which tolerate no taint but AKS's "
                            f"{CRITICAL_ADDONS_ONLY}; taint a User pool instead")
        elif self.mode == "System" and self.taints and self.accelerator != "none":
            problems.append(f"taints: {CRITICAL_ADDONS_ONLY} would keep the scorers off this {self.accelerator} pool, which "
                            "is there for them; put it on a CPU System pool, or drop it here")
        return problems

    @property
    def node_count(self) -> int:
        """Nodes the pool starts with (the autoscaler's lower bound when autoscaled)."""
        return self.count if self.count is not None else max(self.min_count or 0, 1)

    @property
    def most_nodes(self) -> int:
        """Nodes the pool can have: the autoscaler's upper bound, else its count."""
        return self.max_count if self.max_count is not None else self.node_count


# The one subnet of a VNet the stack creates: the cluster's nodes (and pods, azure CNI) live there.
CLUSTER_SUBNET = "aks"


class VnetSpec(Spec):
    """An existing subnet (subnet_id) or a new VNet and subnet (address_space + subnet_prefix)."""

    subnet_id: str | None = None
    address_space: Cidr | None = None
    subnet_prefix: Cidr | None = None
    # Custom DNS servers on a new VNet (an existing subnet's VNet is its owner's to set).
    dns_servers: list[str] = []

    def _rules(self) -> list[str]:
        problems = []
        if self.subnet_id and (self.address_space or self.subnet_prefix):
            problems.append("subnet_id: give an existing subnet_id or a new address_space + subnet_prefix, not both")
        elif not self.subnet_id and not (self.address_space and self.subnet_prefix):
            problems.append("subnet_id: give an existing subnet_id, or address_space and subnet_prefix for a new VNet")
        if self.subnet_id and not re.match(
            r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+$",
            self.subnet_id, re.I,
        ):
            problems.append("subnet_id: must be a subnet resource id (/subscriptions/.../virtualNetworks/<vnet>/subnets/<subnet>)")
        if self.subnet_id and self.dns_servers:
            problems.append("dns_servers: set on a new VNet only; an existing subnet's VNet keeps the DNS servers its owner "
                            "gave it (set them there)")
        if self.address_space and self.subnet_prefix and not problems:
            space = _network(self.address_space, "address_space")
            subnet = _network(self.subnet_prefix, "subnet_prefix")
            if not subnet.subnet_of(space):
                problems.append(f"subnet_prefix: {subnet} is not inside address_space {space}")
        for ip in self.dns_servers:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                problems.append(f"dns_servers: {ip!r} is not an IP address")
        return problems


# What AKS assumes without a max_pods: azure CNI gives each node this many pod addresses from the subnet,
# besides its own. Azure keeps 5 addresses of every subnet.
AZURE_CNI_MAX_PODS = 30
AZURE_SUBNET_RESERVED = 5
AKS_MAX_SERVICE_PREFIX = 12  # AKS refuses a service range larger than a /12
# AKS refuses these for the service, pod and VNet ranges.
AKS_RESERVED_RANGES = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "172.30.0.0/16", "172.31.0.0/16", "192.0.2.0/24")]


class NetworkSpec(Spec):
    """kubenet (pods on pod_cidr, NAT to the node) or azure CNI (pods on the VNet subnet)."""

    plugin: Literal["kubenet", "azure"] = "kubenet"
    # The engine that enforces NetworkPolicies: without one, the policy that admits only the router to
    # the model pods (components.service) is inert, and any pod in the cluster could score past the
    # router's auth. calico works with both plugins, azure's own only with azure CNI; AKS sets it at creation.
    policy: Literal["calico", "azure"] = "calico"
    pod_cidr: Cidr | None = None
    # AKS defaults for both plugins.
    service_cidr: Cidr = "10.0.0.0/16"
    dns_service_ip: str = "10.0.0.10"
    vnet: VnetSpec | None = None
    outbound_type: Literal["loadBalancer", "userDefinedRouting", "managedNATGateway", "userAssignedNATGateway"] = "loadBalancer"

    def _rules(self) -> list[str]:
        problems = []
        if self.plugin == "kubenet" and self.pod_cidr is None:
            self.pod_cidr = "10.244.0.0/16"
        if self.plugin == "azure" and self.pod_cidr is not None:
            problems.append("pod_cidr: azure CNI gives pods addresses from the subnet; pod_cidr is for kubenet only")
        if self.plugin == "azure" and self.vnet is None:
            problems.append("vnet: azure CNI needs a vnet (an existing subnet_id, or address_space + subnet_prefix)")
        if self.policy == "azure" and self.plugin != "azure":
            problems.append("policy: azure network policy needs azure CNI (plugin: azure); with kubenet use calico")
        # AKS's rules for each egress type: UDR and a NAT gateway of your own live on your subnet; the
        # managed NAT gateway only on the VNet AKS makes for itself.
        if self.outbound_type in ("userDefinedRouting", "userAssignedNATGateway") and (self.vnet is None or not self.vnet.subnet_id):
            problems.append(f"outbound_type: {self.outbound_type} needs an existing subnet (vnet.subnet_id) already routed "
                            "through your firewall or NAT gateway")
        if self.outbound_type == "managedNATGateway" and self.vnet is not None:
            problems.append("outbound_type: managedNATGateway works only without a vnet (AKS's own); on yours use "
                            "userAssignedNATGateway")
        try:
            service = _network(self.service_cidr, "service_cidr")
        except ValueError as exc:
            return problems + [str(exc)]
        if service.prefixlen < AKS_MAX_SERVICE_PREFIX:
            problems.append(f"service_cidr: {service} is larger than the /{AKS_MAX_SERVICE_PREFIX} AKS allows; choose a "
                            f"/{AKS_MAX_SERVICE_PREFIX} or smaller range (e.g. the default 10.0.0.0/16)")
        try:
            dns = ipaddress.ip_address(self.dns_service_ip)
        except ValueError:
            problems.append(f"dns_service_ip: {self.dns_service_ip!r} is not an IP address")
        else:
            if dns not in service:
                problems.append(f"dns_service_ip: {dns} is outside service_cidr {service}; pick an address inside it, e.g. {service[10]}")
            elif dns == service.network_address or dns == service.network_address + 1:
                problems.append(f"dns_service_ip: {dns} is reserved (the first addresses of service_cidr go to the kubernetes service); use e.g. {service[10]}")
            elif dns == service.broadcast_address:
                problems.append(f"dns_service_ip: {dns} is service_cidr's broadcast address, which Kubernetes never gives a "
                                f"Service; use e.g. {service[10]}")
        others = {"pod_cidr": self.pod_cidr}
        if self.vnet is not None:
            others |= {"vnet.address_space": self.vnet.address_space, "vnet.subnet_prefix": self.vnet.subnet_prefix}
        nets = {}
        for name, value in others.items():
            if value is None:
                continue
            try:
                nets[name] = net = _network(value, name)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if net.overlaps(service):
                problems.append(f"service_cidr: {service} overlaps {name} {net}; choose a range used nowhere on the network")
        for name, value in {"service_cidr": service, **nets}.items():
            for reserved in AKS_RESERVED_RANGES:
                if value.overlaps(reserved):
                    problems.append(f"{name}: {value} overlaps {reserved}, which AKS reserves; choose another range")
        pods = nets.pop("pod_cidr", None)
        for name, net in nets.items():  # kubenet routes pod traffic off the VNet: its range must not be on it
            if pods is not None and pods.overlaps(net):
                problems.append(f"pod_cidr: {pods} overlaps {name} {net}; choose a range used nowhere on the network")
        return problems


class LoadBalancerSpec(Spec):
    """AksCompute's load_balancer_type: PublicIp, or InternalLoadBalancer in a subnet."""

    type: Literal["PublicIp", "InternalLoadBalancer"] = "PublicIp"
    subnet: str | None = None

    def _rules(self) -> list[str]:
        if self.type == "InternalLoadBalancer" and not self.subnet:
            return ["subnet: an InternalLoadBalancer needs the subnet its address comes from"]
        if self.type == "PublicIp" and self.subnet:
            return ["subnet: only an InternalLoadBalancer takes a subnet"]
        if self.subnet and "/" in self.subnet:  # the azure-load-balancer-internal-subnet annotation takes a name
            return [f"subnet: {self.subnet!r} is a path; give the subnet's name, in the cluster's VNet "
                    f"(e.g. {self.subnet.rstrip('/').rsplit('/', 1)[-1]!r}), as Azure ML's load_balancer_subnet"]
        return []


class SslSpec(Spec):
    """TLS for the scoring front end: AksCompute's ssl settings, plus self-signed and cert-manager.

    One source: cname + certificate + key together (Azure ML's rule), or a leaf_domain_label
    (a certificate for <label>.<region>.cloudapp.azure.com), or self_signed, or cert_manager_issuer.
    """

    cname: str | None = None
    certificate: SecretStr | None = None  # PEM, a stack secret
    key: SecretStr | None = None  # PEM, a stack secret
    leaf_domain_label: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")] | None = None
    overwrite_existing_domain: bool = False
    self_signed: bool = False
    cert_manager_issuer: K8sObjectName | None = None

    def _rules(self) -> list[str]:
        problems = []
        # The scoring_uri outputs and the required FQDNs are built on it: https://<cname>/api/v1/...
        if self.cname is not None and (len(self.cname) > 253 or not _HOST_NAME.match(self.cname)):
            problems.append(f"cname: {self.cname!r} is not a DNS name like scoring.contoso.com (no scheme, port, path or "
                            "trailing dot): the name clients call, which the certificate is for")
        # A cname alone takes its certificate and key from a program (ModelRouterArgs.certificate); a stack
        # gives all three (ClusterSpec's rule).
        pem = [n for n in ("certificate", "key") if getattr(self, n) is not None]
        if len(pem) == 1:
            missing = "key" if pem == ["certificate"] else "certificate"
            problems.append(f"{missing}: certificate and key go together; missing {missing}")
        if pem and self.cname is None:
            problems.append("cname: a certificate and key are for the name clients call; give cname")
        sources = [self.cname is not None or bool(pem), self.leaf_domain_label is not None, self.self_signed,
                   self.cert_manager_issuer is not None]
        if sum(sources) > 1:
            problems.append("leaf_domain_label: choose one TLS source: cname + certificate + key, leaf_domain_label, self_signed, or cert_manager_issuer")
        elif sum(sources) == 0:
            problems.append("cname: no TLS source; give cname + certificate + key, leaf_domain_label, self_signed: true or cert_manager_issuer, or drop ssl")
        return problems


class AttachSpec(Spec):
    """An existing cluster: an AKS resource id, or a kubeconfig for any Kubernetes."""

    resource_id: str | None = None
    kubeconfig: str | None = None

    def _rules(self) -> list[str]:
        if bool(self.resource_id) == bool(self.kubeconfig):
            return ["resource_id: attach by exactly one of resource_id or kubeconfig"]
        if self.resource_id and not re.match(
            r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+$",
            self.resource_id, re.I,
        ):
            return ["resource_id: must be /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>"]
        return []


ClusterPurpose = Literal["dev_test", "fast_prod", "dense_prod"]
_PURPOSE_ALIASES = {"devtest": "dev_test", "fastprod": "fast_prod", "denseprod": "dense_prod"}


def cluster_purpose(value: str) -> ClusterPurpose:
    """A cluster purpose as given here or in Azure ML's spelling (DevTest, FastProd, DenseProd)."""
    purpose = _PURPOSE_ALIASES.get(value.replace("_", "").lower())
    if purpose is None:
        raise ValueError(f"cluster_purpose: {value!r} is none of dev_test, fast_prod, dense_prod")
    return purpose  # type: ignore[return-value]


# The privatelink zone of each private endpoint's group: the registry, the storage account's blob and table.
PRIVATE_LINK_ZONES = {
    "registry": "privatelink.azurecr.io",
    "blob": "privatelink.blob.core.windows.net",
    "table": "privatelink.table.core.windows.net",
}


class DnsSpec(Spec):
    """What to do about custom DNS on the VNet: the FQDNs are always an output."""

    private_zone_links: bool = False
    # Zones that exist already, by group (a hub's, linked to this VNet, as Azure's hub-and-spoke DNS has
    # them): their endpoints' records go there, and no zone of that name is made or linked here. Azure links
    # a VNet to one zone of a name only, so a second one, made here, would be refused.
    private_zones: dict[Literal["registry", "blob", "table"], str] = {}
    connectivity_check: bool = False

    def _rules(self) -> list[str]:
        problems = []
        if self.private_zones and not self.private_zone_links:
            problems.append("private_zones: only used with private_zone_links: true")
        for group, zone_id in self.private_zones.items():
            zone = PRIVATE_LINK_ZONES[group]
            if not re.fullmatch(rf"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
                                rf"privateDnsZones/{re.escape(zone)}", zone_id, re.I):
                problems.append(f"private_zones.{group}: must be the resource id of a {zone} zone "
                                f"(/subscriptions/.../resourceGroups/.../providers/Microsoft.Network/privateDnsZones/{zone})")
        return problems


# A minor AKS supports without the LTS plan (Premium tier) as of late 2026; 1.30 left standard support
# in 2025. Stacks name theirs; this is what a stack that does not gets.
KUBERNETES_VERSION = "1.35"


class ClusterSpec(Spec):
    name: AzureName
    attach: AttachSpec | None = None
    # Azure ML's AksCompute cluster_purpose: FastProd by default.
    cluster_purpose: ClusterPurpose = "fast_prod"
    kubernetes_version: Annotated[str, StringConstraints(pattern=r"^1\.\d+(\.\d+)?$")] = KUBERNETES_VERSION
    node_pools: list[NodePoolSpec] = []
    network: NetworkSpec = NetworkSpec()
    load_balancer: LoadBalancerSpec = LoadBalancerSpec()
    ssl: SslSpec | None = None
    dns: DnsSpec = DnsSpec()
    monitoring: bool = True
    # Microsoft Defender for containers: on by default in fast_prod (resolved below).
    defender: bool | None = None

    @field_validator("cluster_purpose", mode="before")
    @classmethod
    def _azureml_purpose(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _PURPOSE_ALIASES.get(value.replace("_", "").lower(), value)  # what is not one: the Literal names it
        return value

    def _rules(self) -> list[str]:
        problems = []
        if self.defender is None:
            self.defender = self.cluster_purpose == "fast_prod"
        if self.ssl is not None and self.ssl.cname and (self.ssl.certificate is None or self.ssl.key is None):
            problems.append("ssl.certificate: a cname needs its certificate and key (PEM, as stack secrets)")
        if self.dns.private_zone_links and (self.attach is not None or self.network.vnet is None):
            problems.append("dns.private_zone_links: private endpoints and zone links need a cluster created here on a vnet")
        if self.attach is not None:
            if self.node_pools:
                problems.append("node_pools: an attached cluster's pools are not managed here; remove node_pools or drop attach")
            return problems
        if not self.node_pools:
            count = 1 if self.cluster_purpose == "dev_test" else FAST_PROD_MIN_NODES
            self.node_pools = [NodePoolSpec(name="system", mode="System", count=count)]
        names = [p.name for p in self.node_pools]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"node_pools: pool name {dup!r} is used twice")
        if not any(p.mode == "System" for p in self.node_pools):
            problems.append("node_pools: one pool must have mode: System to run the cluster's own pods")
        critical = [i for i, p in enumerate(self.node_pools) if p.mode == "System" and p.taints == [CRITICAL_ADDONS_ONLY]]
        if critical and not any(p.mode == "User" and p.accelerator == "none" and not p.taints for p in self.node_pools):
            problems.append(f"node_pools[{critical[0]}].taints: {CRITICAL_ADDONS_ONLY} keeps the router and the scorers off "
                            "the System pool, and no User pool without taints or an accelerator is left to run them; add "
                            "one, or drop the taint")
        if self.cluster_purpose in ("fast_prod", "dense_prod"):
            nodes = sum(p.node_count for p in self.node_pools if p.accelerator == "none")
            sized = [(p.node_count, vcpus(p.vm_size)) for p in self.node_pools if p.accelerator == "none"]
            cores = sum(n * (c or 0) for n, c in sized)
            if nodes < FAST_PROD_MIN_NODES or cores < FAST_PROD_MIN_VCPUS:
                problems.append(
                    f"node_pools: cluster_purpose {self.cluster_purpose} needs at least {FAST_PROD_MIN_NODES} nodes and "
                    f"{FAST_PROD_MIN_VCPUS} vCPUs in CPU pools (has {nodes} nodes, {cores} vCPUs); add nodes or use cluster_purpose: dev_test"
                )
        if self.network.plugin == "kubenet":
            largest = sum(p.most_nodes for p in self.node_pools)
            if largest > KUBENET_MAX_NODES:
                problems.append(f"node_pools: kubenet clusters hold at most {KUBENET_MAX_NODES} nodes, and these pools reach "
                                f"{largest} at their largest; lower count / max_count, or use azure CNI (network.plugin: azure)")
        problems += self._address_room()
        if self.load_balancer.type == "InternalLoadBalancer" and self.network.vnet is None:
            problems.append("load_balancer: an InternalLoadBalancer needs the cluster on a vnet")
        elif (self.load_balancer.subnet and self.network.vnet is not None and not self.network.vnet.subnet_id
              and self.load_balancer.subnet.lower() != CLUSTER_SUBNET):
            problems.append(f"load_balancer.subnet: the vnet created here has one subnet, {CLUSTER_SUBNET!r}, not "
                            f"{self.load_balancer.subnet!r}; give {CLUSTER_SUBNET!r}, or put the cluster on an existing "
                            f"subnet (network.vnet.subnet_id) whose VNet holds {self.load_balancer.subnet!r}")
        if self.load_balancer.type == "InternalLoadBalancer" and self.ssl is not None and self.ssl.leaf_domain_label:
            problems.append("ssl.leaf_domain_label: a <label>.<region>.cloudapp.azure.com name needs a public address; "
                            "behind an InternalLoadBalancer give cname + certificate + key (or cert_manager_issuer)")
        return problems

    def _address_room(self) -> list[str]:
        """Addresses for the largest the pools get, each with one node more for an upgrade's surge: a node
        that finds none stays NotReady (kubenet: no pod range) or its pods get no address (azure CNI)."""
        nodes = sum((p.max_count if p.max_count is not None else p.count or 0) + 1 for p in self.node_pools)
        network, problems = self.network, []
        try:
            subnet = _network(network.vnet.subnet_prefix, "") if network.vnet and network.vnet.subnet_prefix else None
            pods = _network(network.pod_cidr, "") if network.plugin == "kubenet" and network.pod_cidr else None
        except ValueError:  # the network's own rules name it
            return []
        if subnet is not None:
            per_node = 1 + (AZURE_CNI_MAX_PODS if network.plugin == "azure" else 0)
            usable = subnet.num_addresses - AZURE_SUBNET_RESERVED
            if usable < nodes * per_node:
                each = f", each with its {AZURE_CNI_MAX_PODS} pods (azure CNI)" if network.plugin == "azure" else ""
                problems.append(f"network.vnet.subnet_prefix: {subnet} has {usable} usable addresses; {nodes} nodes (every "
                                f"pool at its largest, plus one each for upgrades){each} need {nodes * per_node}")
        if pods is not None:
            ranges = 2 ** (24 - pods.prefixlen) if pods.prefixlen <= 24 else 0
            if ranges < nodes:
                problems.append(f"network.pod_cidr: {pods} holds {ranges} node pod ranges (a /24 each, kubenet); {nodes} "
                                f"nodes (every pool at its largest, plus one each for upgrades) need /{24 - (nodes - 1).bit_length()} or larger")
        return problems

    def has_accelerator(self, kind: Accelerator) -> bool:
        """Attached clusters are taken at their word: their pools are not described here."""
        return self.attach is not None or any(p.accelerator == kind for p in self.node_pools)


# ---------------------------------------------------------------- environment, models, inference


class CondaSpec(Spec):
    name: str = "project_environment"
    channels: list[str] = []
    dependencies: list[str | dict[str, list[str]]] = []


class EnvironmentSpec(Spec):
    """What a service's image holds beyond the scorer: Azure ML's Environment, narrowed."""

    name: str | None = None
    version: str | None = None
    base_image: str | None = None  # None: the project's scorer image
    base_dockerfile: str | None = None
    docker_steps: str | None = None  # extra Dockerfile steps (Azure ML's extraDockerFileSteps)
    conda_dependencies: CondaSpec | None = None
    conda_file: str | None = None
    pip: list[str] = []
    # A secret (secure:) value is kept out of the image: a Kubernetes Secret gives it to the scorer.
    environment_variables: dict[str, str | SecretStr] = {}
    gpu: bool = False
    cuda_version: str | None = None

    def _rules(self) -> list[str]:
        problems: list[str] = []
        if self.conda_dependencies is not None and self.conda_file is not None:
            problems.append(Finding("conda_file: give conda_dependencies or conda_file, not both", "conda_dependencies", "conda_file"))
        if self.base_image is not None and self.base_dockerfile is not None:
            problems.append(Finding("base_dockerfile: give base_image or base_dockerfile, not both", "base_image", "base_dockerfile"))
        # Else silently not what was asked for: the one GPU base (components.image) carries CUDA 11.8.
        if self.cuda_version is not None and not self.gpu:
            problems.append(Finding("cuda_version: it picks the GPU base image; set gpu too", "gpu"))
        elif self.cuda_version not in (None, "11.8"):
            problems.append(Finding(f"cuda_version: {self.cuda_version!r}: Azure ML's GPU base image here carries CUDA 11.8; "
                                    "for another version name a base_image that has it", "base_image"))
        for name, value in self.environment_variables.items():
            if not re.match(ENV_NAME, name):
                problems.append(f"environment_variables: {name!r} is not a variable name (letters, digits, _)")
            if isinstance(value, str) and ("\n" in value or "\r" in value):  # each becomes one Dockerfile ENV line
                problems.append(f"environment_variables: the value of {name} holds a line break; a Dockerfile ENV is one line")
        return problems

    @property
    def image_variables(self) -> dict[str, str]:
        """The variables the image carries: those that are not secrets."""
        return {k: v for k, v in self.environment_variables.items() if isinstance(v, str)}

    @property
    def secret_variables(self) -> dict[str, SecretStr]:
        return {k: v for k, v in self.environment_variables.items() if isinstance(v, SecretStr)}

    @property
    def is_custom(self) -> bool:
        """True when the service needs its own image rather than the stock scorer image."""
        return any([self.base_image, self.base_dockerfile, self.docker_steps, self.conda_dependencies,
                    self.conda_file, self.pip])


class InferenceConfigSpec(Spec):
    entry_script: str
    source_directory: str | None = None
    environment: EnvironmentSpec = EnvironmentSpec()

    @property
    def app_entry_script(self) -> str:
        """The entry script's path in the app (the image's APP_ROOT)."""
        return self.entry_script if self.source_directory else PurePosixPath(self.entry_script).name

    @property
    def app_files(self) -> list[str]:
        """What of the app's folder (components.sources.app_context) the app holds: all of the source
        directory, else the entry script alone, as Azure ML ships it."""
        return [] if self.source_directory else [self.app_entry_script]

    @field_validator("entry_script")
    @classmethod
    def _python(cls, value: str) -> str:
        if not value.endswith(".py"):
            raise ValueError(f"{value!r} is not a Python file; the entry script defines init() and run()")
        return value


class ModelSpec(Spec):
    """A registered model: a local folder (uploaded to storage) or a blob URL."""

    name: ModelName
    version: int = Field(1, ge=1)
    path: str | None = None
    # A secret (secure:) when it carries a SAS token: it reaches the replicas in a Kubernetes Secret only.
    url: str | SecretStr | None = None
    description: str | None = None

    def _rules(self) -> list[str]:
        if bool(self.path) == bool(self.url):
            return ["path: a model comes from exactly one source: a local path or a blob url"]
        url = self.url_text
        if url is not None and url != SECURE and not _MODEL_URL.match(url):
            return ["url: a model's url is a blob folder, https://<account>.blob.core.windows.net/<container>/<path> "
                    "(a SAS token in its query makes it a secret: give it as secure:)"]
        return []

    @property
    def url_text(self) -> str | None:
        return self.url.get_secret_value() if isinstance(self.url, SecretStr) else self.url

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


# ---------------------------------------------------------------- deployment settings

# A Kubernetes quantity's number and suffix, and each memory suffix in GiB (what memory_gb counts).
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(m|k|Ki|M|Mi|G|Gi|T|Ti)\s*$")
_GIB = {"k": 1e3 / 2**30, "Ki": 2**-20, "M": 1e6 / 2**30, "Mi": 2**-10, "G": 1e9 / 2**30, "Gi": 1, "T": 1e12 / 2**30, "Ti": 2**10}


def _not_a_quantity(value: Any, info: ValidationInfo) -> Any:
    """A Kubernetes quantity ("1536Mi", "500m") where the setting is Azure ML's plain number: refused with the
    number it means, where pydantic says only that the string is not a number."""
    found = _QUANTITY.match(value) if isinstance(value, str) else None
    field = info.field_name or ""
    if found is None:
        return value
    number, suffix = float(found.group(1)), found.group(2)
    if field.startswith("cpu") and suffix == "m":
        unit, meant = "a number of cores", number / 1000
    elif field.startswith("memory") and suffix in _GIB:
        unit, meant = "a number of GB (GiB, as Azure ML's)", number * _GIB[suffix]
    else:
        return value
    raise ValueError(f"{value!r} is a Kubernetes quantity; {field} is {unit}: write {float(f'{meant:.4g}'):g}")



class DeploymentSettings(Spec):
    """Azure ML's AksWebservice.deploy_configuration, same names, same defaults."""

    cpu_cores: float = Field(0.1, ge=0.001)  # rendered in millicores: less would request 0
    memory_gb: float = Field(0.5, ge=0.001)  # rendered in MiB: less would request 0
    cpu_cores_limit: float | None = Field(None, ge=0.001)  # None: equal to the request
    memory_gb_limit: float | None = Field(None, ge=0.001)
    gpu_cores: int = Field(0, ge=0)
    fpga_cores: int = Field(0, ge=0)
    autoscale_enabled: bool | None = None  # None: on unless num_replicas is set
    autoscale_min_replicas: int = Field(1, ge=1)
    autoscale_max_replicas: int = Field(10, ge=1)
    autoscale_refresh_seconds: int = Field(1, ge=1)
    autoscale_target_utilization: int = 70
    num_replicas: int | None = Field(None, ge=1)
    scoring_timeout_ms: int = Field(60_000, ge=1)
    replica_max_concurrent_requests: int = Field(1, ge=1)
    max_request_wait_time: int = Field(500, gt=0)  # ms
    period_seconds: int = Field(10, ge=1)
    initial_delay_seconds: int = Field(310, gt=0)
    timeout_seconds: int = Field(2, ge=1)
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(3, ge=1)
    namespace: K8sName | None = None
    collect_model_data: bool = False
    enable_app_insights: bool = False

    _quantities = field_validator("cpu_cores", "memory_gb", "cpu_cores_limit", "memory_gb_limit", mode="before")(_not_a_quantity)

    def _rules(self) -> list[str]:
        problems = []
        if not 1 <= self.autoscale_target_utilization <= 100:
            problems.append(f"autoscale_target_utilization: {self.autoscale_target_utilization} is outside 1..100 (a percentage of busy replica slots)")
        if self.autoscale_enabled and self.num_replicas is not None:
            problems.append(Finding("num_replicas: a fixed num_replicas and autoscale_enabled exclude each other; drop one",
                                    "num_replicas", "autoscale_enabled"))
        if self.autoscale_enabled is None:
            self.autoscale_enabled = self.num_replicas is None
        if self.autoscale_min_replicas > self.autoscale_max_replicas:
            problems.append(Finding(f"autoscale_min_replicas: {self.autoscale_min_replicas} exceeds autoscale_max_replicas "
                                    f"{self.autoscale_max_replicas}", "autoscale_max_replicas"))
        if self.cpu_cores_limit is not None and self.cpu_cores_limit < self.cpu_cores:
            problems.append(Finding(f"cpu_cores_limit: {self.cpu_cores_limit} is below the request cpu_cores {self.cpu_cores}; "
                                    "raise the limit or lower the request", "cpu_cores"))
        if self.memory_gb_limit is not None and self.memory_gb_limit < self.memory_gb:
            problems.append(Finding(f"memory_gb_limit: {self.memory_gb_limit} is below the request memory_gb {self.memory_gb}; "
                                    "raise the limit or lower the request", "memory_gb"))
        if self.gpu_cores and self.fpga_cores:
            problems.append("fpga_cores: a replica uses GPU or FPGA cores, not both")
        return problems

    @property
    def replicas(self) -> int:
        """Replicas a deployment starts with."""
        return self.autoscale_min_replicas if self.autoscale_enabled else (self.num_replicas or 1)

    @property
    def cpu_limit(self) -> float:
        return self.cpu_cores_limit if self.cpu_cores_limit is not None else self.cpu_cores

    @property
    def memory_limit_gb(self) -> float:
        return self.memory_gb_limit if self.memory_gb_limit is not None else self.memory_gb


class AzureMlFiles(Spec):
    """Paths to Azure ML's own `az ml model deploy -ic ... -dc ...` files."""

    inference_config: str | None = None
    deployment_config: str | None = None


def _azureml_merge(data: Any, info: ValidationInfo, version: bool) -> tuple[Any, dict[str, Origin]]:
    """Fold `azureml: {inference_config, deployment_config}` files into the spec's fields, saying which
    field each file gave.

    Fields written in the stack win over the files, so a stack can override one setting of
    an existing Azure ML deployment.
    """
    if not isinstance(data, dict) or "azureml" not in data:
        return data, {}
    try:
        files = AzureMlFiles.model_validate(data["azureml"])
    except ValidationError:
        return data, {}  # the `azureml` field's own validation names what is wrong, under azureml.
    base = Path((info.context or {}).get("base_dir", "."))
    merged: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    if files.deployment_config:
        settings, origins = load_deployment_config(base / files.deployment_config, field="azureml.deployment_config",
                                                   version=version)
        merged |= settings
    if files.inference_config:
        merged["inference_config"], given = load_inference_config(base / files.inference_config,
                                                                  field="azureml.inference_config")
        origins |= given
    ours = {k: v for k, v in data.items() if k != "azureml"}
    return merged | ours, {k: v for k, v in origins.items() if k.split(".")[0] not in ours}


class Deployable(DeploymentSettings):
    """What a service and an endpoint's version have in common: one Deployment's settings (ModelService's spec)."""

    models: list[str] = []
    inference_config: InferenceConfigSpec | None = None
    description: str | None = None
    tags: dict[str, str] = {}
    # Read into the fields above before validation (_read_azureml_files); here only to name its mistakes.
    azureml: AzureMlFiles | None = Field(None, exclude=True)

    _from_files: dict[str, Origin] = PrivateAttr(default_factory=dict)  # the fields Azure ML files gave
    # Auth settings a file gave a deployment that has none of its own (an endpoint's version): its endpoint's.
    _endpoint_auth: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _read_azureml_files(cls, data: Any, handler: ModelWrapValidatorHandler[Deployable],
                            info: ValidationInfo) -> Deployable:
        """A problem with a value a file gave is told in that file's key (azureml.in_files). A
        deploymentconfig.json's auth settings (authEnabled, keys) are kept aside for a version, whose
        endpoint checks them against its own (EndpointSpec), rather than refused as unknown fields."""
        data, origins = _azureml_merge(data, info, version="version_name" in cls.model_fields)
        endpoint_auth = {}
        if isinstance(data, Deployable):  # revalidated: it was read from its files before
            origins, endpoint_auth = data._from_files, data._endpoint_auth
        elif isinstance(data, dict) and not issubclass(cls, AuthSettings):
            endpoint_auth = {k: data.pop(k) for k in AuthSettings.model_fields if k in data and k in origins}
        try:
            spec = handler(data)
        except ValidationError as exc:
            raise in_files(exc, origins) from None
        spec._from_files, spec._endpoint_auth = origins, endpoint_auth
        return spec

    def named(self, field: str) -> str:
        """How a problem names `field`: by the key of the Azure ML file that holds it, if one does."""
        return named(self._from_files, field)

    def told(self, path: str, line: Finding) -> str:
        """A stack-wide rule's line about this deployment (at `path`), in the keys of the Azure ML file that
        holds its field, its mentions too, if one does."""
        return told(self._from_files, path, line)

    def _rules(self) -> list[str]:
        problems = []
        if self.inference_config is None:
            problems.append("inference_config: a deployment needs an entry script (inference_config or azureml.inference_config)")
        if len(self.models) > MAX_MODELS_PER_SERVICE:
            problems.append(f"models: {len(self.models)} models; one service holds at most {MAX_MODELS_PER_SERVICE} (split it)")
        for dup in sorted({m for m in self.models if self.models.count(m) > 1}):
            problems.append(f"models: {dup} is listed twice")
        if self.collect_model_data and not self.models:
            problems.append("collect_model_data: collected records are filed under the models a deployment serves "
                            "(modeldata/<service>/<model>/<version>/...); list them in models")
        return problems


class AuthSettings(Spec):
    """Key auth (primary and secondary) or token auth, per service or endpoint."""

    auth_enabled: bool = True
    token_auth_enabled: bool = False
    primary_key: SecretStr | None = None
    secondary_key: SecretStr | None = None
    # Bump one to regenerate that key (Azure ML's regen_key), while clients use the other.
    primary_key_rotation: int = Field(0, ge=0)
    secondary_key_rotation: int = Field(0, ge=0)
    # Refused (see _rules): one counter regenerated both keys at once, and every client was refused.
    key_rotation: int | None = Field(None, exclude=True)

    @field_validator("primary_key", "secondary_key")
    @classmethod
    def _sendable(cls, value: SecretStr | None) -> SecretStr | None:
        """A key no header can carry (a line break, a space at an end) could never be sent: no caller gets in."""
        if value is not None and not _KEY.fullmatch(value.get_secret_value()):
            raise ValueError("a key is sent in an Authorization header, which carries only visible ASCII "
                             "(no spaces, line breaks or other characters); the key is not shown")
        return value

    def _rules(self) -> list[str]:
        problems = []
        if self.key_rotation is not None:
            problems.append(Finding(
                "key_rotation: keys are rotated one at a time, as Azure ML's regen_key: primary_key_rotation and "
                f"secondary_key_rotation (set both to {self.key_rotation} to keep the keys key_rotation made)",
                "primary_key_rotation", "secondary_key_rotation"))
        if self.auth_enabled and self.token_auth_enabled:
            problems.append(Finding("token_auth_enabled: key auth (auth_enabled) and token auth both on; Azure ML allows "
                                    "one: set auth_enabled: false for tokens", "auth_enabled"))
        return problems


class ServiceSpec(Deployable, AuthSettings):
    """A model web service: one version at /api/v1/service/<name>/score."""

    name: ServiceName


class WebserviceSettings(DeploymentSettings, AuthSettings):
    """Everything a deploymentconfig.json may set, checked on its own (an AKSENDPOINT one names a version)."""

    description: str | None = None
    tags: dict[str, str] = {}
    version_name: ServiceName | None = None
    traffic_percentile: float | None = Field(None, ge=0, le=100)


class EndpointVersionSpec(Deployable):
    """One version of an endpoint (AksEndpoint.deploy_configuration's version settings)."""

    version_name: ServiceName
    traffic_percentile: float = Field(0, ge=0, le=100)
    is_default: bool = False
    is_control_version_type: bool = False


class EndpointSpec(AuthSettings):
    """Up to 6 versions behind /api/v1/endpoint/<name>/score, split by traffic_percentile."""

    name: ServiceName
    description: str | None = None
    versions: list[EndpointVersionSpec] = Field(min_length=1)

    def _rules(self) -> list[str]:
        problems = []
        n = len(self.versions)
        if n > MAX_ENDPOINT_VERSIONS:
            problems.append(f"versions: {n} versions; an endpoint holds at most {MAX_ENDPOINT_VERSIONS}")
        total = sum(v.traffic_percentile for v in self.versions)
        if round(total, 6) > 100:  # 26.4 + 70.4 + 3.2 sums to 100.00000000000001 in floats
            problems.append(f"versions: traffic_percentile sums to {total:g} (over 100); lower the treatments")
        defaults = [v.version_name for v in self.versions if v.is_default]
        if len(defaults) > 1:
            problems.append(f"versions: {len(defaults)} default versions ({', '.join(defaults)}); mark exactly one is_default")
        if not defaults and n > 1:
            problems.append("versions: no version is_default; the default takes the traffic left over by the percentiles")
        controls = [v.version_name for v in self.versions if v.is_control_version_type]
        if len(controls) > 1:
            problems.append(f"versions: {len(controls)} control versions ({', '.join(controls)}); one control, the rest treatments")
        names = [v.version_name for v in self.versions]
        for dup in sorted({x for x in names if names.count(x) > 1}):
            problems.append(f"versions: version_name {dup!r} is used twice")
        for i, version in enumerate(names):
            if len(deployment_name(self.name, version)) > K8S_NAME_MAX:
                problems.append(f"versions[{i}].version_name: {self.name}-{version} (the version's Deployment) is longer than "
                                f"{K8S_NAME_MAX} characters; shorten the endpoint or version name")
        if n == 1 and not defaults:
            self.versions[0].is_default = True
        return problems + self._versions_auth()

    def _versions_auth(self) -> list[str]:
        """A version's deploymentconfig.json may say the endpoint's auth (Azure ML's files carry authEnabled), not
        another: one route serves all the versions, with the endpoint's auth and keys."""
        problems = []
        for j, version in enumerate(self.versions):
            for name, given in version._endpoint_auth.items():
                ours = getattr(self, name)
                where = f"versions[{j}].{version.named(name)}"
                if isinstance(ours, SecretStr | None) and (ours is None or ours.get_secret_value() not in (given, SECURE)):
                    problems.append(f"{where}: not the endpoint's {name.replace('_', ' ')}: an endpoint's versions share "
                                    f"its keys; give it as the endpoint's {name} (a secret)")
                elif isinstance(ours, bool) and given != ours:
                    problems.append(f"{where}: {str(given).lower()}, where the endpoint's {name} is {str(ours).lower()}: "
                                    f"an endpoint's versions share its auth, as under Azure ML's AksEndpoint; set {name} "
                                    "on the endpoint")
        return problems

    @property
    def default_version(self) -> EndpointVersionSpec:
        return next(v for v in self.versions if v.is_default)


# ---------------------------------------------------------------- router and local mode


class RouterSpec(Spec):
    """The front end's own deployment: it scales itself on CPU and routing latency."""

    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(4, ge=1)
    cpu_cores: float = Field(0.5, ge=0.001)
    memory_gb: float = Field(0.5, ge=0.001)  # rendered in MiB: less would request 0
    # Public LoadBalancer with an Azure DNS label (<label>.<region>.cloudapp.azure.com).
    dns_label: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")] | None = None
    namespace: K8sName = "azureml"  # created, or adopted where it exists, and kept by destroy (components.router)
    token_algorithm: Literal["ES256", "RS256"] = "ES256"
    # Bumped by one, the token-signing key is rotated: tokens are signed with the key published since the last
    # bump, and those of the key it replaces are taken until the next bump (wait a token's lifetime, an hour).
    token_key_rotation: int = Field(0, ge=0)
    # Model replicas are removed only after utilization stayed below target this long
    # (Azure ML: about a minute); raising it trades cost for fewer scale-downs.
    scale_down_delay_seconds: float = Field(60, ge=0)

    _quantities = field_validator("cpu_cores", "memory_gb", mode="before")(_not_a_quantity)

    def _rules(self) -> list[str]:
        problems = []
        if self.min_replicas > self.max_replicas:
            problems.append(f"min_replicas: {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.namespace in SYSTEM_NAMESPACES:
            problems.append(f"namespace: {self.namespace!r} is Kubernetes' own; the stack adopts its namespace (destroy "
                            "keeps it) and runs its router and models there: name one of the stack's own (e.g. azureml)")
        return problems


class LocalSpec(Spec):
    """Running the stack on one machine: router and scorers as processes on loopback."""

    router_port: int = Field(8890, ge=1024, le=65535)
    # None: .local/<stack name>, so that two stacks run on one machine keep their keys and logs apart.
    state_dir: str | None = None
    # Collected model data goes here (same modeldata/... layout as blob storage).
    data_dir: str = ".local/modeldata"


# ---------------------------------------------------------------- the stack


def _unpacked(replicas: list[int], pools: list[tuple[NodePoolSpec, int]]) -> list[int]:
    """The replicas' GPU counts that no node has room for, placed largest first on the first node with
    room (as the scheduler may place them: a warning, as a better placement may exist)."""
    free = [n for p, n in pools for _ in range(p.most_nodes)]
    left = []
    for need in sorted(replicas, reverse=True):
        node = next((i for i, room in enumerate(free) if room >= need), None)
        if node is None:
            left.append(need)
        else:
            free[node] -= need
    return left


class StackSpec(Spec):
    """Everything one stack file declares (its `aks-model-serving:*` config keys)."""

    workspace: WorkspaceSpec | None = None
    cluster: ClusterSpec | None = None
    router: RouterSpec = RouterSpec()
    local: LocalSpec = LocalSpec()
    models: list[ModelSpec] = []
    services: list[ServiceSpec] = []
    endpoints: list[EndpointSpec] = []

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return self._warnings

    @property
    def is_local(self) -> bool:
        """A stack without a cluster runs only on this machine (`python -m components local`)."""
        return self.cluster is None

    def _rules(self) -> list[str]:
        problems: list[str] = []
        if self.cluster is not None and self.cluster.attach is None and self.workspace is None:
            problems.append("workspace: a new cluster needs a workspace (registry, storage, monitoring)")
        if (self.cluster is not None and self.cluster.dns.private_zone_links and self.workspace is not None
                and self.workspace.registry_sku != "Premium"):
            problems.append("workspace.registry_sku: dns.private_zone_links gives the registry a private endpoint, which needs registry_sku: Premium")
        refs = [m.ref for m in self.models]
        for dup in sorted({r for r in refs if refs.count(r) > 1}):
            problems.append(f"models: {dup} is declared twice")
        latest = {m.name: max(x.version for x in self.models if x.name == m.name) for m in self.models}
        names = [s.name for s in self.services] + [e.name for e in self.endpoints]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"services: the name {dup!r} is used twice among services and endpoints")
        problems += self._kubernetes_names()
        if self.router.dns_label and self.cluster is not None and self.cluster.load_balancer.type == "InternalLoadBalancer":
            problems.append("router.dns_label: an Azure DNS label names a public address; an InternalLoadBalancer has none "
                            "(drop dns_label; the router is reached at its private address, or at ssl.cname)")
        leaf = self.cluster.ssl.leaf_domain_label if self.cluster is not None and self.cluster.ssl is not None else None
        if self.router.dns_label and leaf and self.router.dns_label != leaf:
            problems.append(f"router.dns_label: the router's public address has one DNS label, and ssl.leaf_domain_label "
                            f"already names it {leaf!r}; drop dns_label or make them the same")
        if self.cluster is not None and self.workspace is None:
            problems.append("workspace: images are pushed to the workspace's registry; an attached cluster needs one too")
        elif self.cluster is not None and self.cluster.attach is not None and self.cluster.attach.kubeconfig and self.workspace:
            # The registry is the stack's own, new on its first up, admin user off; only an AKS cluster attached by
            # resource id gets AcrPull here (its kubelet identity), and no pod carries a pull secret.
            self._warnings.append(
                f"cluster.attach.kubeconfig: the router's and the models' images are pulled from the workspace's registry "
                f"{registry_name(self.workspace).lower()}.azurecr.io, which this stack gives a kubeconfig cluster no right "
                "to pull from; until its nodes are granted AcrPull on it (az aks update --attach-acr; or attach an AKS "
                "cluster by resource_id, which grants it), its pods stay in ImagePullBackOff")
        for path, dep in self.deployments():
            if self.cluster is not None and dep.namespace is not None and dep.namespace != self.router.namespace:
                problems.append(f"{path}.{dep.named('namespace')}: {dep.namespace!r} differs from router.namespace {self.router.namespace!r}; "
                                "the router watches and scales only its own namespace")
            listed: dict[str, int] = {}  # each model (name:version) at the first index naming it
            for i, ref in enumerate(dep.models):
                name, _, version = ref.partition(":")
                model = f"{name}:{version}" if version else f"{name}:{latest.get(name)}"
                if model not in refs:
                    problems.append(f"{path}.models[{i}]: {ref!r} is not declared under models")
                elif (first := listed.setdefault(model, i)) != i and dep.models[first] != ref:  # same text: Deployable's
                    problems.append(f"{path}.models[{i}]: {ref!r} is models[{first}] ({dep.models[first]!r}) again, both "
                                    f"{model} ({name} alone is its latest version); list each model once")
            for kind, field in (("gpu", "gpu_cores"), ("fpga", "fpga_cores")):
                if getattr(dep, field) and self.cluster is not None and not self.cluster.has_accelerator(kind):
                    problems.append(dep.told(path, Finding(
                        f"{field}: the cluster has no {kind.upper()} pool; add a node pool with accelerator: {kind} or set {field}: 0", field)))
            for kind, field in (("gpu", "gpu_cores"), ("fpga", "fpga_cores")):
                if getattr(dep, field) and self.cluster is not None and self.cluster.attach is not None:
                    how = SCHEDULING[kind]
                    self._warnings.append(dep.told(path, Finding(
                        f"{field}: on an attached cluster these replicas run only on nodes labelled "
                        f"{how.label_key}={how.label_value} whose device plugin advertises {how.resource}, which this "
                        f"stack sets up only on pools it creates; label the cluster's {kind.upper()} nodes so "
                        f"(az aks nodepool update --labels {how.label_key}={how.label_value}), else they stay Pending",
                        field)))
            if dep.fpga_cores and self.cluster is not None and self.cluster.attach is None:
                self._warnings.append(f"{path}.fpga_cores: nodes advertise microsoft.com/fpga only through the FPGA vendor's "
                                      "device plugin, which this stack does not install (it does NVIDIA's for GPUs); "
                                      "until one runs on the FPGA pool, these replicas stay Pending")
            if self.cluster is not None and self.cluster.cluster_purpose == "dev_test" and dep.autoscale_enabled:
                # The fewest replicas asked for become the fixed count (a minimum of 3 is not dropped to 1).
                self._warnings.append(dep.told(path, Finding(
                    f"a dev_test cluster keeps replicas fixed; autoscaling is off and it runs "
                    f"{dep.autoscale_min_replicas} (autoscale_min_replicas; num_replicas sets the count)",
                    "autoscale_min_replicas", "num_replicas")))
                dep.autoscale_enabled = False
                dep.num_replicas = dep.autoscale_min_replicas
        return problems + self._node_room() + self._gpu_capacity()

    def _node_room(self) -> list[str]:
        """A replica asking for more than any node it can land on has stays Pending for ever (`cpu_cores: 8` on
        4-vCPU nodes, `memory_gb: 1024` meant as MB). Its nodes: its accelerator's pools, for a CPU replica the
        CPU pools no taint keeps it off. vCPUs are in Azure's size names, and AKS keeps some of each node's for
        itself, so a replica needs fewer than the node has; memory is not in the names, so only warned about
        past 8 GB per vCPU (the E-series'; M- and G-series aside). An attached cluster is not counted."""
        if self.cluster is None or self.cluster.attach is not None:
            return []
        problems = []
        for path, dep in self.deployments():
            kind = "gpu" if dep.gpu_cores else "fpga" if dep.fpga_cores else "none"
            pools = [(vcpus(p.vm_size), p) for p in self.cluster.node_pools if p.accelerator == kind
                     and (kind != "none" or not any(t.endswith((":NoSchedule", ":NoExecute")) for t in p.taints))]
            if not pools or any(n is None for n, _ in pools):
                continue
            cores, pool = max(pools, key=lambda np: np[0] or 0)
            assert cores is not None
            if dep.cpu_cores >= cores:
                problems.append(f"{path}.{dep.named('cpu_cores')}: {dep.cpu_cores:g} per replica, but the largest node it can run on "
                                f"({pool.vm_size}, pool {pool.name}) has {cores} vCPUs, some of them kept by AKS; its "
                                "replicas could never be scheduled")
            elif dep.memory_gb > 8 * cores and not re.match(r"^Standard_[MG]", pool.vm_size, re.I):
                self._warnings.append(dep.told(path, Finding(
                    f"memory_gb: {dep.memory_gb:g} GB per replica (memory_gb is in GB), more than a {pool.vm_size} node "
                    f"({cores} vCPUs, pool {pool.name}) is likely to have; such replicas stay Pending", "memory_gb")))
        return problems

    def _gpu_capacity(self) -> list[str]:
        """Replicas asking for more GPUs than the GPU pools can ever have stay Pending: refused when even the
        replicas a deployment starts with cannot all run, a warning when autoscaling or a lone replica's
        rollout surge can ask for more. Counted in GPUs, pools at their max_count (the cluster autoscaler's
        bound); an attached cluster, or a pool of a size whose GPUs are not known, is not counted."""
        if self.cluster is None or self.cluster.attach is not None:
            return []
        pools = [(p, gpus(p.vm_size)) for p in self.cluster.node_pools if p.accelerator == "gpu"]
        users = [(path, dep) for path, dep in self.deployments() if dep.gpu_cores]
        if not pools or not users or any(n is None for _, n in pools):
            return []
        sized = [(p, n) for p, n in pools if n is not None]
        largest, biggest = max(sized, key=lambda pn: pn[1])
        problems = [f"{path}.{dep.named('gpu_cores')}: {dep.gpu_cores} GPUs per replica, but the largest GPU node ({largest.vm_size}) "
                    f"has {biggest}; its replicas could never be scheduled" for path, dep in users if dep.gpu_cores > biggest]
        if problems:
            return problems
        capacity = sum(n * p.most_nodes for p, n in sized)
        held = "the GPU pools hold at most %d GPUs (%s)" % (capacity, ", ".join(
            f"{p.name}: {p.most_nodes} x {n}" for p, n in sized))
        start = sum(dep.replicas * dep.gpu_cores for _, dep in users)
        if start > capacity:
            return [f"{users[0][0]}.{users[0][1].named('gpu_cores')}: the deployments start with {start} GPUs "
                    f"({', '.join(f'{path} {dep.replicas} x {dep.gpu_cores}' for path, dep in users)}), and {held}; "
                    "raise the pools' max_count (or count) or lower the replicas"]
        unplaced = _unpacked([dep.gpu_cores for _, dep in users for _ in range(dep.replicas)], sized)
        if unplaced:
            self._warnings.append(f"gpu_cores: the deployments start with {start} GPUs, within the pools' total, but a "
                                  f"replica takes all its GPUs on one node, and {len(unplaced)} of them "
                                  f"({', '.join(map(str, unplaced))} GPUs) find no node with that many left; they stay "
                                  "Pending (use sizes whose GPUs per node the replicas divide, or raise max_count)")
        most = sum((dep.autoscale_max_replicas if dep.autoscale_enabled else dep.replicas) * dep.gpu_cores
                   for _, dep in users)
        if most > capacity:  # each autoscaling deployment's bound named as its source spells it (autoScaler.maxReplicas)
            bounds = " or ".join(f"{path}.{dep.named('autoscale_max_replicas')}" for path, dep in users if dep.autoscale_enabled)
            self._warnings.append(f"gpu_cores: autoscaling can ask for {most} GPUs and {held}; replicas beyond that "
                                  f"stay Pending (lower {bounds}, or raise max_count)")
        surge = max((dep.gpu_cores for _, dep in users if dep.replicas == 1), default=0)
        if most <= capacity and surge and start + surge > capacity:
            self._warnings.append(f"gpu_cores: a rollout of a lone GPU replica starts its new replica first, which "
                                  f"needs {surge} GPUs more than the {start} in use, and {held}; that rollout waits "
                                  "for a GPU that never frees")
        return []

    def _kubernetes_names(self) -> list[str]:
        """Resources of different Pulumi names can still share a Kubernetes name: Pulumi would not
        notice, the cluster would (one Deployment serving two routes, the router's Service selecting
        model pods). So every Deployment name is unique and none is the router's."""
        problems = []
        owners: dict[str, str] = {}
        named = [(f"services[{i}].name", deployment_name(s.name)) for i, s in enumerate(self.services)]
        named += [(f"endpoints[{i}].versions[{j}].version_name", deployment_name(e.name, v.version_name))
                  for i, e in enumerate(self.endpoints) for j, v in enumerate(e.versions)]
        for path, name in named:  # services first: two services of one name are reported above
            other = owners.setdefault(name, path)
            if is_router_name(name):
                problems.append(f"{path}: {name!r} is the router's name ({ROUTER_NAME} and {ROUTER_NAME}-*); choose another")
            elif other != path and path.startswith("endpoints"):
                problems.append(f"{path}: its Deployment {name!r} is also {other}'s; rename one of them")
        return problems

    def deployments(self) -> list[tuple[str, Deployable]]:
        """Every deployable with its path in the stack: services, then endpoint versions."""
        out: list[tuple[str, Deployable]] = [(f"services[{i}]", s) for i, s in enumerate(self.services)]
        for i, e in enumerate(self.endpoints):
            out += [(f"endpoints[{i}].versions[{j}]", v) for j, v in enumerate(e.versions)]
        return out

    def model(self, ref: str) -> ModelSpec:
        name, _, version = ref.partition(":")
        matching = [m for m in self.models if m.name == name and (not version or str(m.version) == version)]
        return max(matching, key=lambda m: m.version)
