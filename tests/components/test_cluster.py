"""AksCluster under Pulumi mocks: what each cluster spec yields, created or attached."""

from __future__ import annotations

import base64

import pulumi
import pytest
import yaml

from components.accelerators import SCHEDULING
from components.cluster import ACR_PULL_ROLE, NETWORK_CONTRIBUTOR_ROLE, AksCluster
from components.mocks import fake_kubeconfig, run
from components.spec import ClusterSpec, StackSpec, WorkspaceSpec
from components.workspace import Workspace

CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"
ROLE = "azure-native:authorization:RoleAssignment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
PROVIDER = "pulumi:providers:kubernetes"
SUBNET = "/subscriptions/s/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/aks"
MC_ID = "/subscriptions/s/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/existing"
SYSTEM = {"name": "system", "mode": "System", "vm_size": "Standard_D4s_v3", "count": 3}
GPU = {"name": "gpu", "vm_size": "Standard_NC4as_T4_v3", "min_count": 1, "max_count": 4}
FPGA = {"name": "fpga", "vm_size": "Standard_PB6", "count": 1}


def cluster_spec(**fields) -> ClusterSpec:
    return ClusterSpec.model_validate({"name": "aks-ml", "node_pools": [SYSTEM], **fields})


def deploy(spec: ClusterSpec, workspace: dict | None = None, *, with_workspace=True, **kw):
    ws_spec = WorkspaceSpec.model_validate({"name": "mlw", "resource_group": "rg-ml", **(workspace or {})})

    def program():
        ws = Workspace("ws", ws_spec, "westeurope") if with_workspace else None
        aks = AksCluster("aks", spec, ws, "westeurope", **kw)
        return {"fqdn": aks.fqdn, "kubelet": aks.kubelet_object_id, "fqdns": aks.required_fqdns,
                "kubeconfig": aks.kubeconfig, "node_rg": aks.node_resource_group, "network_policy": aks.network_policy}

    return run(program)


def by_name(rec, typ: str, name: str):
    return next(r for r in rec.resources if r.type == typ and r.name == name)


# ------------------------------------------------------------------ the example stacks


def test_prod_stack_is_azure_cni_on_the_existing_subnet_with_a_tainted_autoscaled_gpu_pool(stack):
    st = stack("prod")
    rec = deploy(st.spec.cluster, st.spec.workspace.model_dump(), scoring_dns_label=st.spec.router.dns_label)
    mc = rec.one(CLUSTER).inputs
    subnet = st.spec.cluster.network.vnet.subnet_id
    assert mc["networkProfile"] == {
        "networkPlugin": "azure", "networkPolicy": "calico", "serviceCidr": "10.100.0.0/16", "dnsServiceIP": "10.100.0.10",
        "outboundType": "loadBalancer", "loadBalancerSku": "standard",
    }  # no podCidr: AKS refuses one for azure CNI
    [system] = mc["agentPoolProfiles"]
    assert (system["name"], system["mode"], system["count"], system["vnetSubnetID"]) == ("system", "System", 3, subnet)
    assert system["availabilityZones"] == ["1", "2", "3"]
    gpu = rec.one(AGENT_POOL).inputs
    assert gpu["agentPoolName"] == "gpu" and gpu["resourceName"] == "aks-ml-prod"
    assert (gpu["enableAutoScaling"], gpu["minCount"], gpu["maxCount"], gpu["count"]) == (True, 1, 8, 1)
    assert gpu["nodeTaints"] == [SCHEDULING["gpu"].taint] == ["sku=gpu:NoSchedule"]
    assert gpu["nodeLabels"] == SCHEDULING["gpu"].selector
    assert gpu["vnetSubnetID"] == subnet and gpu["mode"] == "User"
    assert mc["sku"] == {"name": "Base", "tier": "Standard"}


def test_dev_stack_is_kubenet_with_a_pod_cidr_on_the_free_tier_without_defender(stack):
    st = stack("dev")
    rec = deploy(st.spec.cluster, st.spec.workspace.model_dump())
    mc = rec.one(CLUSTER).inputs
    assert mc["networkProfile"]["networkPlugin"] == "kubenet"
    assert mc["networkProfile"]["podCidr"] == "10.244.0.0/16"
    assert "vnetSubnetID" not in mc["agentPoolProfiles"][0]
    assert mc["sku"]["tier"] == "Free"
    assert mc["securityProfile"]["defender"]["securityMonitoring"] == {"enabled": False}  # dev_test: Defender off by default
    assert mc["addonProfiles"]["omsagent"]["enabled"] is True
    assert rec.of_type(AGENT_POOL) == [] and rec.of_type(DAEMONSET) == [] and rec.of_type(JOB) == []
    assert rec.of_type("azure-native:network:VirtualNetwork") == []


