"""AksCluster: the Kubernetes cluster models are served on, created or attached.

Created: an AKS ManagedCluster with the spec's first System pool inline (AKS needs one at
creation) and every other pool, System or User, as its own AgentPool resource (AKS refuses to add
pools to an existing cluster through the cluster's own PUT, so a pool added later must not be
inline), kubenet or azure CNI on an existing or new subnet, a system-assigned identity with Network
Contributor on that subnet (and on an internal load balancer's, when another), and for a workspace:
AcrPull for the kubelet identity on its registry, an OIDC issuer and Azure AD workload identity (the scorer
pods sign in to storage as an identity of their own, ScorerIdentity, not with the account key), Container
Insights (the omsagent addon, with the data collection rule its managed-identity auth reads) and, in fast_prod, Defender's sensor, both
reporting to its Log Analytics workspace.

Attached: an existing AKS cluster by resource id (credentials from
listManagedClusterUserCredentials, identity and FQDN from getManagedCluster, read in the id's subscription
or through the azure-native provider given in opts, whose subscription must be the cluster's), or any Kubernetes
by kubeconfig file. Nothing Azure-side is declared for a kubeconfig cluster: its nodes pull from the
workspace registry only once granted AcrPull outside the stack (check warns of it).

An attached cluster's OIDC issuer is not the stack's to turn on: its scorer pods use the storage key (the
program warns of it).

Either way `provider` is the pulumi_kubernetes.Provider everything in the cluster is declared with.
"""

from __future__ import annotations

import base64
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi_azure_native as azure_native
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.containerservice as containerservice
import pulumi_azure_native.monitor as monitor
import pulumi_azure_native.network as network
import pulumi_azure_native.privatedns as privatedns
import pulumi_kubernetes as k8s

from components.accelerators import SCHEDULING
from components.sources import read_kubeconfig
from components.regions import region_name
from components.spec import CLUSTER_SUBNET, PRIVATE_LINK_ZONES, ClusterSpec, NodePoolSpec
from components.workspace import Workspace

# Built-in role definition ids (the same GUID in every subscription).
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
NETWORK_CONTRIBUTOR_ROLE = "4d97b98b-1d4f-4787-a291-c67834d212e7"

# Microsoft Container Registry and the CDN its storage is served from: AKS's outbound rules require both
# for a pull from MCR (and the wildcard *.data.mcr.microsoft.com, which no list of names can hold).
MCR_FQDNS = ["mcr.microsoft.com", "mcr-0001.mcr-msedge.net"]
INSIGHTS_STREAM = "Microsoft-ContainerInsights-Group-Default"  # everything Container Insights collects
# Besides the cluster's own names, a node must reach these to start at all (AKS's required
# outbound FQDNs that are concrete names rather than wildcards). packages.aks.azure.com is where node
# provisioning (AgentBaker's resolve_packages_source_url) now fetches kubelet, CNI and containerd from,
# with acs-mirror.azureedge.net as its fallback.
AKS_CONTROL_FQDNS = ["management.azure.com", "login.microsoftonline.com", "packages.microsoft.com",
                     "packages.aks.azure.com", "acs-mirror.azureedge.net"]

# NVIDIA's device plugin, as AKS documents installing it (GPU nodes with AKS's driver).
NVIDIA_DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
CHECK_IMAGE = "busybox:1.36.1"
# Where the nodes pull those two from: they too must resolve and be reachable.
NVIDIA_REGISTRY_FQDNS = ["nvcr.io"]
DOCKER_HUB_FQDNS = ["registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com"]
SYSTEM_NAMESPACE = "kube-system"
# Container Insights' agent (AKS's outbound rules for Azure Monitor, the names that are not wildcards): access
# control and its own telemetry; besides, it fetches its collection rules from <region>.handler.control.monitor.azure.com.
MONITORING_FQDNS = ["global.handler.control.monitor.azure.com", "dc.services.visualstudio.com"]
# Where that agent and Defender's sensor send to a Log Analytics workspace: <workspace id>.<each of these>.
LOG_ANALYTICS_INGESTION = ["ods.opinsights.azure.com", "oms.opinsights.azure.com"]

# ARM sub-resource names (private endpoint group ids) and the privatelink zones that go with them.
def builtin_role(scope_id: str, role: str) -> str:
    """A built-in role's definition id in the subscription of `scope_id` (an ARM resource id)."""
    subscription = scope_id.split("/")[2]
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def ingestion_host(connection_string: str) -> str:
    """Where Application Insights' SDKs send telemetry: the connection string's IngestionEndpoint, else their default."""
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return _host(fields.get("IngestionEndpoint", "https://dc.services.visualstudio.com"))


def pool_labels_and_taints(pool: NodePoolSpec) -> tuple[dict[str, str], list[str]]:
    """A pool's labels and taints: the spec's, plus the accelerator's from the shared table, so
    ModelService's selector and toleration for gpu_cores / fpga_cores always match.

    A System pool gets the label but not the taint: it runs the cluster's own pods and, unless
    tainted CriticalAddonsOnly, the router, which tolerate no accelerator taint (a GPU-only
    cluster, as Azure ML allows, is one such pool)."""
    labels, taints = dict(pool.labels), list(pool.taints)
    scheduling = SCHEDULING.get(pool.accelerator or "none")
    if scheduling is not None:
        labels |= scheduling.selector
        if pool.mode == "User" and scheduling.taint not in taints:
            taints.append(scheduling.taint)
    return labels, taints


def _pool_settings(pool: NodePoolSpec, version: str, subnet_id: pulumi.Input[str] | None) -> dict[str, Any]:
    """What an inline profile and an AgentPool resource share, as keyword arguments."""
    labels, taints = pool_labels_and_taints(pool)
    autoscaled = pool.min_count is not None
    settings: dict[str, Any] = {
        "mode": pool.mode,
        "vm_size": pool.vm_size,
        "count": pool.node_count,
        "enable_auto_scaling": autoscaled,
        "os_type": containerservice.OSType.LINUX,
        "type": containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
        "orchestrator_version": version,
        "node_labels": labels or None,
        "node_taints": taints or None,
        "availability_zones": pool.zones or None,
        "vnet_subnet_id": subnet_id,
    }
    if autoscaled:
        settings |= {"min_count": pool.min_count, "max_count": pool.max_count}
    return settings


def nvidia_device_plugin(name: str = "nvidia-device-plugin") -> dict[str, Any]:
    """The NVIDIA device plugin DaemonSet, only on GPU nodes (the pool label) and tolerating their taint.

    It advertises `nvidia.com/gpu`, the resource ModelService requests for gpu_cores.
    """
    gpu = SCHEDULING["gpu"]
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": gpu.selector,
                    "tolerations": [gpu.toleration, {"key": gpu.resource, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": name,
                        "image": NVIDIA_DEVICE_PLUGIN_IMAGE,
                        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
                        "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
                    }],
                    "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}],
                },
            },
        },
    }


CHECK_SCRIPT = """\
failed=""
for host in $FQDNS; do
  if ! nslookup "$host" >/dev/null 2>&1; then echo "FAIL $host: does not resolve"; failed="$failed $host"; continue; fi
  if ! nc -z -w 5 "$host" 443; then echo "FAIL $host: resolves but port 443 is unreachable"; failed="$failed $host"; continue; fi
  echo "ok   $host"
done
if [ -n "$failed" ]; then echo "unreachable:$failed"; exit 1; fi
echo "all reachable"
"""