def test_every_kubernetes_object_validates_against_the_clusters_version(stack, validate):
    st = stack("prod")
    rec = deploy(st.spec.cluster, st.spec.workspace.model_dump())
    manifests = rec.kubernetes_manifests()
    assert sorted(m["kind"] for m in manifests) == ["DaemonSet", "Job"]
    assert validate(manifests, st.spec.cluster.kubernetes_version) == 2


def test_a_misspelled_field_fails_validation(validate):
    """The validation above can fail: strict mode rejects an unknown field."""
    from components.cluster import nvidia_device_plugin

    doc = nvidia_device_plugin()
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(Exception, match="imagePullPolicyy"):
        validate([doc], "1.35")


# ------------------------------------------------------------------ monitoring, Defender, SLA


def test_fast_prod_turns_defender_and_container_insights_to_the_workspace_log_analytics():
    rec = deploy(cluster_spec())
    mc = rec.one(CLUSTER).inputs
    logs_id = rec.one("azure-native:operationalinsights:Workspace").id
    assert mc["securityProfile"]["defender"] == {"logAnalyticsWorkspaceResourceId": logs_id, "securityMonitoring": {"enabled": True}}
    assert mc["addonProfiles"]["omsagent"]["config"]["logAnalyticsWorkspaceResourceID"] == logs_id
    assert mc["identity"] == {"type": "SystemAssigned"} and mc["enableRBAC"] is True
    # With managed-identity auth the addon sends what a data collection rule on the cluster names.
    rule = rec.one("azure-native:monitor:DataCollectionRule")
    stream = "Microsoft-ContainerInsights-Group-Default"
    [extension] = rule.inputs["dataSources"]["extensions"]
    assert (extension["extensionName"], extension["streams"]) == ("ContainerInsights", [stream])
    assert rule.inputs["destinations"]["logAnalytics"] == [{"name": "workspace", "workspaceResourceId": logs_id}]
    assert rule.inputs["dataFlows"] == [{"streams": [stream], "destinations": ["workspace"]}]
    association = rec.one("azure-native:monitor:DataCollectionRuleAssociation").inputs
    assert association == {"associationName": "ContainerInsightsExtension", "resourceUri": rec.one(CLUSTER).id,
                           "dataCollectionRuleId": rule.id}


def test_defender_and_monitoring_can_be_turned_off():
    """Said off, not left out: AKS keeps an addon or Defender's sensor that a cluster PUT does not mention, so
    a stack that turned them off changed nothing in Azure (Defender still billed, the agent still running)."""
    rec = deploy(cluster_spec(defender=False, monitoring=False))
    mc = rec.one(CLUSTER).inputs
    assert mc["securityProfile"] == {"defender": {"securityMonitoring": {"enabled": False}},
                                     "workloadIdentity": {"enabled": True}}
    assert mc["addonProfiles"] == {"omsagent": {"enabled": False}}
    assert rec.of_type("azure-native:monitor:DataCollectionRule") == []


# ------------------------------------------------------------------ pools


def test_accelerator_pools_get_the_shared_label_and_taint_next_to_their_own():
    spec = cluster_spec(node_pools=[SYSTEM, {**GPU, "labels": {"team": "fraud"}}, FPGA])
    rec = deploy(spec)
    gpu, fpga = by_name(rec, AGENT_POOL, "aks-gpu").inputs, by_name(rec, AGENT_POOL, "aks-fpga").inputs
    assert gpu["nodeLabels"] == {"team": "fraud", "aks-model-serving/accelerator": "gpu"}
    assert fpga["nodeLabels"] == {"aks-model-serving/accelerator": "fpga"}
    assert fpga["nodeTaints"] == ["sku=fpga:NoSchedule"]
    assert (fpga["count"], fpga["enableAutoScaling"]) == (1, False) and "minCount" not in fpga
    assert "nodeTaints" not in rec.one(CLUSTER).inputs["agentPoolProfiles"][0]