def _kubelet_identity(profile: Any, resource_id: str) -> str:
    """The attached cluster's kubelet identity, which AcrPull is granted to. A cluster on a service principal
    (AKS's legacy mode) has none: ARM would refuse the grant with an empty principal, so say what to do."""
    if not profile or "kubeletidentity" not in profile:
        raise ValueError(f"cluster.attach.resource_id: {resource_id} has no kubelet managed identity (a service-principal "
                         "cluster); grant its service principal AcrPull on the workspace registry, or update the cluster "
                         "to managed identity (az aks update --enable-managed-identity)")
    return profile["kubeletidentity"].object_id


def stack_azure_settings() -> dict[str, Any]:
    """The stack's azure-native settings (how it signs in, which cloud) as Provider arguments, but the
    subscription. An explicit provider reads none of them: a stack that signs in with azure-native:clientId
    and clientSecret, or OIDC, would otherwise reach the attached cluster as whatever identity the machine's
    environment has (none on a CI runner). Secret settings stay secret."""
    config = pulumi.Config("azure-native")
    settings: dict[str, Any] = {}
    for arg, param in inspect.signature(azure_native.ProviderArgs.__init__).parameters.items():
        if arg.startswith("_") or arg in ("self", "subscription_id"):
            continue
        key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), arg)
        kind = str(param.annotation)
        value = config.get_bool(key) if "bool" in kind else config.get_object(key) if "Sequence" in kind else config.get(key)
        if value is not None:
            settings[arg] = pulumi.Output.secret(value) if pulumi.runtime.is_config_secret(config.full_key(key)) else value
    return settings


def dns_prefix(cluster_name: str) -> str:
    """AKS's DNS prefix: 1-54 letters, digits and hyphens, from the cluster name (which may hold `_` and 63)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", cluster_name)[:54].strip("-")


def connectivity_check_job(fqdns: list[str], name: str = "dns-connectivity-check") -> dict[str, Any]:
    """A Job that resolves each FQDN and connects to its port 443; its log names each failure.

    No retries: a failed check fails `pulumi up` with the log at hand rather than looping. The next `up`
    replaces it (replaceUnready), so it checks again once DNS is fixed; Pulumi would otherwise wait again for
    the failed Job, and fail, on every `up`.
    """
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": {"app.kubernetes.io/name": name},
                     "annotations": {"pulumi.com/replaceUnready": "true"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 300,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
                    "containers": [{
                        "name": "check",
                        "image": CHECK_IMAGE,
                        "command": ["sh", "-c", CHECK_SCRIPT],
                        "env": [{"name": "FQDNS", "value": " ".join(fqdns)}],
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
                    }],
                },
            },
        },
    }


def load_balancer_annotations(spec: ClusterSpec) -> dict[str, str]:
    """Annotations a LoadBalancer Service needs for the spec's load balancer (internal + subnet)."""
    if spec.load_balancer.type != "InternalLoadBalancer":
        return {}
    return {
        "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
        "service.beta.kubernetes.io/azure-load-balancer-internal-subnet": spec.load_balancer.subnet or "",
    }