def test_a_gpu_system_pool_is_labelled_but_not_tainted():
    """Azure ML allows a GPU-only cluster; its one (System) pool must still take the router and the
    cluster's own pods, which tolerate no accelerator taint."""
    spec = cluster_spec(cluster_purpose="dev_test", node_pools=[{**GPU, "name": "system", "mode": "System", "count": 1}])
    [system] = deploy(spec).one(CLUSTER).inputs["agentPoolProfiles"]
    assert system["nodeLabels"] == SCHEDULING["gpu"].selector
    assert "nodeTaints" not in system


def test_device_plugin_only_with_a_gpu_pool_and_only_on_gpu_nodes():
    assert deploy(cluster_spec(node_pools=[SYSTEM, FPGA])).of_type(DAEMONSET) == []
    rec = deploy(cluster_spec(node_pools=[SYSTEM, GPU]))
    plugin = rec.one(DAEMONSET)
    pod = plugin.inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == SCHEDULING["gpu"].selector
    assert SCHEDULING["gpu"].toleration in pod["tolerations"]
    assert plugin.parent_type == "aks-model-serving:index:AksCluster"
    assert plugin.provider.startswith(rec.one(PROVIDER).urn)


def test_only_the_first_system_pool_is_inline_so_a_pool_added_later_is_never_a_cluster_put():
    """AKS refuses a new inline pool on an existing cluster; a second System pool is an AgentPool of mode System."""
    spare = {**SYSTEM, "name": "system2", "count": None, "min_count": 1, "max_count": 3}
    rec = deploy(cluster_spec(node_pools=[SYSTEM, GPU, spare]))
    assert [p["name"] for p in rec.one(CLUSTER).inputs["agentPoolProfiles"]] == ["system"]
    assert rec.one(CLUSTER).ignore_changes == []  # the inline pool is not autoscaled
    system2 = by_name(rec, AGENT_POOL, "aks-system2")
    assert (system2.inputs["agentPoolName"], system2.inputs["mode"], system2.inputs["vmSize"]) == ("system2", "System", "Standard_D4s_v3")
    assert "nodeTaints" not in system2.inputs
    assert system2.ignore_changes == ["count"]
    assert system2.urn in rec.one(PROVIDER).dependencies


def test_a_replaced_pool_is_deleted_before_its_successor_takes_its_name():
    """A new vm_size replaces an AgentPool; Azure refuses a second pool of the same name."""
    rec = deploy(cluster_spec(node_pools=[SYSTEM, {**SYSTEM, "name": "system2"}, GPU]))
    assert sorted(r.name for r in rec.of_type(AGENT_POOL)) == ["aks-gpu", "aks-system2"]
    assert all(r.delete_before_replace for r in rec.of_type(AGENT_POOL))
    assert not rec.one(CLUSTER).delete_before_replace


def test_an_autoscaled_system_pool_starts_at_its_lower_bound():
    spec = cluster_spec(node_pools=[{**SYSTEM, "count": None, "min_count": 3, "max_count": 6}])
    [system] = deploy(spec).one(CLUSTER).inputs["agentPoolProfiles"]
    assert (system["count"], system["minCount"], system["maxCount"], system["enableAutoScaling"]) == (3, 3, 6, True)


# ------------------------------------------------------------------ network


def test_new_vnet_with_custom_dns_and_the_cluster_on_its_subnet():
    spec = cluster_spec(network={"plugin": "azure", "vnet": {"address_space": "10.10.0.0/16", "subnet_prefix": "10.10.0.0/20",
                                                             "dns_servers": ["10.10.0.4"]}})
    rec = deploy(spec)
    vnet = rec.one("azure-native:network:VirtualNetwork")
    assert vnet.inputs["addressSpace"] == {"addressPrefixes": ["10.10.0.0/16"]}
    assert vnet.inputs["dhcpOptions"] == {"dnsServers": ["10.10.0.4"]}
    # A Subnet of its own, not inline: a VNet update would otherwise detach the route table kubenet's AKS attaches.
    assert "subnets" not in vnet.inputs
    subnet = rec.one("azure-native:network:Subnet")
    assert (subnet.inputs["subnetName"], subnet.inputs["addressPrefix"]) == ("aks", "10.10.0.0/20")
    assert subnet.id == f"{vnet.id}/subnets/aks"
    assert rec.one(CLUSTER).inputs["agentPoolProfiles"][0]["vnetSubnetID"] == subnet.id
    contributor = by_name(rec, ROLE, "aks-subnet-network-contributor").inputs
    assert contributor["scope"] == subnet.id
    assert contributor["roleDefinitionId"].endswith(NETWORK_CONTRIBUTOR_ROLE)
    assert contributor["principalId"] == rec.one(CLUSTER).outputs["identity"]["principalId"]


def test_kubenet_on_an_existing_subnet_keeps_its_pod_cidr_and_service_range():
    spec = cluster_spec(network={"plugin": "kubenet", "pod_cidr": "172.16.0.0/16", "service_cidr": "10.2.0.0/16",
                                 "dns_service_ip": "10.2.0.10", "outbound_type": "userDefinedRouting", "vnet": {"subnet_id": SUBNET}})
    mc = deploy(spec).one(CLUSTER).inputs
    assert mc["networkProfile"] == {"networkPlugin": "kubenet", "networkPolicy": "calico", "podCidr": "172.16.0.0/16", "serviceCidr": "10.2.0.0/16",
                                    "dnsServiceIP": "10.2.0.10", "outboundType": "userDefinedRouting", "loadBalancerSku": "standard"}
    assert mc["agentPoolProfiles"][0]["vnetSubnetID"] == SUBNET


def test_internal_load_balancer_annotations_for_the_scoring_service():
    spec = cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}},
                        load_balancer={"type": "InternalLoadBalancer", "subnet": "ilb"})
    holder = {}

    def program():
        ws = Workspace("ws", WorkspaceSpec(name="mlw", resource_group="rg"), "westeurope")
        holder["annotations"] = AksCluster("aks", spec, ws, "westeurope").service_annotations

    run(program)
    assert holder["annotations"] == {"service.beta.kubernetes.io/azure-load-balancer-internal": "true",
                                     "service.beta.kubernetes.io/azure-load-balancer-internal-subnet": "ilb"}


def test_an_internal_load_balancer_in_another_subnet_gets_the_cluster_identity_network_contributor_there_too():
    """AKS puts the load balancer's address in the subnet the Service names, with the cluster's identity."""
    spec = cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}},
                        load_balancer={"type": "InternalLoadBalancer", "subnet": "ilb"})
    rec = deploy(spec)
    grants = {r.name: r.inputs for r in rec.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(NETWORK_CONTRIBUTOR_ROLE)}
    assert sorted(grants) == ["aks-lb-subnet-network-contributor", "aks-subnet-network-contributor"]
    lb = grants["aks-lb-subnet-network-contributor"]
    assert lb["scope"] == SUBNET.rsplit("/subnets/", 1)[0] + "/subnets/ilb"
    assert lb["principalId"] == grants["aks-subnet-network-contributor"]["principalId"] == rec.one(CLUSTER).outputs["identity"]["principalId"]
    # The cluster's own subnet (whatever the case of its name) is granted once.
    same = deploy(cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}},
                               load_balancer={"type": "InternalLoadBalancer", "subnet": "AKS"}))
    assert [r.name for r in same.of_type(ROLE) if r.name.endswith("network-contributor")] == ["aks-subnet-network-contributor"]


# ------------------------------------------------------------------ identity and registry


def test_kubelet_identity_gets_acr_pull_on_the_workspace_registry():
    rec = deploy(cluster_spec())
    pull = by_name(rec, ROLE, "aks-acr-pull").inputs
    kubelet = rec.one(CLUSTER).outputs["identityProfile"]["kubeletidentity"]["objectId"]
    assert pull["principalId"] == kubelet == rec.outputs["kubelet"]
    assert pull["scope"] == rec.one("azure-native:containerregistry:Registry").id
    assert pull["roleDefinitionId"] == f"/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}"
    assert pull["principalType"] == "ServicePrincipal"


def test_the_provider_uses_the_clusters_user_kubeconfig_as_a_secret():
    rec = deploy(cluster_spec())
    provider = rec.one(PROVIDER)
    assert "kubeconfig" in provider.secret_inputs
    server = yaml.safe_load(provider.inputs["kubeconfig"])["clusters"][0]["cluster"]["server"]
    assert server == f"https://{rec.outputs['fqdn']}:443"
    assert "kubeconfig" in rec.secret_outputs
    assert ("azure-native:containerservice:listManagedClusterUserCredentials",
            {"resourceGroupName": "rg-ml", "resourceName": "aks-ml"}) in rec.calls