class AksCluster(pulumi.ComponentResource):
    """An AKS cluster (created or attached) and the pulumi_kubernetes Provider to deploy into it.

    Outputs: fqdn (API server), oidc_issuer_url (what a federated identity credential trusts; None attached),
    kubelet_object_id and node_resource_group (None for a kubeconfig
    cluster), required_fqdns (what custom DNS on the VNet must resolve and the nodes must reach),
    kubeconfig (secret), network_policy (the engine that enforces NetworkPolicies: the model pods'
    admits only the router; None for a kubeconfig cluster, whose engine is not known here). Plain attributes: provider, service_annotations (for the LoadBalancer
    Service that fronts scoring), workload_identity (the stack created it with workload identity on: its pods may
    run as Azure AD identities federated with oidc_issuer_url).

    scoring_dns_label: the router Service's Azure DNS label, when the stack gives one; its name
    <label>.<region>.cloudapp.azure.com joins required_fqdns (ssl.cname or ssl.leaf_domain_label
    do the same). reached: other hosts the pods reach (Application Insights' ingestion, a model's
    storage account), which join required_fqdns too.
    """

    provider: k8s.Provider
    fqdn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str | None]
    workload_identity: bool
    kubelet_object_id: pulumi.Output[str | None]
    node_resource_group: pulumi.Output[str | None]
    required_fqdns: pulumi.Output[list[str]]
    kubeconfig: pulumi.Output[str]
    network_policy: pulumi.Output[str | None]
    service_annotations: dict[str, str]

    def __init__(
        self,
        name: str,
        spec: ClusterSpec,
        workspace: Workspace | None,
        location: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
        *,
        scoring_dns_label: str | None = None,
        reached: Sequence[pulumi.Input[str]] = (),
    ):
        if spec.attach is None and workspace is None:
            raise ValueError(f"AksCluster {name}: a new cluster (no attach) needs a workspace: it is made in the "
                             "workspace's resource group, pulls from its registry and reports to its Log Analytics")
        super().__init__("aks-model-serving:index:AksCluster", name, None, opts)
        self._name, self._spec, self._workspace, self._location = name, spec, workspace, location
        self._reached = list(reached)
        self.service_annotations = load_balancer_annotations(spec)
        self.workload_identity = spec.attach is None
        self.oidc_issuer_url = pulumi.Output.from_input(None)  # an attached cluster's is not the stack's to trust
        self._vnet_id: pulumi.Output[str] | None = None
        self._subnet_id: pulumi.Output[str] | None = None
        self._ready_for_pods: list[pulumi.Resource] = []  # the pools not inline, the AcrPull and subnet grants

        if spec.attach is None:
            self._create()
        elif spec.attach.resource_id:
            self._attach_aks(spec.attach.resource_id)
        else:
            self._attach_kubeconfig(Path(spec.attach.kubeconfig or "").expanduser())

        azure_identity = spec.attach is None or bool(spec.attach.resource_id)
        if workspace is not None and azure_identity:
            self._ready_for_pods.append(self._acr_pull(workspace))
        # Pods wait for the pools they run on, for the right to pull their images and for the cluster
        # identity's rights on its subnets (the router's LoadBalancer Service needs them): else a first
        # `up` races a GPU pool's creation and the role assignments' propagation, and times out.
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=self._ready_for_pods))
        self.required_fqdns = self._required_fqdns(self._scoring_fqdns(scoring_dns_label))

        if spec.attach is None and spec.has_accelerator("gpu"):
            self._k8s(k8s.apps.v1.DaemonSet, "nvidia-device-plugin", nvidia_device_plugin())
        if spec.dns.private_zone_links:
            self._private_links()
        if spec.dns.connectivity_check:
            # The scoring domain exists only once the router's Service has its address: not checked here.
            checked = self._required_fqdns([])
            self._k8s(k8s.batch.v1.Job, "dns-connectivity-check", checked.apply(connectivity_check_job))

        self.register_outputs({
            "fqdn": self.fqdn,
            "oidc_issuer_url": self.oidc_issuer_url,
            "kubelet_object_id": self.kubelet_object_id,
            "node_resource_group": self.node_resource_group,
            "required_fqdns": self.required_fqdns,
            "kubeconfig": self.kubeconfig,
            "network_policy": self.network_policy,
        })

    # ------------------------------------------------------------------ create

    def _create(self) -> None:
        spec, ws, name = self._spec, self._workspace, self._name
        assert ws is not None  # __init__
        child = pulumi.ResourceOptions(parent=self)
        rg = ws.resource_group_name
        net = spec.network

        if net.vnet is not None and net.vnet.subnet_id:
            self._subnet_id = pulumi.Output.from_input(net.vnet.subnet_id)
            self._vnet_id = pulumi.Output.from_input(net.vnet.subnet_id.rsplit("/subnets/", 1)[0])
        elif net.vnet is not None:
            # The subnet is a resource of its own, not inline: with kubenet AKS attaches its route table to
            # it, and a VNet update carrying inline subnets would detach that table (pods lose their routes).
            vnet = network.VirtualNetwork(
                f"{name}-vnet",
                resource_group_name=rg,
                location=self._location,
                address_space=network.AddressSpaceArgs(address_prefixes=[net.vnet.address_space]),
                dhcp_options=network.DhcpOptionsArgs(dns_servers=net.vnet.dns_servers) if net.vnet.dns_servers else None,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["subnets"]),
            )
            subnet = network.Subnet(
                f"{name}-subnet",
                subnet_name=CLUSTER_SUBNET,
                resource_group_name=rg,
                virtual_network_name=vnet.name,
                address_prefix=net.vnet.subnet_prefix,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["routeTable"]),
            )
            self._vnet_id = vnet.id
            self._subnet_id = subnet.id

        inline = next(p for p in spec.node_pools if p.mode == "System")
        pools = [p for p in spec.node_pools if p is not inline]
        profile = containerservice.ManagedClusterAgentPoolProfileArgs(
            name=inline.name, **_pool_settings(inline, spec.kubernetes_version, self._subnet_id))
        # The autoscaler owns the node count of autoscaled pools; declaring it again would fight it.
        ignored = ["agentPoolProfiles[0].count"] if inline.min_count is not None else None

        monitored = spec.monitoring
        cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_name_=spec.name,
            resource_group_name=rg,
            location=self._location,
            dns_prefix=dns_prefix(spec.name),
            kubernetes_version=spec.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED),
            enable_rbac=True,
            # Production purposes get the uptime SLA (the Standard tier); dev_test the free tier.
            sku=containerservice.ManagedClusterSKUArgs(
                name=containerservice.ManagedClusterSKUName.BASE,
                tier=containerservice.ManagedClusterSKUTier.FREE if spec.cluster_purpose == "dev_test" else containerservice.ManagedClusterSKUTier.STANDARD,
            ),
            agent_pool_profiles=[profile],
            # A dict, not the Args class: the class fills podCidr 10.244.0.0/16 in, which AKS refuses
            # for azure CNI (pods take subnet addresses there).
            network_profile={
                "network_plugin": net.plugin,
                "network_policy": net.policy,
                "pod_cidr": net.pod_cidr,
                "service_cidr": net.service_cidr,
                "dns_service_ip": net.dns_service_ip,
                "outbound_type": net.outbound_type,
                "load_balancer_sku": containerservice.LoadBalancerSku.STANDARD,
            },
            # Off is said, not left out: AKS keeps an addon or Defender's sensor that a PUT does not mention, so
            # turning either off later would change nothing in Azure (Defender still billed, the agent left
            # without the data collection rule removed below).
            addon_profiles={
                "omsagent": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True,
                    config={"logAnalyticsWorkspaceResourceID": ws.log_analytics_workspace_id, "useAADAuth": "true"},
                ) if monitored else containerservice.ManagedClusterAddonProfileArgs(enabled=False)
            },
            # The scorer pods' storage access: an Azure AD identity federated with the cluster's service account
            # tokens (ScorerIdentity), so no account key reaches the pods that run the user's entry script.
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True),
                defender=containerservice.ManagedClusterSecurityProfileDefenderArgs(
                    log_analytics_workspace_resource_id=ws.log_analytics_workspace_id if spec.defender else None,
                    security_monitoring=containerservice.ManagedClusterSecurityProfileDefenderSecurityMonitoringArgs(
                        enabled=bool(spec.defender)),
                )
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignored),
        )

        if monitored:
            self._container_insights(rg, cluster, ws)

        for pool in pools:
            self._ready_for_pods.append(containerservice.AgentPool(
                f"{name}-{pool.name}",
                agent_pool_name=pool.name,
                resource_group_name=rg,
                resource_name_=cluster.name,
                **_pool_settings(pool, spec.kubernetes_version, self._subnet_id),
                # A pool's name is fixed and a change of vm_size (or another setting AKS cannot update in
                # place) replaces it: Azure refuses a second pool of that name, so the old one goes first.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True,
                                            ignore_changes=["count"] if pool.min_count is not None else None),
            ))

        if net.vnet is not None and self._subnet_id is not None and self._vnet_id is not None:
            # AKS manages load balancers and routes in the subnet with the cluster's own identity; an internal
            # load balancer takes its address from the subnet the Service names, which may be another of the VNet.
            scopes = {"subnet": self._subnet_id}
            own = net.vnet.subnet_id.rsplit("/", 1)[-1] if net.vnet.subnet_id else CLUSTER_SUBNET
            lb_subnet = spec.load_balancer.subnet
            if lb_subnet and lb_subnet.lower() != own.lower():  # Azure's names are case-insensitive
                scopes["lb-subnet"] = self._vnet_id.apply(lambda vnet_id: f"{vnet_id}/subnets/{lb_subnet}")
            for role_name, scope in scopes.items():
                self._ready_for_pods.append(authorization.RoleAssignment(
                    f"{name}-{role_name}-network-contributor",
                    scope=scope,
                    principal_id=cluster.identity.apply(lambda i: i.principal_id),  # type: ignore[union-attr]
                    principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
                    role_definition_id=scope.apply(lambda s: builtin_role(s, NETWORK_CONTRIBUTOR_ROLE)),
                    opts=child,
                ))

        self.fqdn = cluster.fqdn
        self.oidc_issuer_url = cluster.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else None)
        self.kubelet_object_id = cluster.identity_profile.apply(lambda p: p["kubeletidentity"].object_id if p else None)
        self.node_resource_group = cluster.node_resource_group
        self.kubeconfig = self._user_kubeconfig(rg, cluster.name)
        self.network_policy = pulumi.Output.from_input(net.policy)

    def _container_insights(self, rg: pulumi.Input[str], cluster: containerservice.ManagedCluster, ws: Workspace) -> None:
        """With managed-identity auth (useAADAuth) the addon sends only what a data collection rule
        associated with the cluster names; `az aks enable-addons` makes both, an ARM deployment must."""
        child = pulumi.ResourceOptions(parent=self)
        rule = monitor.DataCollectionRule(
            f"{self._name}-container-insights",
            data_collection_rule_name=f"MSCI-{self._spec.name}"[:64],
            resource_group_name=rg,
            location=self._location,
            kind="Linux",
            data_sources={"extensions": [{
                "name": "ContainerInsightsExtension", "extension_name": "ContainerInsights", "streams": [INSIGHTS_STREAM],
                "extension_settings": {"dataCollectionSettings": {"interval": "1m", "namespaceFilteringMode": "Off",
                                                                  "enableContainerLogV2": True}},
            }]},
            destinations={"log_analytics": [{"name": "workspace", "workspace_resource_id": ws.log_analytics_workspace_id}]},
            data_flows=[{"streams": [INSIGHTS_STREAM], "destinations": ["workspace"]}],
            opts=child,
        )
        monitor.DataCollectionRuleAssociation(
            f"{self._name}-container-insights",
            association_name="ContainerInsightsExtension",
            resource_uri=cluster.id,
            data_collection_rule_id=rule.id,
            opts=child,
        )

    def _user_kubeconfig(self, rg: pulumi.Input[str], cluster_name: pulumi.Input[str],
                         azure: pulumi.ProviderResource | None = None) -> pulumi.Output[str]:
        creds = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=rg, resource_name=cluster_name, opts=pulumi.InvokeOutputOptions(parent=self, provider=azure)
        )
        return pulumi.Output.secret(creds.kubeconfigs[0].value.apply(lambda v: base64.b64decode(v).decode()))

    # ------------------------------------------------------------------ attach

    def _attach_aks(self, resource_id: str) -> None:
        parts = resource_id.split("/")
        subscription, rg, cluster_name = parts[2], parts[4], parts[8]
        # The cluster is read in the subscription its id names, which need not be the stack's, as the stack signs
        # in; or through the azure-native provider a program gave this component, as all else of it is declared.
        azure = self.get_provider("azure-native:containerservice:getManagedCluster") or azure_native.Provider(
            f"{self._name}-attached-subscription", subscription_id=subscription, **stack_azure_settings(),
            opts=pulumi.ResourceOptions(parent=self))
        found = containerservice.get_managed_cluster_output(
            resource_group_name=rg, resource_name=cluster_name, opts=pulumi.InvokeOutputOptions(parent=self, provider=azure)
        )
        self.fqdn = found.fqdn
        self.kubelet_object_id = found.identity_profile.apply(lambda p: _kubelet_identity(p, resource_id))
        self.node_resource_group = found.node_resource_group
        self.kubeconfig = self._user_kubeconfig(rg, cluster_name, azure)
        self.network_policy = found.network_profile.apply(self._enforcing)

    def _enforcing(self, profile: Any) -> str | None:
        """The attached cluster's network policy engine, warned about when it has none: AKS sets it at
        creation only, and without one any pod in the cluster reaches the scorers past the router's auth."""
        engine = profile.network_policy if profile is not None else None
        if engine in (None, "none"):
            pulumi.log.warn(f"cluster {self._spec.name}: it enforces no NetworkPolicy (networkProfile.networkPolicy "
                            f"{engine!r}), so any pod in it can reach the scorers past the router's auth; give the "
                            "cluster a network policy engine (calico, azure or cilium)", resource=self)
        return engine

    def _attach_kubeconfig(self, path: Path) -> None:
        text, server = read_kubeconfig(path)
        self.fqdn = pulumi.Output.from_input(_host(server))
        self.kubelet_object_id = pulumi.Output.from_input(None)
        self.node_resource_group = pulumi.Output.from_input(None)
        self.kubeconfig = pulumi.Output.secret(text)
        self.network_policy = pulumi.Output.from_input(None)

    # ------------------------------------------------------------------ what follows either way

    def _acr_pull(self, ws: Workspace) -> authorization.RoleAssignment:
        """The kubelet identity pulls images from the workspace registry (its admin user is off)."""
        principal = self.kubelet_object_id.apply(lambda oid: oid or "")
        return authorization.RoleAssignment(
            f"{self._name}-acr-pull",
            scope=ws.registry_id,
            principal_id=principal,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=ws.registry_id.apply(lambda rid: builtin_role(rid, ACR_PULL_ROLE)),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _scoring_fqdns(self, scoring_dns_label: str | None) -> list[pulumi.Input[str]]:
        """The scoring domain: the TLS cname, or <label>.<region>.cloudapp.azure.com for a DNS label (the
        location may be another resource's, an Output)."""
        ssl = self._spec.ssl
        names: list[pulumi.Input[str]] = [ssl.cname] if ssl is not None and ssl.cname else []
        region = pulumi.Output.from_input(self._location).apply(region_name)
        for label in (ssl.leaf_domain_label if ssl else None, scoring_dns_label):
            if label:
                names.append(region.apply(lambda r, label=label: f"{label}.{r}.cloudapp.azure.com"))
        return names

    def _required_fqdns(self, scoring: list[pulumi.Input[str]]) -> pulumi.Output[list[str]]:
        """The names custom DNS must resolve, from the real resources (sorted, no duplicates): what the nodes, the
        cluster's own agents and the scoring clients reach."""
        hosts: list[pulumi.Input[str | None]] = [self.fqdn, *scoring]
        if self._spec.attach is None or self._spec.attach.resource_id:
            hosts += [pulumi.Output.from_input(h) for h in AKS_CONTROL_FQDNS]
        ws, created = self._workspace, self._spec.attach is None
        if ws is not None:
            hosts += [ws.registry_login_server, ws.blob_endpoint.apply(_host), ws.table_endpoint.apply(_host)]
        if ws is not None and created and (self._spec.monitoring or self._spec.defender):
            hosts += [pulumi.Output.concat(ws.log_analytics_customer_id, f".{suffix}") for suffix in LOG_ANALYTICS_INGESTION]
        hosts += self._reached
        named = list(MCR_FQDNS)
        if created and self._spec.has_accelerator("gpu"):
            named += NVIDIA_REGISTRY_FQDNS
        if created and self._spec.monitoring:
            named += MONITORING_FQDNS
            hosts.append(pulumi.Output.from_input(self._location).apply(  # another resource's location, perhaps
                lambda location: f"{region_name(location)}.handler.control.monitor.azure.com"))
        if self._spec.dns.connectivity_check:
            named += DOCKER_HUB_FQDNS
        return pulumi.Output.all(*hosts).apply(lambda found: sorted({h for h in [*found, *named] if h}))

    def _private_links(self) -> None:
        """Private endpoints for the registry, blob and table in the cluster's subnet, their
        privatelink zones (made here and linked to the cluster's VNet, or dns.private_zones' own), so
        custom DNS (forwarding to Azure DNS) resolves those names to private addresses."""
        ws = self._workspace
        if ws is None or self._vnet_id is None or self._subnet_id is None:
            raise ValueError("dns.private_zone_links: needs a workspace and a cluster on a vnet")
        child = pulumi.ResourceOptions(parent=self)
        name, rg = self._name, ws.resource_group_name
        account_id = pulumi.Output.all(ws.registry_id, ws.storage_account_name).apply(
            lambda a: a[0].split("/providers/")[0] + f"/providers/Microsoft.Storage/storageAccounts/{a[1]}"
        )
        targets = {"registry": ws.registry_id, "blob": account_id, "table": account_id}
        for group, zone_name in PRIVATE_LINK_ZONES.items():
            zone_id = self._spec.dns.private_zones.get(group)
            if zone_id is None:
                zone = privatedns.PrivateZone(f"{name}-{group}-zone", resource_group_name=rg, private_zone_name=zone_name,
                                              location="Global", opts=child)
                privatedns.VirtualNetworkLink(
                    f"{name}-{group}-link",
                    resource_group_name=rg,
                    private_zone_name=zone.name,
                    location="Global",
                    registration_enabled=False,
                    virtual_network=privatedns.SubResourceArgs(id=self._vnet_id),
                    opts=child,
                )
                zone_id = zone.id
            endpoint = network.PrivateEndpoint(
                f"{name}-{group}-pe",
                resource_group_name=rg,
                location=self._location,
                subnet=network.SubnetArgs(id=self._subnet_id),
                private_link_service_connections=[network.PrivateLinkServiceConnectionArgs(
                    name=group, private_link_service_id=targets[group], group_ids=[group],
                )],
                opts=child,
            )
            network.PrivateDnsZoneGroup(
                f"{name}-{group}-dns",
                resource_group_name=rg,
                private_endpoint_name=endpoint.name,
                private_dns_zone_group_name="default",
                private_dns_zone_configs=[network.PrivateDnsZoneConfigArgs(name=group, private_dns_zone_id=zone_id)],
                opts=child,
            )

    def _k8s(self, cls: type[pulumi.CustomResource], name: str, manifest: pulumi.Input[dict[str, Any]]) -> None:
        """Declare a rendered manifest (a pure function's dict, validated by the tests) in the cluster."""
        doc = pulumi.Output.from_input(manifest)
        cls(
            f"{self._name}-{name}",
            metadata=doc.apply(lambda d: d["metadata"]),
            spec=doc.apply(lambda d: d["spec"]),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