# ------------------------------------------------------------------ attach


def test_attach_by_resource_id_declares_no_cluster_but_a_provider_and_acr_pull():
    rec = deploy(ClusterSpec.model_validate({"name": "existing", "attach": {"resource_id": MC_ID}}))
    assert rec.of_type(CLUSTER) == [] and rec.of_type(AGENT_POOL) == [] and rec.of_type(DAEMONSET) == []
    tokens = [t for t, _ in rec.calls]
    assert "azure-native:containerservice:getManagedCluster" in tokens
    assert ("azure-native:containerservice:listManagedClusterUserCredentials",
            {"resourceGroupName": "rg-aks", "resourceName": "existing"}) in rec.calls
    assert rec.one(PROVIDER).inputs["kubeconfig"].startswith("apiVersion: v1")
    assert by_name(rec, ROLE, "aks-acr-pull").inputs["principalId"] == rec.outputs["kubelet"] is not None
    assert rec.outputs["fqdn"].endswith(".hcp.westeurope.azmk8s.io")
    assert rec.outputs["node_rg"] == "MC_rg-aks_existing_westeurope"


@pytest.mark.parametrize("profile, warned", [({"networkPlugin": "azure", "networkPolicy": "cilium"}, False),
                                              ({"networkPlugin": "kubenet"}, True),
                                              ({"networkPlugin": "azure", "networkPolicy": "none"}, True)])
def test_an_attached_cluster_that_enforces_no_network_policy_is_warned_about(monkeypatch, profile, warned):
    """The model pods' NetworkPolicy admits only the router; on a cluster without an engine it is inert, and
    AKS sets the engine at creation only, so the stack cannot fix it: it says so."""
    from components import mocks

    monkeypatch.setattr(mocks, "ATTACHED_NETWORK_PROFILE", profile)
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    rec = deploy(ClusterSpec.model_validate({"name": "existing", "attach": {"resource_id": MC_ID}}))
    assert rec.outputs["network_policy"] == profile.get("networkPolicy")
    assert [w for w in warnings if "enforces no NetworkPolicy" in w] == (
        [f"cluster existing: it enforces no NetworkPolicy (networkProfile.networkPolicy {profile.get('networkPolicy')!r}), "
         "so any pod in it can reach the scorers past the router's auth; give the cluster a network policy engine "
         "(calico, azure or cilium)"] if warned else [])


def test_an_attached_cluster_is_read_in_the_subscription_its_id_names():
    rec = deploy(ClusterSpec.model_validate({"name": "existing", "attach": {"resource_id": MC_ID}}))
    [azure] = [r for r in rec.of_type("pulumi:providers:azure-native") if r.name == "aks-attached-subscription"]
    assert azure.inputs["subscriptionId"] == "s"  # MC_ID's, not the stack's
    through = {token: provider for token, provider in rec.call_providers if "containerservice" in token}
    assert set(through) == {"azure-native:containerservice:getManagedCluster",
                            "azure-native:containerservice:listManagedClusterUserCredentials"}
    assert all(provider.startswith(azure.urn) for provider in through.values())


def test_the_attached_clusters_provider_signs_in_as_the_stack_does():
    """An explicit provider reads none of the stack's azure-native settings: a CI stack that signs in with a
    service principal (azure-native:clientId, clientSecret, tenantId) read the attached cluster as whatever
    identity the machine's environment had, or failed to sign in at all."""
    spec = ClusterSpec.model_validate({"name": "existing", "attach": {"resource_id": MC_ID}})
    ws_spec = WorkspaceSpec.model_validate({"name": "mlw", "resource_group": "rg-ml"})
    config = {"azure-native:clientId": "app-id", "azure-native:clientSecret": "app-secret",
              "azure-native:tenantId": "tenant", "azure-native:environment": "usgovernment",
              "azure-native:useOidc": "false", "azure-native:subscriptionId": "stack-subscription"}
    rec = run(lambda: AksCluster("aks", spec, Workspace("ws", ws_spec, "westeurope"), "westeurope") and None,
              config=config)
    [azure] = [r for r in rec.of_type("pulumi:providers:azure-native") if r.name == "aks-attached-subscription"]
    assert {k: azure.inputs.get(k) for k in ("clientId", "clientSecret", "tenantId", "environment", "useOidc")} == {
        "clientId": "app-id", "clientSecret": "app-secret", "tenantId": "tenant", "environment": "usgovernment",
        "useOidc": "false"}
    assert azure.inputs["subscriptionId"] == "s"  # still the cluster's own subscription, not the stack's
    assert "clientSecret" in azure.secret_inputs


def test_an_attached_cluster_without_a_kubelet_identity_is_named_not_granted_an_empty_principal():
    """A service-principal cluster: ARM would refuse AcrPull for principal ''."""
    from components.cluster import _kubelet_identity

    with pytest.raises(ValueError, match="has no kubelet managed identity .* grant its service principal AcrPull"):
        _kubelet_identity({}, MC_ID)


def test_attach_by_kubeconfig_uses_the_file_and_declares_nothing_in_azure(tmp_path):
    path = tmp_path / "config"
    path.write_text(fake_kubeconfig("https://k8s.example.internal:6443", "onprem"))
    rec = deploy(ClusterSpec.model_validate({"name": "onprem", "attach": {"kubeconfig": str(path)}}), with_workspace=False)
    assert sorted(r.type for r in rec.resources) == ["aks-model-serving:index:AksCluster", PROVIDER]
    assert rec.one(PROVIDER).inputs["kubeconfig"] == path.read_text()
    assert rec.calls == []
    assert rec.outputs["fqdn"] == "k8s.example.internal"
    assert rec.outputs["kubelet"] is None
    assert rec.outputs["fqdns"] == ["k8s.example.internal", "mcr-0001.mcr-msedge.net", "mcr.microsoft.com"]


# ------------------------------------------------------------------ DNS rules


def test_required_fqdns_are_computed_from_the_real_resources(stack):
    st = stack("prod")
    rec = deploy(st.spec.cluster, st.spec.workspace.model_dump(), scoring_dns_label=st.spec.router.dns_label)
    api = rec.one(CLUSTER).outputs["fqdn"]
    logs = rec.one("azure-native:operationalinsights:Workspace").outputs["customerId"]
    assert rec.outputs["fqdns"] == sorted([
        api,
        "acs-mirror.azureedge.net", "login.microsoftonline.com", "management.azure.com", "packages.microsoft.com",
        "packages.aks.azure.com",
        "mcr.microsoft.com", "mcr-0001.mcr-msedge.net",  # MCR and the CDN its layers come from
        "nvcr.io",  # the GPU pool's device plugin
        "auth.docker.io", "production.cloudflare.docker.com", "registry-1.docker.io",  # the connectivity check's busybox
        "mlwprodacr.azurecr.io",
        "mlwprodstorage.blob.core.windows.net", "mlwprodstorage.table.core.windows.net",
        "mlw-prod-scoring.westeurope.cloudapp.azure.com",  # leaf_domain_label and dns_label agree: listed once
        # Container Insights' agent (its rules from the region's handler) and Defender's sensor, both on in fast_prod,
        # report to the workspace's own ingestion names
        "global.handler.control.monitor.azure.com", "westeurope.handler.control.monitor.azure.com",
        "dc.services.visualstudio.com", f"{logs}.ods.opinsights.azure.com", f"{logs}.oms.opinsights.azure.com",
    ])


def test_the_hosts_the_pods_reach_join_required_fqdns_and_the_connectivity_check():
    rec = deploy(cluster_spec(dns={"connectivity_check": True}), reached=["amlws.blob.core.windows.net"])
    assert "amlws.blob.core.windows.net" in rec.outputs["fqdns"]
    checked = next(e["value"] for e in rec.one(JOB).inputs["spec"]["template"]["spec"]["containers"][0]["env"])
    assert "amlws.blob.core.windows.net" in checked.split()


def test_no_monitoring_names_are_required_where_monitoring_and_defender_are_off():
    fqdns = deploy(cluster_spec(monitoring=False, defender=False)).outputs["fqdns"]
    assert [h for h in fqdns if "monitor" in h or "opinsights" in h or "visualstudio" in h] == []
    defender_only = deploy(cluster_spec(monitoring=False, defender=True)).outputs["fqdns"]
    assert [h for h in defender_only if "monitor" in h or "visualstudio" in h] == []
    assert sum(h.endswith((".ods.opinsights.azure.com", ".oms.opinsights.azure.com")) for h in defender_only) == 2


def test_the_scoring_domain_of_a_region_given_by_its_display_name_is_a_dns_name():
    """`West Europe` is westeurope to Azure, not in a DNS name: custom DNS was told to resolve a name with a space."""
    spec = cluster_spec()
    ws_spec = WorkspaceSpec.model_validate({"name": "mlw", "resource_group": "rg-ml"})
    rec = run(lambda: {"fqdns": AksCluster("aks", spec, Workspace("ws", ws_spec, "West Europe"), "West Europe",
                                           scoring_dns_label="mlw-scoring").required_fqdns})
    assert "mlw-scoring.westeurope.cloudapp.azure.com" in rec.outputs["fqdns"]
    assert all(" " not in name for name in rec.outputs["fqdns"])


def test_a_cname_is_the_scoring_domain():
    spec = cluster_spec(ssl={"cname": "score.example.com", "certificate": "c", "key": "k"})
    assert "score.example.com" in deploy(spec).outputs["fqdns"]


def test_connectivity_job_only_when_asked_and_it_checks_every_name_but_the_scoring_domain():
    assert deploy(cluster_spec(ssl={"leaf_domain_label": "score"})).of_type(JOB) == []
    rec = deploy(cluster_spec(ssl={"leaf_domain_label": "score"}, dns={"connectivity_check": True}))
    job = rec.one(JOB)
    container = job.inputs["spec"]["template"]["spec"]["containers"][0]
    checked = next(e["value"] for e in container["env"] if e["name"] == "FQDNS").split()
    assert checked == [h for h in rec.outputs["fqdns"] if h != "score.westeurope.cloudapp.azure.com"]
    assert len(checked) == len(rec.outputs["fqdns"]) - 1
    assert 'echo "FAIL $host' in container["command"][2]  # the log names the failing host
    assert job.inputs["spec"]["backoffLimit"] == 0
    assert job.provider.startswith(rec.one(PROVIDER).urn)


def test_a_failed_connectivity_check_runs_again_on_the_next_up():
    """Pulumi waits again for a resource that failed to become ready, and a failed Job stays failed: once DNS
    was fixed, every later `up` still failed on the old Job until the names it checks changed."""
    rec = deploy(cluster_spec(dns={"connectivity_check": True}))
    assert rec.one(JOB).inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}


def test_private_zone_links_give_registry_blob_and_table_endpoints_and_linked_zones():
    spec = cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}}, dns={"private_zone_links": True})
    rec = deploy(spec, {"registry_sku": "Premium"})
    zones = sorted(r.inputs["privateZoneName"] for r in rec.of_type("azure-native:privatedns:PrivateZone"))
    assert zones == ["privatelink.azurecr.io", "privatelink.blob.core.windows.net", "privatelink.table.core.windows.net"]
    links = rec.of_type("azure-native:privatedns:VirtualNetworkLink")
    assert {link.inputs["virtualNetwork"]["id"] for link in links} == {SUBNET.rsplit("/subnets/", 1)[0]}
    endpoints = {r.name: r.inputs for r in rec.of_type("azure-native:network:PrivateEndpoint")}
    registry_id = rec.one("azure-native:containerregistry:Registry").id
    assert endpoints["aks-registry-pe"]["privateLinkServiceConnections"][0]["privateLinkServiceId"] == registry_id
    assert endpoints["aks-blob-pe"]["privateLinkServiceConnections"][0]["groupIds"] == ["blob"]
    assert {e["subnet"]["id"] for e in endpoints.values()} == {SUBNET}
    assert len(rec.of_type("azure-native:network:PrivateDnsZoneGroup")) == 3


def test_a_hubs_own_private_zones_are_used_not_made_and_linked_again():
    """Azure links a VNet to one zone of a name: a hub's privatelink.blob zone, already linked, made a second
    zone of the name here unlinkable, and the stack failed."""
    hub = "/subscriptions/1/resourceGroups/rg-hub-dns/providers/Microsoft.Network/privateDnsZones/"
    own = {"blob": hub + "privatelink.blob.core.windows.net", "registry": hub + "privatelink.azurecr.io"}
    spec = cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}},
                        dns={"private_zone_links": True, "private_zones": own})
    rec = deploy(spec, {"registry_sku": "Premium"})
    made = rec.of_type("azure-native:privatedns:PrivateZone")
    assert [r.inputs["privateZoneName"] for r in made] == ["privatelink.table.core.windows.net"]
    assert len(rec.of_type("azure-native:privatedns:VirtualNetworkLink")) == 1
    groups = {r.name: r.inputs["privateDnsZoneConfigs"][0]["privateDnsZoneId"]
              for r in rec.of_type("azure-native:network:PrivateDnsZoneGroup")}
    assert groups == {"aks-blob-dns": own["blob"], "aks-registry-dns": own["registry"], "aks-table-dns": made[0].id}


@pytest.mark.parametrize("dns, message", [
    ({"private_zone_links": True, "private_zones": {"blob": "/subscriptions/1/resourceGroups/r/providers/"
                                                            "Microsoft.Network/privateDnsZones/privatelink.azurecr.io"}},
     "private_zones.blob: must be the resource id of a privatelink.blob.core.windows.net zone"),
    ({"private_zones": {"table": "/subscriptions/1/resourceGroups/r/providers/Microsoft.Network/privateDnsZones/"
                                 "privatelink.table.core.windows.net"}}, "private_zones: only used with private_zone_links"),
])
def test_private_zones_must_be_zones_of_their_groups_name(dns, message):
    with pytest.raises(ValueError, match=message):
        cluster_spec(network={"plugin": "azure", "vnet": {"subnet_id": SUBNET}}, dns=dns)


def test_private_zone_links_need_a_vnet_and_a_premium_registry():
    with pytest.raises(ValueError, match="dns.private_zone_links: .* on a vnet"):
        cluster_spec(dns={"private_zone_links": True})
    with pytest.raises(ValueError, match="registry_sku: .*Premium"):
        StackSpec.model_validate({
            "workspace": {"name": "mlw", "resource_group": "rg"},
            "cluster": {"name": "aks", "node_pools": [SYSTEM], "dns": {"private_zone_links": True},
                        "network": {"plugin": "azure", "vnet": {"subnet_id": SUBNET}}},
        })


# ------------------------------------------------------------------ the harness itself


def test_a_failure_inside_an_apply_fails_the_run():
    """Assertions and errors in callbacks are not swallowed: run() waits for them and raises."""
    def program():
        ws = Workspace("ws", WorkspaceSpec(name="mlw", resource_group="rg"), "westeurope")
        return ws.registry_login_server.apply(lambda s: (_ for _ in ()).throw(AssertionError(f"saw {s}")))

    with pytest.raises(AssertionError, match="saw mlwacr.azurecr.io"):
        run(program)


def test_provider_computed_outputs_are_filled_not_left_none():
    rec = deploy(cluster_spec())
    assert all(rec.outputs[k] for k in ("fqdn", "kubelet", "kubeconfig", "node_rg"))
    assert base64.b64decode(base64.b64encode(rec.outputs["kubeconfig"].encode())).decode().startswith("apiVersion")


def test_the_dns_prefix_keeps_to_aks_rules_whatever_the_cluster_name():
    """1-54 letters, digits and hyphens; a cluster name may hold `_` and run to 63."""
    from components.cluster import dns_prefix

    assert dns_prefix("aks_ml_prod") == "aks-ml-prod"
    long = dns_prefix("a" * 53 + "_b" + "c" * 8)
    assert long == "a" * 53 and len(long) <= 54
    mc = deploy(cluster_spec(name="aks_ml_prod")).one(CLUSTER).inputs
    assert mc["dnsPrefix"] == "aks-ml-prod" and mc["resourceName"] == "aks_ml_prod"


def test_pods_wait_for_the_user_pools_the_acr_pull_and_the_subnet_grants(stack):
    """A first `up` otherwise races a GPU pool's creation and the role assignments' propagation: the
    router's LoadBalancer Service needs the cluster identity's rights on the subnet."""
    st = stack("prod")
    rec = deploy(st.spec.cluster, st.spec.workspace.model_dump())
    provider = rec.one("pulumi:providers:kubernetes")
    waited = {r.urn for r in rec.of_type(AGENT_POOL)} | {r.urn for r in rec.of_type(ROLE)
                                                       if r.name.endswith(("acr-pull", "subnet-network-contributor"))}
    assert len(waited) == 3 and waited <= set(provider.dependencies)
