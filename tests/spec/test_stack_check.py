"""Every example stack passes `check`; broken stacks and Azure ML files fail, naming the field."""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from components.check import main as check
from components.stackfile import StackError, load_stack, parse_config, secure_paths

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aks"
CRITICAL = "CriticalAddonsOnly=true:NoSchedule"

BASE = {
    "azure-native:location": "westeurope",
    "aks-model-serving:workspace": {"name": "mlw-test", "resource_group": "rg-test"},
    "aks-model-serving:cluster": {
        "name": "aks-test",
        "cluster_purpose": "fast_prod",
        "node_pools": [
            {"name": "system", "mode": "System", "vm_size": "Standard_D4s_v3", "count": 3},
            {"name": "gpu", "vm_size": "Standard_NC4as_T4_v3", "min_count": 0, "max_count": 2},
        ],
        "network": {"plugin": "azure", "service_cidr": "10.100.0.0/16", "dns_service_ip": "10.100.0.10",
                    "vnet": {"address_space": "10.1.0.0/16", "subnet_prefix": "10.1.0.0/20"}},
    },
    "aks-model-serving:models": [
        {"name": "m", "version": 1, "path": "models/m/1"},
        {"name": "m", "version": 2, "path": "models/m/2"},
    ],
    "aks-model-serving:services": [
        {"name": "svc", "models": ["m:1"], "inference_config": {"entry_script": "score.py", "source_directory": "src"}},
    ],
    "aks-model-serving:endpoints": [
        {"name": "epx", "versions": [
            {"version_name": "control", "models": ["m:1"], "inference_config": {"entry_script": "score.py"},
             "traffic_percentile": 80, "is_default": True, "is_control_version_type": True},
            {"version_name": "treat", "models": ["m:2"], "inference_config": {"entry_script": "score.py"},
             "traffic_percentile": 20},
        ]},
    ],
}

W, C, S, E = ("aks-model-serving:" + k for k in ("workspace", "cluster", "services", "endpoints"))


def write_stack(tmp_path: Path, config: dict) -> Path:
    """The stack in a project of its own, with the entry scripts BASE names (check looks for them)."""
    (tmp_path / "Pulumi.yaml").write_text("name: aks-model-serving\nruntime: python\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for image in ("scoring_image", "router_image"):  # a cluster stack's images are built from them
        (tmp_path / image).mkdir(exist_ok=True)
        (tmp_path / image / "Dockerfile").write_text((ROOT / image / "Dockerfile").read_text())
    for script in (tmp_path / "score.py", tmp_path / "src" / "score.py"):
        script.parent.mkdir(exist_ok=True)
        script.write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "stacks").mkdir(exist_ok=True)
    path = tmp_path / "stacks" / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def _set(doc: dict, keys: list, value) -> None:
    for k in keys[:-1]:
        doc = doc[k]
    if value is DELETE:
        del doc[keys[-1]]
    else:
        doc[keys[-1]] = value


DELETE = object()
SVC0 = [S, 0]
CL = [C]
NET = [C, "network"]
EP0 = [E, 0]

# (id, edits [(path, value)], expected "path: ..." prefix of one problem line)
BROKEN = [
    # Address room: azure CNI puts every node's 30 pods on the subnet; kubenet gives each node a /24.
    ("cni-subnet-too-small", [(NET + ["vnet", "subnet_prefix"], "10.1.0.0/25")],
     "cluster.network.vnet.subnet_prefix: 10.1.0.0/25 has 123 usable addresses; 7 nodes (every pool at its largest, "
     "plus one each for upgrades), each with its 30 pods (azure CNI) need 217"),
    ("kubenet-pod-cidr-too-small", [(NET, {"plugin": "kubenet", "pod_cidr": "10.244.0.0/23"})],
     "cluster.network.pod_cidr: 10.244.0.0/23 holds 2 node pod ranges (a /24 each, kubenet); 7 nodes (every pool at "
     "its largest, plus one each for upgrades) need /21 or larger"),
    ("arm64-pool", [(CL + ["node_pools", 0, "vm_size"], "Standard_D4ps_v5")], "cluster.node_pools[0].vm_size: Standard_D4ps_v5 is an Arm64 size"),
    # Valid by `check`, a traceback in plan: the scorer files records under its models.
    ("collection-without-models", [(SVC0 + ["models"], []), (SVC0 + ["collect_model_data"], True)],
     "services[0].collect_model_data: collected records are filed under the models a deployment serves"),
    ("gpu-pool-with-its-own-taint", [(CL + ["node_pools", 1, "taints"], ["dedicated=ml:NoSchedule"])],
     "cluster.node_pools[1].taints: a gpu pool is tainted sku=gpu:NoSchedule"),
    ("label-value-with-a-space", [(CL + ["node_pools", 0, "labels"], {"team": "data science"})],
     "cluster.node_pools[0].labels: the value of team, 'data science', is not a Kubernetes label value"),
    ("label-key-too-long", [(CL + ["node_pools", 0, "labels"], {"k" * 64: "v"})], "cluster.node_pools[0].labels: 'kkk"),
    ("dns-ip-broadcast", [(NET + ["dns_service_ip"], "10.100.255.255")], "cluster.network.dns_service_ip: 10.100.255.255 is service_cidr's broadcast"),
    ("router-in-kube-system", [(["aks-model-serving:router"], {"namespace": "kube-system"})], "router.namespace: 'kube-system' is Kubernetes' own; the stack adopts its namespace (destroy keeps it)"),
    ("internal-lb-subnet-id", [(CL + ["load_balancer"], {"type": "InternalLoadBalancer", "subnet": SUBNET})],
     "cluster.load_balancer.subnet: '/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aks' "
     "is a path; give the subnet's name, in the cluster's VNet (e.g. 'aks')"),
    ("dns-label-of-two", [(["aks-model-serving:router"], {"dns_label": "ml"})], "router.dns_label:"),
    ("unknown-top-key", [(["aks-model-serving:clusterr"], {})], "clusterr: unknown field"),
    ("unknown-service-field", [(SVC0 + ["cpu_core"], 1)], "services[0].cpu_core: unknown field"),
    # A key is sent as `Authorization: Bearer <key>`: one that a header cannot carry could never be.
    ("key-with-a-line-break", [(SVC0 + ["primary_key"], "s3cret\nkey")],
     "services[0].primary_key: a key is sent in an Authorization header, which carries only visible ASCII"),
    ("key-with-a-space-at-its-end", [(SVC0 + ["secondary_key"], "s3cret ")],
     "services[0].secondary_key: a key is sent in an Authorization header, which carries only visible ASCII"),
    ("one-counter-for-both-keys", [(SVC0 + ["key_rotation"], 2)],
     "services[0].key_rotation: keys are rotated one at a time, as Azure ML's regen_key: primary_key_rotation and "
     "secondary_key_rotation (set both to 2 to keep the keys key_rotation made)"),
    ("key-and-token-auth", [(SVC0 + ["token_auth_enabled"], True)], "services[0].token_auth_enabled:"),
    ("autoscale-with-num-replicas", [(SVC0 + ["autoscale_enabled"], True), (SVC0 + ["num_replicas"], 3)], "services[0].num_replicas:"),
    ("min-over-max", [(SVC0 + ["autoscale_min_replicas"], 5), (SVC0 + ["autoscale_max_replicas"], 2)], "services[0].autoscale_min_replicas:"),
    ("target-zero", [(SVC0 + ["autoscale_target_utilization"], 0)], "services[0].autoscale_target_utilization:"),
    ("target-over-100", [(SVC0 + ["autoscale_target_utilization"], 120)], "services[0].autoscale_target_utilization:"),
    ("cpu-limit-below-request", [(SVC0 + ["cpu_cores"], 2), (SVC0 + ["cpu_cores_limit"], 1)], "services[0].cpu_cores_limit:"),
    ("memory-limit-below-request", [(SVC0 + ["memory_gb"], 4), (SVC0 + ["memory_gb_limit"], 1)], "services[0].memory_gb_limit:"),
    # Rendered in millicores and MiB: less than one would be a request of 0.
    ("cpu-below-a-millicore", [(SVC0 + ["cpu_cores"], 0.0004)], "services[0].cpu_cores: Input should be greater than or equal to 0.001"),
    ("memory-below-a-mebibyte", [(SVC0 + ["memory_gb_limit"], 0.0001)], "services[0].memory_gb_limit: Input should be greater than or equal to 0.001"),
    ("negative-cpu", [(SVC0 + ["cpu_cores"], -1)], "services[0].cpu_cores:"),
    # Kubernetes' quantities, as a platform engineer writes them: told the number Azure ML's settings mean.
    ("memory-as-a-quantity", [(SVC0 + ["memory_gb"], "1536Mi")],
     "services[0].memory_gb: '1536Mi' is a Kubernetes quantity; memory_gb is a number of GB (GiB, as Azure ML's): write 1.5"),
    ("memory-limit-in-decimal-gigabytes", [(SVC0 + ["memory_gb_limit"], "2G")],
     "services[0].memory_gb_limit: '2G' is a Kubernetes quantity; memory_gb_limit is a number of GB (GiB, as Azure ML's): "
     "write 1.863"),
    ("cpu-in-millicores", [(SVC0 + ["cpu_cores"], "500m")],
     "services[0].cpu_cores: '500m' is a Kubernetes quantity; cpu_cores is a number of cores: write 0.5"),
    ("router-memory-as-a-quantity", [(["aks-model-serving:router"], {"memory_gb": "1Gi"})],
     "router.memory_gb: '1Gi' is a Kubernetes quantity; memory_gb is a number of GB (GiB, as Azure ML's): write 1"),
    ("gpu-without-gpu-pool", [(CL + ["node_pools"], [{"name": "system", "mode": "System", "vm_size": "Standard_D4s_v3", "count": 3}]),
                              (SVC0 + ["gpu_cores"], 1)], "services[0].gpu_cores:"),
    ("fpga-without-fpga-pool", [(SVC0 + ["fpga_cores"], 1)], "services[0].fpga_cores:"),
    ("too-many-models", [(["aks-model-serving:models"], [{"name": f"m{i}", "path": f"p/{i}"} for i in range(1001)]),
                         (SVC0 + ["models"], [f"m{i}:1" for i in range(1001)])], "services[0].models:"),
    ("undeclared-model", [(SVC0 + ["models"], ["nope:1"])], "services[0].models[0]:"),
    # Fetched twice to one folder, and AZUREML_MODEL_DIR then the root of two models, not m/2 (the entry script's path).
    ("same-model-by-two-refs", [(SVC0 + ["models"], ["m", "m:2"])],
     "services[0].models[1]: 'm:2' is models[0] ('m') again, both m:2 (m alone is its latest version); list each model once"),
    ("seven-versions", [(EP0 + ["versions"], [
        {"version_name": f"ver{i}", "inference_config": {"entry_script": "s.py"}, "is_default": i == 0} for i in range(7)])],
     "endpoints[0].versions:"),
    ("traffic-over-100", [(EP0 + ["versions", 1, "traffic_percentile"], 30)], "endpoints[0].versions: traffic_percentile sums to 110"),
    ("two-defaults", [(EP0 + ["versions", 1, "is_default"], True)], "endpoints[0].versions: 2 default versions"),
    ("no-default", [(EP0 + ["versions", 0, "is_default"], False)], "endpoints[0].versions: no version is_default"),
    ("two-controls", [(EP0 + ["versions", 1, "is_control_version_type"], True)], "endpoints[0].versions: 2 control versions"),
    ("duplicate-version-name", [(EP0 + ["versions", 1, "version_name"], "control")], "endpoints[0].versions: version_name 'control'"),
    ("percentile-over-100", [(EP0 + ["versions", 1, "traffic_percentile"], 101)], "endpoints[0].versions[1].traffic_percentile:"),
    ("endpoint-no-versions", [(EP0 + ["versions"], [])], "endpoints[0].versions:"),
    ("dns-ip-outside-service-cidr", [(NET + ["dns_service_ip"], "10.200.0.10")], "cluster.network.dns_service_ip:"),
    ("dns-ip-reserved", [(NET + ["dns_service_ip"], "10.100.0.1")], "cluster.network.dns_service_ip:"),
    ("service-cidr-overlaps-vnet", [(NET + ["service_cidr"], "10.1.0.0/16"), (NET + ["dns_service_ip"], "10.1.0.10")], "cluster.network.service_cidr:"),
    ("service-cidr-overlaps-pod-cidr", [(NET + ["plugin"], "kubenet"), (NET + ["pod_cidr"], "10.100.0.0/14")], "cluster.network.service_cidr:"),
    ("pod-cidr-with-cni", [(NET + ["pod_cidr"], "10.244.0.0/16")], "cluster.network.pod_cidr:"),
    ("cni-without-vnet", [(NET + ["vnet"], DELETE)], "cluster.network.vnet:"),
    ("bad-cidr", [(NET + ["service_cidr"], "10.100.0.0/33")], "cluster.network.service_cidr:"),
    ("subnet-outside-vnet", [(NET + ["vnet", "subnet_prefix"], "10.9.0.0/20")], "cluster.network.vnet.subnet_prefix:"),
    ("subnet-id-and-new-vnet", [(NET + ["vnet", "subnet_id"], SUBNET)], "cluster.network.vnet.subnet_id:"),
    # The VNet of an existing subnet is someone else's: its DNS servers are set there, and these would be dropped.
    ("dns-servers-on-an-existing-subnet", [(NET + ["vnet"], {"subnet_id": SUBNET, "dns_servers": ["10.10.0.4"]})],
     "cluster.network.vnet.dns_servers: set on a new VNet only; an existing subnet's VNet keeps the DNS servers its "
     "owner gave it (set them there)"),
    ("fast-prod-too-small", [(CL + ["node_pools", 0, "count"], 1)], "cluster.node_pools:"),
    ("no-system-pool", [(CL + ["node_pools", 0, "mode"], "User")], "cluster.node_pools:"),
    ("pool-name-too-long", [(CL + ["node_pools", 1, "name"], "gpupoolnumberone")], "cluster.node_pools[1].name:"),
    ("pool-min-over-max", [(CL + ["node_pools", 1, "min_count"], 3)], "cluster.node_pools[1].min_count:"),
    ("gpu-accelerator-on-cpu-size", [(CL + ["node_pools", 1, "vm_size"], "Standard_D4s_v3"), (CL + ["node_pools", 1, "accelerator"], "gpu")],
     "cluster.node_pools[1].accelerator:"),
    ("bad-taint", [(CL + ["node_pools", 1, "taints"], ["sku gpu"])], "cluster.node_pools[1].taints[0]:"),
    # AKS refuses a taint whose key or value Kubernetes would not take as a label's, at pulumi up.
    ("taint-key-with-a-leading-dash", [(CL + ["node_pools"], BASE[C]["node_pools"] + [
        {"name": "cpu", "vm_size": "Standard_D4s_v3", "count": 1, "taints": ["-team=ml:NoSchedule"]}])],
     "cluster.node_pools[2].taints: the key of '-team=ml:NoSchedule', '-team', is not a Kubernetes label key"),
    ("taint-value-too-long", [(CL + ["node_pools"], BASE[C]["node_pools"] + [
        {"name": "cpu", "vm_size": "Standard_D4s_v3", "count": 1, "taints": ["team=" + "v" * 64 + ":NoSchedule"]}])],
     "cluster.node_pools[2].taints: the value of 'team=vvv"),
    ("gpu-accelerator-on-amd-size", [(CL + ["node_pools", 1, "vm_size"], "Standard_NV8as_v4"),
                                     (CL + ["node_pools", 1, "accelerator"], "gpu")], "cluster.node_pools[1].accelerator:"),
    ("gpu-service-on-amd-pool", [(CL + ["node_pools", 1, "vm_size"], "Standard_NV8as_v4"), (SVC0 + ["gpu_cores"], 1)],
     "services[0].gpu_cores: the cluster has no GPU pool"),
    ("replica-needs-more-gpus-than-a-node", [(SVC0 + ["gpu_cores"], 2)],
     "services[0].gpu_cores: 2 GPUs per replica, but the largest GPU node (Standard_NC4as_T4_v3) has 1"),
    ("start-needs-more-gpus-than-the-pools", [(SVC0 + ["gpu_cores"], 1), (SVC0 + ["num_replicas"], 3)],
     "services[0].gpu_cores: the deployments start with 3 GPUs (services[0] 3 x 1), and the GPU pools hold at most 2"),
    # Azure ML's own GPU examples name Standard_NC6, of a series Azure retired in 2023: AKS refuses it at pulumi up.
    ("retired-gpu-size", [(CL + ["node_pools", 1, "vm_size"], "Standard_NC6")],
     "cluster.node_pools[1].vm_size: Standard_NC6 is of a GPU series Azure retired in 2023"),
    ("retired-gpu-size-v2", [(CL + ["node_pools", 1, "vm_size"], "Standard_NC24rs_v2")],
     "cluster.node_pools[1].vm_size: Standard_NC24rs_v2 is of a GPU series Azure retired in 2023"),
    ("bad-purpose", [(CL + ["cluster_purpose"], "prod")], "cluster.cluster_purpose:"),
    ("internal-lb-without-subnet", [(CL + ["load_balancer"], {"type": "InternalLoadBalancer"})], "cluster.load_balancer.subnet:"),
    ("tls-cname-without-key", [(CL + ["ssl"], {"cname": "a.example.com", "certificate": "PEM"})], "cluster.ssl.key:"),
    ("tls-cname-alone", [(CL + ["ssl"], {"cname": "a.example.com"})], "cluster.ssl.certificate: a cname needs its certificate and key"),
    ("tls-certificate-without-cname", [(CL + ["ssl"], {"certificate": "PEM", "key": "PEM"})], "cluster.ssl.cname:"),
    ("tls-two-sources", [(CL + ["ssl"], {"cname": "a.example.com", "certificate": "PEM", "key": "PEM", "leaf_domain_label": "abc"})],
     "cluster.ssl.leaf_domain_label:"),
    # The name clients call: a URL's scheme or path made the scoring_uri outputs https://https://...
    ("tls-cname-a-url", [(CL + ["ssl"], {"cname": "https://scoring.example.com/", "certificate": "PEM", "key": "PEM"})],
     "cluster.ssl.cname: 'https://scoring.example.com/' is not a DNS name"),
    ("tls-cname-with-a-port", [(CL + ["ssl"], {"cname": "scoring.example.com:443", "certificate": "PEM", "key": "PEM"})],
     "cluster.ssl.cname: 'scoring.example.com:443' is not a DNS name"),
    # A Certificate's issuerRef names a ClusterIssuer (a Kubernetes name): any other never issues the router's TLS Secret.
    ("tls-issuer-not-a-name", [(CL + ["ssl"], {"cert_manager_issuer": "Let's Encrypt"})],
     "cluster.ssl.cert_manager_issuer: the value is not allowed: the name of a ClusterIssuer"),  # cert: not repeated
    ("attach-with-pools", [(CL + ["attach"], {"kubeconfig": "~/.kube/config"})], "cluster.node_pools:"),
    ("attach-bad-resource-id", [(CL + ["node_pools"], []), (CL + ["attach"], {"resource_id": "/subscriptions/x/aks"})], "cluster.attach.resource_id:"),
    ("uppercase-service-name", [(SVC0 + ["name"], "MySvc")], "services[0].name:"),
    ("service-name-too-long", [(SVC0 + ["name"], "s" * 40)], "services[0].name:"),
    ("service-name-trailing-dash", [(SVC0 + ["name"], "svc-")], "services[0].name:"),
    ("bad-namespace", [(SVC0 + ["namespace"], "Models_NS")], "services[0].namespace:"),
    ("bad-storage-account-name", [([W, "storage_account_name"], "My-Storage")], "workspace.storage_account_name:"),
    ("derived-registry-name-too-short", [([W, "name"], "a--")], "workspace.registry_name: the name derived"),
    ("duplicate-names", [(EP0 + ["name"], "svc")], "services: the name 'svc' is used twice"),
    ("entry-script-not-python", [(SVC0 + ["inference_config", "entry_script"], "score.r")], "services[0].inference_config.entry_script:"),
    ("no-inference-config", [(SVC0 + ["inference_config"], DELETE)], "services[0].inference_config:"),
    ("model-two-sources", [(["aks-model-serving:models", 0, "url"], "https://acct1.blob.core.windows.net/m/1")], "models[0].path:"),
    ("model-version-zero", [(["aks-model-serving:models", 0, "version"], 0)], "models[0].version:"),
    ("unnamespaced-key", [(["services"], [])], "config.services:"),
    ("cluster-without-workspace", [([W], DELETE)], "workspace:"),
    # Kubernetes names: Pulumi cannot see two resources of different URNs share one.
    ("service-named-like-the-router", [(SVC0 + ["name"], "model-router")], "services[0].name: 'model-router' is the router's name"),
    ("service-named-like-a-router-part", [(SVC0 + ["name"], "model-router-peers")], "services[0].name: 'model-router-peers' is the router's"),
    ("service-named-like-an-endpoint-version", [(SVC0 + ["name"], "epx-treat")],
     "endpoints[0].versions[1].version_name: its Deployment 'epx-treat' is also services[0].name's"),
    ("endpoint-version-name-too-long", [(EP0 + ["name"], "e" * 32), (EP0 + ["versions", 1, "version_name"], "t" * 32)],
     "endpoints[0].versions[1].version_name:"),
    ("pool-count-outside-bounds", [(CL + ["node_pools", 1, "count"], 5)], "cluster.node_pools[1].count: 5 is outside"),
    ("system-pool-without-nodes", [(CL + ["cluster_purpose"], "dev_test"), (CL + ["node_pools", 0, "count"], 0)],
     "cluster.node_pools[0].count:"),
    ("pod-cidr-overlaps-vnet", [(NET + ["plugin"], "kubenet"), (NET + ["pod_cidr"], "10.1.128.0/17")], "cluster.network.pod_cidr:"),
    ("router-dns-label-differs-from-leaf-label", [(CL + ["ssl"], {"leaf_domain_label": "scoring"}),
                                                  (["aks-model-serving:router"], {"dns_label": "other"})], "router.dns_label:"),
    ("cuda-version-without-gpu", [(SVC0 + ["inference_config", "environment"], {"cuda_version": "11.8"})],
     "services[0].inference_config.environment.cuda_version: it picks"),
    ("cuda-version-not-carried", [(SVC0 + ["inference_config", "environment"], {"cuda_version": "10.0", "gpu": True})],
     "services[0].inference_config.environment.cuda_version: '10.0'"),
    ("udr-on-a-new-vnet", [(NET + ["outbound_type"], "userDefinedRouting")], "cluster.network.outbound_type: userDefinedRouting"),
    ("managed-nat-on-a-vnet", [(NET + ["outbound_type"], "managedNATGateway")], "cluster.network.outbound_type: managedNATGateway"),
    ("azure-network-policy-on-kubenet", [(NET + ["plugin"], "kubenet"), (NET + ["policy"], "azure")],
     "cluster.network.policy: azure network policy needs azure CNI"),
    ("service-cidr-aks-reserves", [(NET + ["service_cidr"], "172.30.0.0/16"), (NET + ["dns_service_ip"], "172.30.0.10")],
     "cluster.network.service_cidr: 172.30.0.0/16 overlaps 172.30.0.0/16, which AKS reserves"),
    ("internal-lb-with-dns-label", [(CL + ["load_balancer"], {"type": "InternalLoadBalancer", "subnet": "aks"}),
                                    (["aks-model-serving:router"], {"dns_label": "scoring"})], "router.dns_label:"),
    ("service-cidr-larger-than-a-slash-12", [(NET + ["service_cidr"], "10.96.0.0/11"), (NET + ["dns_service_ip"], "10.96.0.10")],
     "cluster.network.service_cidr: 10.96.0.0/11 is larger than the /12 AKS allows"),
    ("pool-of-one-vcpu", [(CL + ["node_pools", 0, "vm_size"], "Standard_DS1_v2")],
     "cluster.node_pools[0].vm_size: Standard_DS1_v2 has fewer than 2 vCPUs (1), which AKS refuses"),
    ("burstable-system-pool", [(CL + ["node_pools", 0, "vm_size"], "Standard_B4ms")],
     "cluster.node_pools[0].vm_size: Standard_B4ms is a B-series (burstable) size, which AKS does not support for a System pool"),
    ("kubenet-over-400-nodes", [(NET, {"plugin": "kubenet", "pod_cidr": "10.244.0.0/14"}), (CL + ["node_pools", 1, "max_count"], 398)],
     "cluster.node_pools: kubenet clusters hold at most 400 nodes, and these pools reach 401 at their largest"),
    ("label-under-aks-prefix", [(CL + ["node_pools", 1, "labels"], {"kubernetes.azure.com/mode": "user"})],
     "cluster.node_pools[1].labels: 'kubernetes.azure.com/mode' is under kubernetes.azure.com/, which AKS reserves"),
    ("label-under-kubernetes-prefix", [(CL + ["node_pools", 0, "labels"], {"kubernetes.io/role": "ml"})],
     "cluster.node_pools[0].labels: 'kubernetes.io/role' is under kubernetes.io/, which AKS reserves"),
    # The kubelet sets no label of Kubernetes' own prefixes (NodeRestriction) but under kubelet.kubernetes.io/ and
    # node.kubernetes.io/: a node given one never registers, and the pool's creation fails at pulumi up.
    ("label-under-a-kubernetes-subdomain", [(CL + ["node_pools", 1, "labels"], {"node-role.kubernetes.io/gpu": ""})],
     "cluster.node_pools[1].labels: 'node-role.kubernetes.io/gpu' is under node-role.kubernetes.io/, which the kubelet"),
    ("label-under-k8s-io", [(CL + ["node_pools", 1, "labels"], {"k8s.io/team": "ml"})],
     "cluster.node_pools[1].labels: 'k8s.io/team' is under k8s.io/, which the kubelet"),
    ("system-pool-with-a-taint-of-its-own", [(CL + ["node_pools", 0, "taints"], ["dedicated=system:NoSchedule"])],
     "cluster.node_pools[0].taints: a System pool runs the cluster's own pods"),
    ("critical-addons-only-without-a-user-pool-for-the-router", [(CL + ["node_pools", 0, "taints"], [CRITICAL])],
     f"cluster.node_pools[0].taints: {CRITICAL} keeps the router and the scorers off the System pool, and no User pool"),
    ("critical-addons-only-on-a-gpu-system-pool", [
        (CL + ["cluster_purpose"], "dev_test"),
        (CL + ["node_pools"], [{"name": "system", "mode": "System", "vm_size": "Standard_NC4as_T4_v3", "count": 1, "taints": [CRITICAL]},
                               {"name": "cpu", "vm_size": "Standard_D4s_v3", "count": 1}])],
     f"cluster.node_pools[0].taints: {CRITICAL} would keep the scorers off this gpu pool"),
    ("internal-lb-in-a-subnet-the-new-vnet-lacks", [(CL + ["load_balancer"], {"type": "InternalLoadBalancer", "subnet": "ilb"})],
     "cluster.load_balancer.subnet: the vnet created here has one subnet, 'aks', not 'ilb'"),
    ("attach-by-both", [(CL + ["node_pools"], []), (CL + ["attach"], {
        "resource_id": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks",
        "kubeconfig": "~/.kube/config"})], "cluster.attach.resource_id: attach by exactly one of resource_id or kubeconfig"),
    ("attach-by-neither", [(CL + ["node_pools"], []), (CL + ["attach"], {})],
     "cluster.attach.resource_id: attach by exactly one of resource_id or kubeconfig"),
    # fast_prod and dense_prod: at least 3 nodes and 12 vCPUs, both, in CPU pools.
    ("fast-prod-enough-nodes-too-few-vcpus", [(CL + ["node_pools", 0, "vm_size"], "Standard_D2s_v3")],
     "cluster.node_pools: cluster_purpose fast_prod needs at least 3 nodes and 12 vCPUs in CPU pools (has 3 nodes, 6 vCPUs)"),
    ("fast-prod-enough-vcpus-too-few-nodes", [(CL + ["node_pools", 0, "vm_size"], "Standard_D16s_v3"), (CL + ["node_pools", 0, "count"], 2)],
     "cluster.node_pools: cluster_purpose fast_prod needs at least 3 nodes and 12 vCPUs in CPU pools (has 2 nodes, 32 vCPUs)"),
    ("fast-prod-gpu-nodes-do-not-count", [(CL + ["node_pools", 0, "count"], 2), (CL + ["node_pools", 1, "min_count"], 1)],
     "cluster.node_pools: cluster_purpose fast_prod needs at least 3 nodes and 12 vCPUs in CPU pools (has 2 nodes, 8 vCPUs)"),
    ("dense-prod-too-few-nodes", [(CL + ["cluster_purpose"], "dense_prod"), (CL + ["node_pools", 0, "count"], 2)],
     "cluster.node_pools: cluster_purpose dense_prod needs at least 3 nodes and 12 vCPUs in CPU pools (has 2 nodes, 8 vCPUs)"),
    ("dense-prod-too-few-vcpus", [(CL + ["cluster_purpose"], "dense_prod"), (CL + ["node_pools", 0, "vm_size"], "Standard_D2s_v3")],
     "cluster.node_pools: cluster_purpose dense_prod needs at least 3 nodes and 12 vCPUs in CPU pools (has 3 nodes, 6 vCPUs)"),
    ("gpu-and-fpga-cores", [(SVC0 + ["gpu_cores"], 1), (SVC0 + ["fpga_cores"], 1)],
     "services[0].fpga_cores: a replica uses GPU or FPGA cores, not both"),
    ("model-declared-twice", [(["aks-model-serving:models", 1, "version"], 1)], "models: m:1 is declared twice"),
    # A replica no node it can land on has room for: the CPU pool has 4 vCPUs, the GPU pool's nodes 4 too.
    ("cpu-beyond-the-largest-node", [(SVC0 + ["cpu_cores"], 8)],
     "services[0].cpu_cores: 8 per replica, but the largest node it can run on (Standard_D4s_v3, pool system) has 4 vCPUs"),
    ("gpu-replica-cpu-beyond-its-node", [(SVC0 + ["gpu_cores"], 1), (SVC0 + ["cpu_cores"], 4)],
     "services[0].cpu_cores: 4 per replica, but the largest node it can run on (Standard_NC4as_T4_v3, pool gpu) has 4 vCPUs"),
    # Paths in the user's own keys, values where they say what is wrong, names in words.
    ("namespace-misspelt", [(["aks-modelserving:services"], [])],
     "config.aks-modelserving:services: unknown namespace aks-modelserving; did you mean aks-model-serving:services?"),
    ("azureml-key-misspelt", [(SVC0 + ["azureml"], {"deploymnt_config": "x.json"})],
     "services[0].azureml.deploymnt_config: unknown field"),
    ("setting-with-capitals", [(["aks-model-serving:Services"], [])], "Services: unknown field"),
    ("setting-with-a-dot", [(["aks-model-serving:local.router_port"], 8891)], "local.router_port: unknown field"),
    ("variable-not-a-string", [(SVC0 + ["inference_config", "environment"], {"environment_variables": {"PORT": 80}})],
     "services[0].inference_config.environment.environment_variables.PORT: a number where text is expected; quote it"),
    ("memory-in-kubernetes-units", [(SVC0 + ["memory_gb"], "1Gi")],
     "services[0].memory_gb: '1Gi' is a Kubernetes quantity; memory_gb is a number of GB (GiB, as Azure ML's): write 1"),
    ("service-name-with-capitals", [(SVC0 + ["name"], "Iris_svc")],
     "services[0].name: 'Iris_svc' is not allowed: 3-32 lowercase letters, digits or '-', starting with a letter"),
    ("internal-lb-with-leaf-domain-label", [(CL + ["load_balancer"], {"type": "InternalLoadBalancer", "subnet": "aks"}),
                                            (CL + ["ssl"], {"leaf_domain_label": "scoring"})], "cluster.ssl.leaf_domain_label:"),
]


@pytest.mark.parametrize("name,edits,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_stack_names_the_field(tmp_path, capsys, name, edits, expected):
    config = copy.deepcopy(BASE)
    for keys, value in edits:
        _set(config, keys, value)
    path = write_stack(tmp_path, config)
    assert check([str(path)]) == 2
    out = capsys.readouterr().out
    problems = [line.strip() for line in out.splitlines()[1:]]
    assert any(p.startswith(expected) for p in problems), f"{expected!r} not among:\n{out}"
    assert "Traceback" not in out


def test_a_stack_or_azure_ml_file_that_is_not_utf8_is_named_not_a_traceback(tmp_path, capsys):
    stack = write_stack(tmp_path, BASE)
    stack.write_bytes(stack.read_bytes() + b"# \xff\n")
    aml = tmp_path / "deploymentconfig.json"
    aml.write_bytes(b'{"computeType": "aks", "description": "\xff"}')
    # A file an inferenceconfig.json names: extraDockerFileSteps.
    (tmp_path / "steps.txt").write_bytes(b"RUN echo \xff\n")
    inference = tmp_path / "inferenceconfig.json"
    inference.write_text(json.dumps({"entryScript": "score.py", "extraDockerFileSteps": "steps.txt"}))
    for path in (stack, aml, inference):
        assert check([str(path)]) == 2
        out = capsys.readouterr().out
        assert "not UTF-8 text" in out and "Traceback" not in out


def test_traffic_that_sums_to_100_in_floats_is_accepted(tmp_path, capsys):
    """26.4 + 70.4 + 3.2 is 100.00000000000001 as floats."""
    config = copy.deepcopy(BASE)
    versions = config[E][0]["versions"]
    versions[0]["traffic_percentile"], versions[1]["traffic_percentile"] = 26.4, 70.4
    versions.append({**versions[1], "version_name": "third", "traffic_percentile": 3.2})
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out


def test_constrained_core_sizes_count_their_active_vcpus(tmp_path, capsys):
    """Standard_E8-4ds_v4 has 4 vCPUs: three make the 12 a fast_prod cluster needs, not 0."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"][0]["vm_size"] = "Standard_E8-4ds_v4"
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out
    config[C]["node_pools"][0]["vm_size"] = "Standard_E4-2ds_v4"
    assert check([str(write_stack(tmp_path, config))]) == 2
    assert "(has 3 nodes, 6 vCPUs)" in capsys.readouterr().out


@pytest.mark.parametrize("size,count", [
    ("Standard_D4", 8), ("Standard_DS3", 4), ("Standard_D11_v2_Promo", 2), ("Standard_D3_v2", 4), ("Standard_A4", 8),
    ("Standard_A9", 16), ("Standard_A4_v2", 4), ("Standard_GS3", 8), ("Standard_D4s_v3", 4), ("Standard_E96-48ads_v5", 48),
])
def test_sizes_numbered_by_generation_count_their_vcpus(size, count):
    """Standard_D4 (v1) has 8 vCPUs, read as 4: a replica of 4 cores on it was refused as never schedulable."""
    from components.spec import vcpus

    assert vcpus(size) == count


def test_what_aks_takes_at_the_edges_of_its_size_and_count_rules_passes(tmp_path, capsys):
    """A G1 has 2 vCPUs (G sizes are numbered by generation), a User pool may be burstable, a kubenet
    cluster may reach 400 nodes and the service range may be a /12."""
    config = copy.deepcopy(BASE)
    config[C]["cluster_purpose"] = "dev_test"
    config[C]["node_pools"][0] |= {"vm_size": "Standard_G1", "count": 1}
    config[C]["node_pools"][1]["max_count"] = 398  # 1 + 398 + 1
    config[C]["node_pools"].append({"name": "burst", "vm_size": "Standard_B2s", "count": 1})
    config[C]["network"] = {"plugin": "kubenet", "pod_cidr": "10.244.0.0/14", "service_cidr": "10.96.0.0/12",
                            "dns_service_ip": "10.96.0.10"}
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("purpose", ["fast_prod", "dense_prod", "dev_test"])
def test_a_cluster_without_node_pools_gets_a_system_pool_its_purpose_accepts(tmp_path, capsys, purpose):
    """Azure ML's AksCompute defaults: 3 nodes of Standard_D3_v2 (4 vCPUs), the 12 a production cluster needs; one
    for dev_test. A stack that leaves node_pools out must pass the size rule its own default is measured by."""
    from components.spec import ClusterSpec

    config = copy.deepcopy(BASE)
    config[C]["cluster_purpose"] = purpose
    del config[C]["node_pools"]
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out
    pools = ClusterSpec(name="aks-test", cluster_purpose=purpose).node_pools
    assert [(p.name, p.mode, p.vm_size, p.count) for p in pools] == [
        ("system", "System", "Standard_D3_v2", 1 if purpose == "dev_test" else 3)]


def test_a_system_pool_tainted_critical_addons_only_passes_beside_an_untainted_user_pool(tmp_path, capsys):
    """AKS recommends the taint; the router and the scorers then run on the User pool."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"][0]["taints"] = [CRITICAL]
    config[C]["node_pools"].append({"name": "cpu", "vm_size": "Standard_D4s_v3", "count": 2, "labels": {"node.example.com/team": "ml"}})
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out


def test_base_stack_is_valid(tmp_path, capsys):
    """The table's broken stacks differ from this one only by their edits."""
    assert check([str(write_stack(tmp_path, BASE))]) == 0
    out = capsys.readouterr().out
    assert "stack t: valid" in out
    # The names Azure wants unique across all its customers, and what to do when one is taken.
    workspace = BASE["aks-model-serving:workspace"]
    derived = "".join(c for c in workspace["name"].lower() if c.isalnum())
    assert f"registry {derived}acr, storage account {derived}storage: global names" in out and "storage_account_name" in out


@pytest.mark.parametrize("stack", sorted(p.name for p in (ROOT / "stacks").glob("Pulumi.*.yaml")))
def test_example_stacks_pass_check(stack):
    proc = subprocess.run([sys.executable, "-m", "components", "check", f"stacks/{stack}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout.splitlines()[0]


def test_check_of_a_cluster_stack_needs_nothing_of_the_infra_extra(tmp_path):
    """check is what `make local` installs for (not the `infra` extra): on a cluster stack it imported the whole
    program, and once the TOML writer an image's build uses."""
    infra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["infra"]
    for requirement in infra:
        module = re.match(r"[A-Za-z0-9_.-]+", requirement).group().replace("-", "_")
        blocker = tmp_path / "blocker" / module
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text(f"raise ModuleNotFoundError('no {module} here', name={module!r})\n")
    proc = subprocess.run([sys.executable, "-m", "components", "check", "stacks/Pulumi.dev.yaml"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path / "blocker")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stack dev: valid" in proc.stdout


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    config = copy.deepcopy(BASE)
    config[S][0] |= {"token_auth_enabled": True, "cpu_cores": 2, "cpu_cores_limit": 1}
    config[E][0]["versions"][1]["traffic_percentile"] = 50
    assert check([str(write_stack(tmp_path, config))]) == 2
    out = capsys.readouterr().out
    for field in ("services[0].token_auth_enabled", "services[0].cpu_cores_limit", "endpoints[0].versions: traffic_percentile"):
        assert field in out


def test_yaml_syntax_error_is_a_message(tmp_path, capsys):
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  aks-model-serving:services: [\n")
    assert check([str(tmp_path / "Pulumi.bad.yaml")]) == 2
    out = capsys.readouterr().out
    assert "not valid YAML at line" in out and "Traceback" not in out


def test_a_key_written_twice_is_refused_with_its_path_and_lines(tmp_path, capsys):
    """YAML keeps the last of two equal keys: the first setting would be lost without a word (and Pulumi's
    own reader refuses such a file at `pulumi up`)."""
    (tmp_path / "Pulumi.twice.yaml").write_text(
        "config:\n"
        "  aks-model-serving:router:\n"
        "    min_replicas: 2\n"
        "    max_replicas: 6\n"
        "    min_replicas: 3\n"
        "  aks-model-serving:local: {router_port: 9000}\n"
        "  aks-model-serving:local: {router_port: 9100}\n")
    assert check([str(tmp_path / "Pulumi.twice.yaml")]) == 2
    problems = [p.strip() for p in capsys.readouterr().out.splitlines()[1:]]
    assert problems == [
        "config.aks-model-serving:router.min_replicas: written twice (lines 3 and 5); only the last would be read "
        "and the other lost: keep one",
        "config.aks-model-serving:local: written twice (lines 6 and 7); only the last would be read and the other "
        "lost: keep one"]


def test_a_key_written_twice_in_a_setting_kept_as_json_text_is_refused(tmp_path, capsys):
    """`pulumi config set --path` and `pulumi new` keep an object as its JSON text, read back with json.loads,
    which keeps the last of two equal keys."""
    (tmp_path / "Pulumi.twice.yaml").write_text(
        "config:\n"
        "  aks-model-serving:router: '{\"min_replicas\": 2, \"max_replicas\": 6, \"min_replicas\": 3}'\n")
    assert check([str(tmp_path / "Pulumi.twice.yaml")]) == 2
    problems = [p.strip() for p in capsys.readouterr().out.splitlines()[1:]]
    assert problems == ["config.aks-model-serving:router.min_replicas: written twice; only the last would be read "
                        "and the other lost: keep one"]


def test_a_key_written_twice_in_an_azure_ml_file_is_refused(tmp_path, capsys):
    path = tmp_path / "deploymentconfig.json"
    path.write_text('{"computeType": "aks", "containerResourceRequirements": {"cpu": 2, "memoryInGB": 4, "cpu": 0.5}}')
    assert check([str(path)]) == 2
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == ["  deploymentconfig.json: containerResourceRequirements.cpu: written twice; only the "
                                    "last would be read and the other lost: keep one"]
    stack = _azureml_stack(tmp_path, {})
    (tmp_path / "aml" / "deploymentconfig.json").write_text(path.read_text())
    with pytest.raises(StackError) as refused:
        load_stack(stack)
    assert refused.value.problems == ["services[0].azureml.deployment_config: deploymentconfig.json: "
                                      "containerResourceRequirements.cpu: written twice; only the last would be read "
                                      "and the other lost: keep one"]


def test_missing_file_is_a_message(tmp_path, capsys):
    assert check([str(tmp_path / "Pulumi.nope.yaml")]) == 2
    assert "no such stack file" in capsys.readouterr().out


def test_dev_test_cluster_turns_autoscaling_off_with_a_warning(tmp_path, capsys):
    config = copy.deepcopy(BASE)
    config[C]["cluster_purpose"] = "DevTest"  # Azure ML's spelling is accepted
    config[S][0]["autoscale_enabled"] = True
    config[S][0]["autoscale_min_replicas"] = 3
    stack = load_stack(write_stack(tmp_path, config))
    assert stack.spec.cluster.cluster_purpose == "dev_test"
    service = stack.spec.services[0]
    assert service.autoscale_enabled is False and service.replicas == 3  # the minimum asked for, not 1
    said = "services[0]: a dev_test cluster keeps replicas fixed; autoscaling is off and it runs 3 (autoscale_min_replicas"
    assert any(w.startswith(said) for w in stack.spec.warnings), stack.spec.warnings
    assert check([str(write_stack(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert f"warning: {said}" in out and "3 replicas fixed" in out


def test_azureml_defaults():
    stack = load_stack(ROOT / "stacks" / "Pulumi.local.yaml")
    svc = stack.spec.services[0]
    ep = stack.spec.endpoints[0].versions[0]
    assert (ep.cpu_cores, ep.memory_gb, ep.scoring_timeout_ms, ep.replica_max_concurrent_requests) == (0.1, 0.5, 60000, 1)
    assert (ep.max_request_wait_time, ep.period_seconds, ep.initial_delay_seconds, ep.timeout_seconds) == (500, 10, 310, 2)
    assert (ep.success_threshold, ep.failure_threshold, ep.collect_model_data) == (1, 3, True)
    assert (svc.autoscale_refresh_seconds, svc.autoscale_target_utilization, svc.auth_enabled, svc.token_auth_enabled) == (1, 70, True, False)
    assert svc.autoscale_enabled is True and ep.autoscale_enabled is False  # ep sets num_replicas


# ------------------------------------------------------------------ Azure ML JSON files

DEPLOYMENT_CONFIG = {
    "computeType": "aks",
    "autoScaler": {"autoscaleEnabled": True, "minReplicas": 2, "maxReplicas": 6, "refreshPeriodInSeconds": 2, "targetUtilization": 60},
    "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5, "cpuLimit": 1, "memoryInGBLimit": 2},
    "livenessProbeRequirements": {"periodSeconds": 5, "initialDelaySeconds": 30, "timeoutSeconds": 3, "successThreshold": 1, "failureThreshold": 4},
    "dataCollection": {"storageEnabled": True, "eventHubEnabled": False},
    "authEnabled": True,
    "tokenAuthEnabled": False,
    "appInsightsEnabled": True,
    "scoringTimeoutMs": 30000,
    "maxConcurrentRequestsPerContainer": 2,
    "maxQueueWaitMs": 800,
    "namespace": "models",
}
INFERENCE_CONFIG = {
    "entryScript": "score.py",
    "sourceDirectory": "src",
    "environment": {
        "name": "sk-env", "version": "1",
        "docker": {"baseImage": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "enabled": True},
        "python": {"condaDependencies": {"name": "env", "channels": ["conda-forge"],
                                          "dependencies": ["python=3.11", {"pip": ["scikit-learn"]}]},
                   "userManagedDependencies": False},
        "environmentVariables": {"A": "1"},
    },
}
LEGACY_INFERENCE_CONFIG = {"entryScript": "score.py", "runtime": "python", "condaFile": "env.yml",
                           "extraDockerfileSteps": "steps.txt", "enableGpu": False, "sourceDirectory": "src"}

EQUIVALENT_YAML = {
    "autoscale_enabled": True, "autoscale_min_replicas": 2, "autoscale_max_replicas": 6, "autoscale_refresh_seconds": 2,
    "autoscale_target_utilization": 60, "cpu_cores": 0.5, "memory_gb": 1.5, "cpu_cores_limit": 1, "memory_gb_limit": 2,
    "period_seconds": 5, "initial_delay_seconds": 30, "timeout_seconds": 3, "success_threshold": 1, "failure_threshold": 4,
    "collect_model_data": True, "auth_enabled": True, "token_auth_enabled": False, "enable_app_insights": True,
    "scoring_timeout_ms": 30000, "replica_max_concurrent_requests": 2, "max_request_wait_time": 800, "namespace": "models",
}


def _azureml_stack(tmp_path: Path, dc: dict, ic: dict = INFERENCE_CONFIG, overrides: dict | None = None) -> Path:
    (tmp_path / "aml").mkdir(exist_ok=True)
    (tmp_path / "aml" / "deploymentconfig.json").write_text(json.dumps(dc))
    (tmp_path / "aml" / "inferenceconfig.json").write_text(json.dumps(ic))
    config = copy.deepcopy(BASE)
    config[S] = [{"name": "svc", "models": ["m:1"],
                  "azureml": {"inference_config": "aml/inferenceconfig.json", "deployment_config": "aml/deploymentconfig.json"},
                  **(overrides or {})}]
    config["aks-model-serving:router"] = {"namespace": "models"}  # DEPLOYMENT_CONFIG's: the router serves one namespace
    return write_stack(tmp_path, config)


def test_deployment_config_round_trip(tmp_path):
    from_json = load_stack(_azureml_stack(tmp_path, DEPLOYMENT_CONFIG)).spec.services[0]
    config = copy.deepcopy(BASE)
    config[S] = [{"name": "svc", "models": ["m:1"], "inference_config": {"entry_script": "score.py"}, **EQUIVALENT_YAML}]
    config["aks-model-serving:router"] = {"namespace": "models"}
    from_yaml = load_stack(write_stack(tmp_path, config)).spec.services[0]
    assert from_json.model_dump(exclude={"inference_config"}) == from_yaml.model_dump(exclude={"inference_config"})
    env = from_json.inference_config.environment
    assert from_json.inference_config.entry_script == "score.py"
    assert Path(from_json.inference_config.source_directory) == tmp_path / "aml" / "src"
    assert env.base_image.startswith("mcr.microsoft.com/azureml") and env.conda_dependencies.channels == ["conda-forge"]
    assert env.environment_variables == {"A": "1"}


def test_stack_fields_override_azureml_files(tmp_path):
    svc = load_stack(_azureml_stack(tmp_path, DEPLOYMENT_CONFIG, overrides={"cpu_cores": 0.75})).spec.services[0]
    assert svc.cpu_cores == 0.75 and svc.memory_gb == 1.5


@pytest.mark.parametrize("steps_key", ["extraDockerfileSteps", "extraDockerFileSteps"])
def test_legacy_inference_config(tmp_path, steps_key):
    """Azure ML reads extraDockerfileSteps (its docs' table spells it with a capital F), and the steps and
    conda files from the source directory."""
    (tmp_path / "aml" / "src").mkdir(parents=True)
    (tmp_path / "aml" / "src" / "steps.txt").write_text("RUN apt-get update && apt-get install -y libgomp1\n")
    ic = {k if k != "extraDockerfileSteps" else steps_key: v for k, v in LEGACY_INFERENCE_CONFIG.items()}
    svc = load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic)).spec.services[0]
    env = svc.inference_config.environment
    assert Path(env.conda_file) == tmp_path / "aml" / "src" / "env.yml"
    assert env.docker_steps == "RUN apt-get update && apt-get install -y libgomp1\n"  # the file's lines, not its path
    assert svc.autoscale_enabled is True and svc.autoscale_max_replicas == 10  # Azure ML defaults


def test_an_environment_as_azure_ml_exports_it(tmp_path):
    """Every section an exported Environment carries: training-only ones asking for nothing pass, a conda
    file named by condaDependenciesFile is the environment's."""
    (tmp_path / "aml").mkdir()
    (tmp_path / "aml" / "env.yml").write_text("dependencies:\n  - python=3.11\n")
    exported = {"entryScript": "score.py", "environment": {
        "name": "deploy-env", "version": "1", "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"},
        "python": {"userManagedDependencies": False, "interpreterPath": "python", "condaDependenciesFile": "env.yml",
                   "baseCondaEnvironment": None},
        "docker": {"enabled": False, "baseImage": None, "baseDockerfile": None, "sharedVolumes": True, "shmSize": "2g",
                   "arguments": [], "baseImageRegistry": {"address": None, "username": None, "password": None,
                                                          "registryIdentity": None},
                   "platform": {"os": "Linux", "architecture": "amd64"}},
        "r": None,
        "spark": {"repositories": [], "packages": [], "precachePackages": True},
        "databricks": {"mavenLibraries": [], "pypiLibraries": [], "rcranLibraries": [], "jarLibraries": [], "eggLibraries": []},
        "inferencingStackVersion": None}}
    env = load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, exported)).spec.services[0].inference_config.environment
    assert Path(env.conda_file) == tmp_path / "aml" / "env.yml" and env.image_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}


def test_user_managed_dependencies_build_no_conda_environment(tmp_path):
    """Exports carry a default condaDependencies even then: building it would refuse its python=3.6."""
    ic = {"entryScript": "score.py", "environment": {"docker": {"baseImage": "myacr.azurecr.io/py311:1"}, "python": {
        "userManagedDependencies": True, "interpreterPath": "python",
        "condaDependencies": {"name": "project_environment", "dependencies": ["python=3.6.2", {"pip": ["azureml-defaults"]}]}}}}
    env = load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic)).spec.services[0].inference_config.environment
    assert env.conda_dependencies is None and env.conda_file is None and env.base_image == "myacr.azurecr.io/py311:1"


def test_files_azure_ml_reads_as_it_reads_them(tmp_path):
    """YAML as well as JSON, computeType in any case, computeTargetName (the stack picks the cluster), and
    legacy keys that ask for nothing beside an environment."""
    (tmp_path / "aml").mkdir()
    (tmp_path / "aml" / "inferenceconfig.json").write_text(json.dumps(
        {"entryScript": "score.py", "sourceDirectory": "src", "enableGpu": False, "environment": {"name": "e"}}))
    (tmp_path / "aml" / "deploymentconfig.yml").write_text(
        "computeType: Aks\ncomputeTargetName: aks-prod\nnumReplicas: 2\ncontainerResourceRequirements:\n  cpu: 0.5\n")
    config = copy.deepcopy(BASE)
    config[S] = [{"name": "svc", "models": ["m:1"], "azureml": {"inference_config": "aml/inferenceconfig.json",
                                                                "deployment_config": "aml/deploymentconfig.yml"}}]
    svc = load_stack(write_stack(tmp_path, config)).spec.services[0]
    assert (svc.num_replicas, svc.cpu_cores, svc.autoscale_enabled) == (2, 0.5, False)


def test_without_a_source_directory_the_app_is_the_entry_script_alone(tmp_path):
    """As Azure ML ships it: the file's folder often holds deploymentconfig.json, keys and all."""
    ic = {"entryScript": "score.py", "environment": {"name": "e"}}
    spec = load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic)).spec.services[0].inference_config
    assert spec.source_directory is None and Path(spec.entry_script) == tmp_path / "aml" / "score.py"
    assert (spec.app_entry_script, spec.app_files) == ("score.py", ["score.py"])


BROKEN_JSON = [
    ("ic-spark-packages", "inferenceconfig.json", {"entryScript": "score.py", "environment": {"spark": {"packages": [{"group": "g"}]}}},
     "environment.spark.packages: a training run's libraries; a web service does not install them"),
    ("dc-unknown-key", "deploymentconfig.json", {"computeType": "aks", "cpuCores": 1}, "cpuCores"),
    ("dc-wrong-compute", "deploymentconfig.json", {"computeType": "aci"}, "computeType"),
    ("dc-bad-autoscaler", "deploymentconfig.json", {"computeType": "aks", "autoScaler": {"minReplicas": "two"}}, "autoScaler.minReplicas"),
    ("dc-min-over-max", "deploymentconfig.json", {"computeType": "aks", "autoScaler": {"autoscaleEnabled": True, "minReplicas": 5,
                                                                             "maxReplicas": 2}}, "autoScaler.minReplicas: 5 exceeds"),
    ("dc-autoscaler-settings-not-enabled", "deploymentconfig.json", {"computeType": "aks", "autoScaler": {"minReplicas": 2}},
     "autoScaler.minReplicas: given without autoScaler.autoscaleEnabled: true"),
    ("dc-autoscaler-settings-with-replicas", "deploymentconfig.json",
     {"computeType": "aks", "numReplicas": 3, "autoScaler": {"maxReplicas": 4, "targetUtilization": 50}},
     "autoScaler.maxReplicas: given without autoScaler.autoscaleEnabled: true"),
    ("dc-autoscale-off-without-replicas", "deploymentconfig.json", {"computeType": "aks", "autoScaler": {"autoscaleEnabled": False}},
     "autoScaler.autoscaleEnabled: false needs numReplicas"),
    ("dc-event-hub", "deploymentconfig.json", {"computeType": "aks", "dataCollection": {"eventHubEnabled": True}},
     "dataCollection.eventHubEnabled: collected data goes to the workspace's blob storage"),
    ("dc-endpoint-file-over-100", "deploymentconfig.json", {"computeType": "AKSENDPOINT", "trafficPercentile": 101},
     "deployment_config: deploymentconfig.json: trafficPercentile: Input should be less than or equal to 100"),
    ("dc-zero-queue-wait", "deploymentconfig.json", {"computeType": "aks", "maxQueueWaitMs": 0},
     "deployment_config: deploymentconfig.json: maxQueueWaitMs: Input should be greater than 0"),
    ("dc-zero-initial-delay", "deploymentconfig.json", {"computeType": "aks", "livenessProbeRequirements": {"initialDelaySeconds": 0}},
     "deployment_config: deploymentconfig.json: livenessProbeRequirements.initialDelaySeconds: Input should be greater than 0"),
    ("ic-environment-and-runtime", "inferenceconfig.json", {"entryScript": "score.py", "runtime": "python", "environment": {}},
     "runtime: cannot be given along with an environment"),
    ("ic-other-interpreter", "inferenceconfig.json",
     {"entryScript": "score.py", "environment": {"python": {"userManagedDependencies": True, "interpreterPath": "/opt/py"}}},
     "environment.python.interpreterPath"),
    ("ic-r-environment", "inferenceconfig.json", {"entryScript": "score.py", "environment": {"r": {"rVersion": "4.0"}}}, "environment.r"),
    ("ic-arm-platform", "inferenceconfig.json", {"entryScript": "score.py", "environment": {"docker": {"platform": {"architecture": "arm64"}}}},
     "environment.docker.platform.architecture"),
    ("dc-replicas-with-autoscale", "deploymentconfig.json", {"computeType": "aks", "numReplicas": 2, "autoScaler": {"autoscaleEnabled": True}},
     "deployment_config: deploymentconfig.json: numReplicas: a fixed numReplicas and autoScaler.autoscaleEnabled exclude each other"),
    ("dc-limit-below-request", "deploymentconfig.json", {"computeType": "aks", "containerResourceRequirements": {"cpu": 2, "cpuLimit": 1}},
     "deployment_config: deploymentconfig.json: containerResourceRequirements.cpuLimit: 1.0 is below the request"),
    ("ic-missing-entry", "inferenceconfig.json", {"entryScript": "score.py", "environment": {"docker": {"baseImagee": "x"}}}, "environment.docker.baseImagee"),
    ("ic-legacy-runtime", "inferenceconfig.json", {"entryScript": "score.py", "runtime": "spark-py"}, "runtime"),
    ("ic-cuda-without-gpu", "inferenceconfig.json", {"entryScript": "score.py", "cudaVersion": "11.8"},
     "inference_config: inferenceconfig.json: cudaVersion: it picks the GPU base image; set enableGpu too"),
    ("dc-zero-replicas", "deploymentconfig.json", {"computeType": "aks", "numReplicas": 0},
     "deployment_config: deploymentconfig.json: numReplicas: Input should be greater than or equal to 1"),
    ("ic-legacy-missing-steps", "inferenceconfig.json", {"entryScript": "score.py", "extraDockerfileSteps": "steps.txt"},
     "extraDockerfileSteps: cannot read"),
]


@pytest.mark.parametrize("name,filename,doc,expected", BROKEN_JSON, ids=[b[0] for b in BROKEN_JSON])
def test_broken_azureml_file_names_the_field(tmp_path, capsys, name, filename, doc, expected):
    path = tmp_path / filename
    path.write_text(json.dumps(doc))
    assert check([str(path)]) == 2
    out = capsys.readouterr().out
    assert expected in out and "Traceback" not in out


REGISTRY = {"address": "private.azurecr.io", "username": "puller", "password": "hunter2-s3cret"}


@pytest.mark.parametrize("doc,expected", [
    ({"entryScript": "score.py", "environment": {"docker": {"baseImage": "private.azurecr.io/base:1",
                                                            "baseImageRegistry": REGISTRY}}},
     "environment.docker.baseImageRegistry: username and password are not read here"),
    ({"entryScript": "score.py", "baseImage": "private.azurecr.io/base:1", "baseImageRegistry": REGISTRY},
     "baseImageRegistry: username and password are not read here"),
    # Pulled as written, base:1 would come from Docker Hub, not from the registry the file names.
    ({"entryScript": "score.py", "environment": {"docker": {"baseImage": "base:1",
                                                            "baseImageRegistry": {"address": "private.azurecr.io"}}}},
     "environment.docker.baseImage: 'base:1' is not in baseImageRegistry.address 'private.azurecr.io'; give its "
     "full name, private.azurecr.io/base:1"),
], ids=["environment", "legacy", "address-not-in-image"])
def test_a_base_image_registry_is_refused_where_it_would_be_dropped(tmp_path, capsys, doc, expected):
    """The app image is built where pulumi up runs, its base pulled with that machine's docker login: a file's
    registry credentials were dropped without a word (a password in clear), and its address too."""
    path = tmp_path / "inferenceconfig.json"
    path.write_text(json.dumps(doc))
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    assert check([str(path)]) == 2
    out = capsys.readouterr().out
    assert f"inference_config: inferenceconfig.json: {expected}" in out
    assert "hunter2" not in out and "puller" not in out


def test_a_base_image_in_the_registry_it_names_passes(tmp_path, capsys):
    path = tmp_path / "inferenceconfig.json"
    path.write_text(json.dumps({"entryScript": "score.py", "environment": {"docker": {
        "baseImage": "private.azurecr.io/base:1", "baseImageRegistry": {"address": "private.azurecr.io"}}}}))
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    assert check([str(path)]) == 0, capsys.readouterr().out


def test_a_legacy_base_image_registry_given_as_its_address_is_read_so(tmp_path, capsys):
    """Azure ML's own custom-image how-to writes the legacy format's baseImageRegistry as the registry's address
    ("mcr.microsoft.com"), which its CLI passes on as it is: a file copied from there was refused with 'Input
    should be a valid dictionary or instance of BaseImageRegistry'. It is the address, checked as one."""
    doc = {"entryScript": "score.py", "runtime": "python", "condaFile": "infenv.yml", "extraDockerfileSteps": None,
           "sourceDirectory": None, "enableGpu": False,
           "baseImage": "mcr.microsoft.com/azureml/o16n-sample-user-base/ubuntu-miniconda", "baseImageRegistry": "mcr.microsoft.com"}
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "infenv.yml").write_text("dependencies:\n  - python=3.11\n")
    path = tmp_path / "inferenceconfig.json"
    path.write_text(json.dumps(doc))
    assert check([str(path)]) == 0, capsys.readouterr().out
    path.write_text(json.dumps(doc | {"baseImage": "ubuntu-miniconda"}))
    assert check([str(path)]) == 2
    assert ("inference_config: inferenceconfig.json: baseImage: 'ubuntu-miniconda' is not in baseImageRegistry.address "
            "'mcr.microsoft.com'; give its full name, mcr.microsoft.com/ubuntu-miniconda") in capsys.readouterr().out


def test_an_inference_configs_environment_variables_may_be_numbers_as_azure_ml_takes_them(tmp_path):
    """Azure ML's service reads environmentVariables as strings and takes a number written there as its text: a
    file with {"WORKERS": 2} was refused ('Input should be a valid string'). The scorer gets the number's text;
    the stack's own environment_variables stay strings only."""
    ic = {"entryScript": "score.py", "environment": {"environmentVariables": {"WORKERS": 2, "RATIO": 0.5}}}
    env = load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic)).spec.services[0].inference_config.environment
    assert env.image_variables == {"WORKERS": "2", "RATIO": "0.5"}


def test_an_interpreter_path_is_read_as_azure_ml_reads_it(tmp_path, capsys):
    """Azure ML uses python.interpreterPath only with userManagedDependencies (its PythonSection says so) and
    ignores it otherwise, where a file naming another was refused ('Input should be \'python\''); with it, the
    scorer still runs on the base image's `python`, which the problem now says, and what to do."""
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    path = tmp_path / "inferenceconfig.json"
    python = {"userManagedDependencies": False, "interpreterPath": "/usr/bin/python3"}
    path.write_text(json.dumps({"entryScript": "score.py", "environment": {"python": python}}))
    assert check([str(path)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    path.write_text(json.dumps({"entryScript": "score.py", "environment": {
        "docker": {"baseImage": "mcr.microsoft.com/azureml/o16n-sample-user-base/ubuntu-miniconda"},
        "python": {"userManagedDependencies": True, "interpreterPath": "/opt/miniconda/bin/python"}}}))
    assert check([str(path)]) == 2
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  inference_config: inferenceconfig.json: environment.python.interpreterPath: '/opt/miniconda/bin/python': the "
        "scorer is installed into the base image's `python` (the first on its PATH) and runs on it; give python, and "
        "put that interpreter's folder first on the base image's PATH"]


def test_a_value_that_may_be_a_secret_is_not_repeated_in_its_problem(tmp_path, capsys):
    config = copy.deepcopy(BASE)
    _set(config, SVC0 + ["inference_config", "environment"], {"environment_variables": {"API_KEY": 31415926535}})
    _set(config, SVC0 + ["primary_key"], 27182818284)
    assert check([str(write_stack(tmp_path, config))]) == 2
    out = capsys.readouterr().out
    assert "environment_variables.API_KEY: a number where text is expected; quote it" in out
    assert "primary_key: a number where text is expected; quote it" in out
    assert "31415926535" not in out and "27182818284" not in out


def test_each_finding_of_an_azure_ml_rule_names_its_file(tmp_path, capsys):
    path = tmp_path / "deploymentconfig.json"
    path.write_text(json.dumps({"computeType": "aks", "autoScaler": {"minReplicas": 2, "maxReplicas": 4}}))
    assert check([str(path)]) == 2
    problems = capsys.readouterr().out.splitlines()[1:]
    assert [p.strip() for p in problems] == [
        f"deployment_config: deploymentconfig.json: autoScaler.{k}: given without autoScaler.autoscaleEnabled: true"
        for k in ("minReplicas", "maxReplicas")]


def test_an_azure_ml_files_problems_are_told_as_a_stacks_are(tmp_path, capsys):
    """A type error in an Azure ML file kept pydantic's names in its path (dependencies.0.str, .dict[str,list[str]])
    and list indices as .0, and its messages were pydantic's own (Extra inputs are not permitted, no value
    given): told along the file's keys, in the stack's words, on its own as in a stack; the stack's own
    conda dependencies tell the same below their own key."""
    ic = {"entryScript": "score.py", "environment": {
        "python": {"condaDependencies": {"dependencies": [5, {"pip": [1]}]}}, "environmentVariables": {"DB_PORT": [5432]}}}
    told = [
        "inference_config: inferenceconfig.json: environment.python.condaDependencies.dependencies[0]: "
        "a number (5) where text is expected; quote it",
        "inference_config: inferenceconfig.json: environment.python.condaDependencies.dependencies[0]: "
        "Input should be a valid dictionary",
        "inference_config: inferenceconfig.json: environment.python.condaDependencies.dependencies[1]: "
        "Input should be a valid string",
        "inference_config: inferenceconfig.json: environment.python.condaDependencies.dependencies[1].pip[0]: "
        "a number (1) where text is expected; quote it",
        "inference_config: inferenceconfig.json: environment.environmentVariables.DB_PORT: Input should be a valid string",
    ]
    (tmp_path / "inferenceconfig.json").write_text(json.dumps(ic))
    assert check([str(tmp_path / "inferenceconfig.json")]) == 2
    assert [line.strip() for line in capsys.readouterr().out.splitlines()[1:]] == told
    with pytest.raises(StackError) as err:
        load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic))
    assert err.value.problems == [f"services[0].azureml.{line}" for line in told]
    config = copy.deepcopy(BASE)
    _set(config, SVC0 + ["inference_config", "environment"], {"conda_dependencies": {"dependencies": [5, {"pip": [1]}]}})
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert err.value.problems[0] == ("services[0].inference_config.environment.conda_dependencies.dependencies[0]: "
                                     "a number (5) where text is expected; quote it")
    (tmp_path / "deploymentconfig.json").write_text(json.dumps({"computeType": None, "autoScaler": {"maxReplica": 2}}))
    assert check([str(tmp_path / "deploymentconfig.json")]) == 2
    assert [line.strip() for line in capsys.readouterr().out.splitlines()[1:]] == [
        "deployment_config: deploymentconfig.json: computeType: Input should be a valid string (given: no value)",
        "deployment_config: deploymentconfig.json: autoScaler.maxReplica: unknown field; did you mean maxReplicas?"]


def test_broken_azureml_file_inside_a_stack_names_the_service(tmp_path):
    path = _azureml_stack(tmp_path, {"computeType": "aks", "autoScaler": {"minReplicass": 1}})
    with pytest.raises(StackError) as err:
        load_stack(path)
    assert any(p.startswith("services[0].azureml.deployment_config: deploymentconfig.json: autoScaler.minReplicass")
               for p in err.value.problems), err.value.problems


def test_a_problem_with_a_value_from_an_azure_ml_file_names_the_file_and_its_key(tmp_path):
    """They were told under the stack's names (services[0].num_replicas), which the stack does not hold: the
    file's own key, where the user can find it; a value the stack gives itself keeps the stack's name."""
    def problems(dc: dict, overrides: dict | None = None, router: dict | None = None) -> list[str]:
        path = _azureml_stack(tmp_path, dc, overrides=overrides)
        if router is not None:
            doc = yaml.safe_load(path.read_text())
            doc["config"]["aks-model-serving:router"] = router
            path.write_text(yaml.safe_dump(doc))
        with pytest.raises(StackError) as err:
            load_stack(path)
        return err.value.problems

    in_dc = "services[0].azureml.deployment_config: deploymentconfig.json: "
    assert problems({"computeType": "aks", "numReplicas": 0}) == [
        in_dc + "numReplicas: Input should be greater than or equal to 1"]
    assert problems({"computeType": "aks", "numReplicas": 2, "autoScaler": {"autoscaleEnabled": True},
                     "containerResourceRequirements": {"cpu": 2, "cpuLimit": 1}}) == [
        in_dc + "numReplicas: a fixed numReplicas and autoScaler.autoscaleEnabled exclude each other; drop one",
        in_dc + "containerResourceRequirements.cpuLimit: 1.0 is below the request containerResourceRequirements.cpu 2.0; "
                "raise the limit or lower the request"]
    assert problems({"computeType": "aks", "tokenAuthEnabled": True}) == [
        in_dc + "tokenAuthEnabled: key auth (authEnabled) and token auth both on; Azure ML allows one: set authEnabled: false for tokens"]
    # Checked across the stack too: the file's namespace against the router's.
    assert problems({"computeType": "aks", "namespace": "models"}, router={}) == [
        in_dc + "namespace: 'models' differs from router.namespace 'azureml'; the router watches and scales only its own namespace"]
    # What the stack says itself is named in the stack.
    assert problems({"computeType": "aks", "numReplicas": 2}, overrides={"num_replicas": 0}) == [
        "services[0].num_replicas: Input should be greater than or equal to 1"]


def test_a_rule_moved_into_an_azure_ml_file_names_the_fields_its_message_mentions_by_the_files_keys(tmp_path, capsys):
    """A message told in a file said `numReplicas: a fixed num_replicas and autoscale_enabled ...`: the fields
    it mentions are named as the file spells them, a default as where the file would set it, and one the stack
    gives itself as the stack does; on its own a file is told alike."""
    def problems(dc: dict, ic: dict = INFERENCE_CONFIG, overrides: dict | None = None) -> list[str]:
        with pytest.raises(StackError) as err:
            load_stack(_azureml_stack(tmp_path, dc, ic, overrides))
        return err.value.problems

    in_dc = "services[0].azureml.deployment_config: deploymentconfig.json: "
    assert problems({"computeType": "aks", "containerResourceRequirements": {"memoryInGB": 2, "memoryInGBLimit": 1}}) == [
        in_dc + "containerResourceRequirements.memoryInGBLimit: 1.0 is below the request containerResourceRequirements.memoryInGB "
                "2.0; raise the limit or lower the request"]
    # maxReplicas not given: its default named by the key that sets it.
    assert problems({"computeType": "aks", "autoScaler": {"autoscaleEnabled": True, "minReplicas": 11}}) == [
        in_dc + "autoScaler.minReplicas: 11 exceeds autoScaler.maxReplicas 10"]
    assert problems({"computeType": "aks", "numReplicas": 2}, overrides={"autoscale_enabled": True}) == [
        in_dc + "numReplicas: a fixed numReplicas and autoscale_enabled exclude each other; drop one"]
    in_ic = "services[0].azureml.inference_config: inferenceconfig.json: "
    assert problems({"computeType": "aks"}, {"entryScript": "score.py", "environment": {"docker": {"baseImage": "a", "baseDockerfile": "b"}}}) == [
        in_ic + "environment.docker.baseDockerfile: give environment.docker.baseImage or environment.docker.baseDockerfile, not both"]
    assert problems({"computeType": "aks"}, {"entryScript": "score.py", "environment": {"python": {
        "condaDependencies": {"dependencies": ["python=3.11"]}, "condaDependenciesFile": "env.yml"}}}) == [
        in_ic + "environment.python.condaDependenciesFile: give environment.python.condaDependencies or "
                "environment.python.condaDependenciesFile, not both"]
    assert problems({"computeType": "aks"}, {"entryScript": "score.py", "enableGpu": True, "cudaVersion": "12.1"}) == [
        in_ic + "cudaVersion: '12.1': Azure ML's GPU base image here carries CUDA 11.8; for another version name a baseImage that has it"]
    # The stack's own settings keep the stack's names.
    config = copy.deepcopy(BASE)
    config[S][0] |= {"cpu_cores": 2, "cpu_cores_limit": 1}
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert "services[0].cpu_cores_limit: 1.0 is below the request cpu_cores 2.0; raise the limit or lower the request" in err.value.problems
    path = tmp_path / "deploymentconfig.json"
    path.write_text(json.dumps({"computeType": "aks", "autoScaler": {"autoscaleEnabled": True, "minReplicas": 11}}))
    assert check([str(path)]) == 2
    assert "deployment_config: deploymentconfig.json: autoScaler.minReplicas: 11 exceeds autoScaler.maxReplicas 10" in capsys.readouterr().out


def test_stack_rules_name_a_deployment_configs_settings_as_it_spells_them(tmp_path):
    """The dev_test warning, the missing GPU pool and the memory warning named autoscale_min_replicas,
    num_replicas, gpu_cores and memory_gb for a service whose settings its deploymentconfig.json gives."""
    config = yaml.safe_load(_azureml_stack(tmp_path, {"computeType": "aks", "autoScaler": {"autoscaleEnabled": True, "minReplicas": 3},
                                                      "containerResourceRequirements": {"memoryInGB": 100}}).read_text())["config"]
    config[C]["cluster_purpose"] = "dev_test"
    warnings = [w for w in load_stack(write_stack(tmp_path, config)).spec.warnings if w.startswith("services[0]")]
    in_dc = "services[0].azureml.deployment_config: deploymentconfig.json: "
    assert warnings == [
        in_dc + "a dev_test cluster keeps replicas fixed; autoscaling is off and it runs 3 (autoScaler.minReplicas; "
                "numReplicas sets the count)",
        in_dc + "containerResourceRequirements.memoryInGB: 100 GB per replica (containerResourceRequirements.memoryInGB is in GB), "
                "more than a Standard_D4s_v3 node (4 vCPUs, pool system) is likely to have; such replicas stay Pending"]
    config[S][0]["autoscale_min_replicas"] = 2  # the stack's own: named as the stack names it
    assert load_stack(write_stack(tmp_path, config)).spec.warnings[0] == (
        "services[0]: a dev_test cluster keeps replicas fixed; autoscaling is off and it runs 2 (autoscale_min_replicas; "
        "num_replicas sets the count)")
    (tmp_path / "aml" / "deploymentconfig.json").write_text(json.dumps({"computeType": "aks", "gpuCores": 1}))
    config[C]["node_pools"] = config[C]["node_pools"][:1]
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert in_dc + "gpuCores: the cluster has no GPU pool; add a node pool with accelerator: gpu or set gpuCores: 0" in err.value.problems


@pytest.mark.parametrize("steps_key", ["extraDockerfileSteps", "extraDockerFileSteps"])
def test_the_legacy_steps_key_is_named_as_the_file_spells_it(tmp_path, capsys, steps_key):
    """Azure ML reads either spelling: a problem with the steps file named extraDockerfileSteps whichever the
    user wrote, and in a stack under the service's own path rather than the file's."""
    ic = {"entryScript": "score.py", steps_key: "steps.txt"}
    with pytest.raises(StackError) as err:
        load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic))
    assert err.value.problems == [f"services[0].azureml.inference_config: inferenceconfig.json: {steps_key}: cannot read "
                                  f"{tmp_path / 'aml' / 'steps.txt'} (No such file or directory)"]
    assert check([str(tmp_path / "aml" / "inferenceconfig.json")]) == 2
    assert f"  inference_config: inferenceconfig.json: {steps_key}: cannot read " in capsys.readouterr().out


def test_an_inference_config_on_its_own_is_named_through_the_stacks_key_table(tmp_path, capsys, monkeypatch):
    """check of an inference config alone re-keyed the table, losing its root: a problem below a key the table
    lacks was told in spec names with no file at all (environment.pip), not in the file as a stack tells it."""
    import components.check
    from components.azureml import load_inference_config

    def with_pip(path: Path) -> tuple[dict, dict]:  # no file gives pip: what only a key the table lacks would say
        values, origins = load_inference_config(path)
        values["environment"]["pip"] = [1]
        return values, origins

    monkeypatch.setattr(components.check, "load_inference_config", with_pip)
    (tmp_path / "inferenceconfig.json").write_text(json.dumps({"entryScript": "score.py", "enableGpu": True}))
    assert check([str(tmp_path / "inferenceconfig.json")]) == 2
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  inference_config: inferenceconfig.json: environment.pip[0]: a number (1) where text is expected; quote it"]


def test_a_problem_with_a_value_from_an_inference_config_names_the_file_and_its_key(tmp_path, capsys):
    """As for the deployment config: in either format's keys, not the spec's (inference_config.environment.gpu)."""
    def problems(ic: dict) -> list[str]:
        with pytest.raises(StackError) as err:
            load_stack(_azureml_stack(tmp_path, {"computeType": "aks"}, ic))
        return err.value.problems

    in_ic = "services[0].azureml.inference_config: inferenceconfig.json: "
    assert problems({"entryScript": "score.R"}) == [
        f"{in_ic}entryScript: '{tmp_path / 'aml' / 'score.R'}' is not a Python file; the entry script defines init() and run()"]
    assert problems({"entryScript": "score.py", "cudaVersion": "11.8"}) == [
        f"{in_ic}cudaVersion: it picks the GPU base image; set enableGpu too"]
    assert problems({"entryScript": "score.py", "environment": {"environmentVariables": {"A-B": "1"}}}) == [
        f"{in_ic}environment.environmentVariables: 'A-B' is not a variable name (letters, digits, _)"]
    # What check finds on this machine's files: the entry script the file names is not there.
    (tmp_path / "aml" / "inferenceconfig.json").write_text(json.dumps({"entryScript": "scor.py"}))
    assert check([str(tmp_path / "stacks" / "Pulumi.t.yaml")]) == 2
    assert f"{in_ic}entryScript: {tmp_path / 'aml' / 'scor.py'} does not exist" in capsys.readouterr().out


def test_azureml_files_check_on_their_own(tmp_path, capsys):
    (tmp_path / "deploymentconfig.json").write_text(json.dumps(DEPLOYMENT_CONFIG))
    (tmp_path / "inferenceconfig.json").write_text(json.dumps(INFERENCE_CONFIG))
    assert check([str(tmp_path / "deploymentconfig.json")]) == 0
    assert "autoscale_max_replicas = 6" in capsys.readouterr().out
    assert check([str(tmp_path / "inferenceconfig.json")]) == 2  # its app is not there
    assert "inference_config: inferenceconfig.json: sourceDirectory: " in capsys.readouterr().out
    (tmp_path / "src").mkdir()
    assert check([str(tmp_path / "inferenceconfig.json")]) == 2
    assert f"inference_config: inferenceconfig.json: entryScript: {tmp_path / 'src' / 'score.py'} does not exist" in capsys.readouterr().out
    (tmp_path / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    assert check([str(tmp_path / "inferenceconfig.json")]) == 0
    assert "entry_script = score.py" in capsys.readouterr().out
    # Azure ML's CLI reads its files as YAML too: told apart from a stack file by what it holds (a stack's
    # settings are under config:), not by its name.
    (tmp_path / "deploymentconfig.yml").write_text(yaml.safe_dump(DEPLOYMENT_CONFIG))
    assert check([str(tmp_path / "deploymentconfig.yml")]) == 0
    assert "autoscale_max_replicas = 6" in capsys.readouterr().out


def test_an_inference_config_on_its_own_is_checked_for_the_python_its_image_needs(tmp_path, capsys):
    """An Azure ML environment pins the Python of its day (python=3.8): check of the file alone said 'valid
    inference config', and only a cluster stack naming it (check, plan) then refused it, since the scorer runs
    in that environment on Python 3.11 or later. The file alone is checked for it too, as plan would."""
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "env.yml").write_text("dependencies:\n  - python=3.8.13\n  - pip:\n    - azureml-defaults\n")
    path = tmp_path / "inferenceconfig.json"
    path.write_text(json.dumps({"entryScript": "score.py", "runtime": "python", "condaFile": "env.yml"}))
    assert check([str(path)]) == 2
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  inference_config: inferenceconfig.json: condaFile: the scorer runs in this environment, on Python 3.11 or "
        "later; list python=3.11 (or later) under dependencies"]
    path.write_text(json.dumps({"entryScript": "score.py", "environment": {"python": {"condaDependencies": {
        "dependencies": ["python=3.8.13"]}}}}))
    assert check([str(path)]) == 2
    assert "inference_config: inferenceconfig.json: environment.python.condaDependencies: the scorer runs" in capsys.readouterr().out
    (tmp_path / "env.yml").write_text("dependencies:\n  - python=3.11\n")
    path.write_text(json.dumps({"entryScript": "score.py", "runtime": "python", "condaFile": "env.yml"}))
    assert check([str(path)]) == 0, capsys.readouterr().out


def test_a_stack_file_named_otherwise_is_checked_as_a_stack(tmp_path, capsys):
    """A stack kept as candidate.yaml was read as an Azure ML file: 'not a deploymentconfig.json'."""
    write_stack(tmp_path, BASE).rename(tmp_path / "candidate.yaml")
    assert check([str(tmp_path / "candidate.yaml")]) == 0, capsys.readouterr().out
    assert "stack candidate: valid" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["Pulumi.empty.yaml", "empty.yaml"])
def test_a_stack_file_with_an_empty_config_is_a_stack_without_settings(tmp_path, capsys, name):
    """`config:` with nothing under it (null) was refused as no config: mapping, or, named otherwise, read as
    an Azure ML file: it is a stack with no settings of ours, as `config: {}` is, and check and plan say so."""
    from components.plan import main as plan

    path = tmp_path / name
    path.write_text("encryptionsalt: v1:abc\nconfig:\n")
    assert check([str(path)]) == 0
    out = capsys.readouterr().out
    assert "stack " in out and "valid" in out and "warning: no aks-model-serving: settings" in out, out
    assert plan([str(path)]) == 0
    captured = capsys.readouterr()
    assert "nothing to deploy on a cluster" in captured.out and "warning: no aks-model-serving: settings" in captured.err


@pytest.mark.parametrize("empty", [None, ""])
def test_a_setting_given_with_no_value_is_not_set(tmp_path, capsys, empty):
    """`aks-model-serving:services:` with no value is YAML's null, which Pulumi hands the program as "": both
    were read as a value (workspace "" refused, services null refused while workspace null passed); now
    each is a setting not given, its default, in parse_config as in check."""
    config = copy.deepcopy(BASE)
    config[S], config[E], config["aks-model-serving:router"] = empty, empty, empty
    spec, _ = parse_config(config, tmp_path)
    assert (spec.services, spec.endpoints, spec.router.min_replicas) == ([], [], 2)
    assert parse_config({W: empty, C: empty}, tmp_path)[0].workspace is None
    if empty is None:
        assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out
    with pytest.raises(StackError) as err:  # a misspelt one is still no setting of ours
        parse_config({"aks-model-serving:servces": empty}, tmp_path)
    assert err.value.problems == ["servces: unknown field; did you mean services?"]


def test_a_value_left_empty_is_named_so(tmp_path, capsys):
    """`cpu_cores:` with nothing after it: the problem said what was expected, not that nothing was given."""
    config = copy.deepcopy(BASE)
    config[S][0]["cpu_cores"] = None
    config[S][0]["name"] = None
    assert check([str(write_stack(tmp_path, config))]) == 2
    out = capsys.readouterr().out
    assert "services[0].cpu_cores: Input should be a valid number (given: no value)" in out, out
    assert "services[0].name: Input should be a valid string (given: no value)" in out, out


def test_template_answers_stored_as_json_text_are_read(tmp_path):
    """`pulumi new` writes the template's object answers as JSON strings."""
    template = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    config = {key: entry["default"] for key, entry in template.items()}
    assert all(isinstance(v, str) for v in config.values())
    stack = load_stack(write_stack(tmp_path, config))
    assert stack.spec.services[0].name == "iris" and stack.location == "westeurope"


def test_pulumi_yaml_describes_every_setting_of_the_flat_sections():
    """What `pulumi config` shows of a setting is its description in Pulumi.yaml: one that omitted a field (the
    registry_name check tells users to set, the cluster's network policy) left users to guess it exists."""
    from components import spec

    described = {key: entry["description"] for key, entry in
                 yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"].items()}
    sections = {"workspace": [spec.WorkspaceSpec], "router": [spec.RouterSpec], "local": [spec.LocalSpec],
                "cluster": [spec.ClusterSpec, spec.NodePoolSpec, spec.NetworkSpec, spec.VnetSpec, spec.LoadBalancerSpec,
                            spec.SslSpec, spec.AttachSpec]}
    missing = [f"{section}: {name}" for section, models in sections.items() for model in models
               for name in model.model_fields if not re.search(rf"\b{name}\b", described[f"aks-model-serving:{section}"])]
    assert missing == []


def _gpu_warnings(tmp_path: Path, config: dict) -> list[str]:
    return [w for w in load_stack(write_stack(tmp_path, config)).spec.warnings if w.startswith("gpu_cores")]


def test_gpu_capacity_warns_where_autoscaling_or_a_rollout_surge_outgrows_the_pools(tmp_path):
    """BASE's GPU pool is 0-2 nodes of one T4 each: 2 GPUs."""
    config = copy.deepcopy(BASE)
    config[S][0] |= {"gpu_cores": 1, "autoscale_min_replicas": 1, "autoscale_max_replicas": 2}
    assert _gpu_warnings(tmp_path, config) == []
    config[S][0]["autoscale_max_replicas"] = 3
    assert _gpu_warnings(tmp_path, config) == [
        "gpu_cores: autoscaling can ask for 3 GPUs and the GPU pools hold at most 2 GPUs (gpu: 2 x 1); replicas beyond "
        "that stay Pending (lower services[0].autoscale_max_replicas, or raise max_count)"]
    # Two lone replicas fill both GPUs: the new replica of a rollout has none to start on.
    config[S][0] |= {"autoscale_enabled": False, "num_replicas": 1}
    config[S].append({**config[S][0], "name": "svc2"})
    assert len(_gpu_warnings(tmp_path, config)) == 1
    assert "a rollout of a lone GPU replica" in _gpu_warnings(tmp_path, config)[0]
    config[C]["node_pools"][1]["max_count"] = 3
    assert _gpu_warnings(tmp_path, config) == []


def test_gpu_capacity_names_each_autoscaling_deployments_bound_as_its_source_spells_it(tmp_path):
    """The warning said `lower autoscale_max_replicas` for a deployment whose bound its deploymentconfig.json
    gives (autoScaler.maxReplicas), and named no deployment when several autoscale: each is named at its path,
    as its own source spells it, a file's default too (maxReplicas 10 where the file would set it)."""
    dc = {"computeType": "aks", "gpuCores": 1, "autoScaler": {"autoscaleEnabled": True, "minReplicas": 1, "maxReplicas": 3}}
    config = yaml.safe_load(_azureml_stack(tmp_path, dc).read_text())["config"]
    config[S].append({"name": "svc2", "models": ["m:1"], "inference_config": {"entry_script": "score.py"},
                      "gpu_cores": 1, "autoscale_min_replicas": 1, "autoscale_max_replicas": 2})
    in_dc = "services[0].azureml.deployment_config: deploymentconfig.json: "
    assert _gpu_warnings(tmp_path, config) == [
        "gpu_cores: autoscaling can ask for 5 GPUs and the GPU pools hold at most 2 GPUs (gpu: 2 x 1); replicas beyond "
        f"that stay Pending (lower {in_dc}autoScaler.maxReplicas or services[1].autoscale_max_replicas, or raise max_count)"]
    config[S][1] |= {"autoscale_enabled": False, "num_replicas": 1}  # a fixed count has no bound to lower
    del dc["autoScaler"]["maxReplicas"]
    (tmp_path / "aml" / "deploymentconfig.json").write_text(json.dumps(dc))
    assert _gpu_warnings(tmp_path, config) == [
        "gpu_cores: autoscaling can ask for 11 GPUs and the GPU pools hold at most 2 GPUs (gpu: 2 x 1); replicas beyond "
        f"that stay Pending (lower {in_dc}autoScaler.maxReplicas, or raise max_count)"]
    config[S][0]["autoscale_max_replicas"] = 4  # the stack's own wins, and is named as the stack names it
    assert "(lower services[0].autoscale_max_replicas, or raise max_count)" in _gpu_warnings(tmp_path, config)[0]


def test_gpu_capacity_counts_gpus_per_node_and_skips_sizes_it_does_not_know(tmp_path):
    config = copy.deepcopy(BASE)
    config[S][0] |= {"gpu_cores": 4, "num_replicas": 2}
    config[C]["node_pools"][1]["vm_size"] = "Standard_NC64as_T4_v3"  # 4 GPUs a node, 2 nodes: 8
    assert load_stack(write_stack(tmp_path, config)).spec.warnings == []
    config[S][0]["num_replicas"] = 3
    with pytest.raises(StackError, match=r"start with 12 GPUs .* at most 8 GPUs \(gpu: 2 x 4\)"):
        load_stack(write_stack(tmp_path, config))
    config[C]["node_pools"][1]["vm_size"] = "Standard_NC6_v9"  # not in the table: no count to check against
    assert load_stack(write_stack(tmp_path, config)).spec.warnings == []


def test_gpu_capacity_warns_when_the_replicas_fit_the_total_but_not_the_nodes(tmp_path):
    """2 nodes of 4 GPUs: replicas of 3, 3 and 2 GPUs sum to 8, but each node keeps 1 after a 3."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"][1]["vm_size"] = "Standard_NC64as_T4_v3"
    config[S][0] |= {"gpu_cores": 3, "num_replicas": 2}
    config[S].append({**config[S][0], "name": "svc2", "gpu_cores": 2, "num_replicas": 2})
    config[S][1]["num_replicas"] = 1
    warnings = _gpu_warnings(tmp_path, config)
    assert ("gpu_cores: the deployments start with 8 GPUs, within the pools' total, but a replica takes all its GPUs on "
            "one node, and 1 of them (2 GPUs) find no node with that many left") in warnings[0]
    config[S][0]["gpu_cores"] = 2  # 2, 2 and 2 on two nodes of 4
    assert not any("find no node" in w for w in _gpu_warnings(tmp_path, config))


def test_secrets_are_secrets_where_a_setting_takes_them_and_named_where_it_cannot(tmp_path, capsys):
    """A `secure:` value: ciphertext for `check`, decrypted for the program, which learns from the stack
    file which values were secrets (Pulumi marks only the whole setting)."""
    config = copy.deepcopy(BASE)
    environment = {"environment_variables": {"MODE": "fast", "DB_PASSWORD": {"secure": "v1:abc"}}}
    config[S][0]["inference_config"]["environment"] = environment
    sas = "https://mlwtest.blob.core.windows.net/models/m/3?sv=2022&sig=SIGNATURE"
    config["aks-model-serving:models"].append({"name": "m", "version": 3, "url": {"secure": "v1:def"}})
    path = write_stack(tmp_path, config)
    assert check([str(path)]) == 0, capsys.readouterr().out
    variables = load_stack(path).spec.services[0].inference_config.environment
    assert variables.image_variables == {"MODE": "fast"} and list(variables.secret_variables) == ["DB_PASSWORD"]

    secrets = secure_paths(config)
    assert sorted(secrets, key=str) == [
        ("models", 2, "url"), ("services", 0, "inference_config", "environment", "environment_variables", "DB_PASSWORD")]
    decrypted = copy.deepcopy(config)
    decrypted[S][0]["inference_config"]["environment"]["environment_variables"]["DB_PASSWORD"] = "hunter2"
    decrypted["aks-model-serving:models"][2]["url"] = sas
    spec, _ = parse_config(decrypted, tmp_path, secrets)
    assert spec.services[0].inference_config.environment.secret_variables["DB_PASSWORD"].get_secret_value() == "hunter2"
    assert isinstance(spec.models[2].url, SecretStr) and spec.models[2].url_text == sas
    assert "hunter2" not in repr(spec) and "SIGNATURE" not in repr(spec)
    # Decrypted, a secret url is checked as any url.
    decrypted["aks-model-serving:models"][2]["url"] = "https://example.com/m?sig=x"
    with pytest.raises(StackError, match=r"models\[2\].url: a model's url is a blob folder, https://<account>"):
        parse_config(decrypted, tmp_path, secrets)

    # A whole setting made secret decrypts to an object: refused by the program as by check.
    whole = copy.deepcopy(config)
    whole["aks-model-serving:router"] = {"secure": "v1:jkl"}
    assert check([str(write_stack(tmp_path, whole))]) == 2
    assert "router: a secret (secure:) cannot go here" in capsys.readouterr().out
    whole_decrypted = {**decrypted, "aks-model-serving:router": {"namespace": "azureml"}}
    with pytest.raises(StackError, match=r"^router: a secret \(secure:\) cannot go here"):
        parse_config(whole_decrypted, tmp_path, secure_paths(whole))

    # A setting that is not kept secret says so, rather than "Input should be a valid string".
    config[S][0]["inference_config"]["entry_script"] = {"secure": "v1:ghi"}
    assert check([str(write_stack(tmp_path, config))]) == 2
    assert "services[0].inference_config.entry_script: a secret (secure:) cannot go here" in capsys.readouterr().out


def test_fpga_replicas_warn_that_no_fpga_device_plugin_is_installed(tmp_path):
    config = copy.deepcopy(BASE)
    config[C]["node_pools"].append({"name": "fpga", "vm_size": "Standard_PB6s", "count": 1})
    config[S][0]["fpga_cores"] = 1
    warnings = load_stack(write_stack(tmp_path, config)).spec.warnings
    assert any(w.startswith("services[0].fpga_cores: nodes advertise microsoft.com/fpga only through the FPGA vendor's")
               for w in warnings), warnings
    assert not [w for w in load_stack(write_stack(tmp_path, BASE)).spec.warnings if "fpga" in w]


def test_a_spec_used_by_two_stacks_is_not_changed_by_either():
    """A dev_test stack turned autoscaling off on the very ServiceSpec it was given, so the same object in
    a production stack (a platform template's) lost it too."""
    from components.spec import ServiceSpec, StackSpec

    service = ServiceSpec.model_validate({"name": "iris", "inference_config": {"entry_script": "score.py"}, "autoscale_enabled": True})
    cluster = {"name": "aks", "node_pools": [{"name": "system", "mode": "System", "count": 3, "vm_size": "Standard_D4s_v3"}]}
    workspace = {"name": "mlw", "resource_group": "rg"}
    dev = StackSpec(workspace=workspace, cluster={**cluster, "cluster_purpose": "dev_test"}, services=[service])
    prod = StackSpec(workspace=workspace, cluster={**cluster, "cluster_purpose": "fast_prod"}, services=[service])
    assert dev.services[0].autoscale_enabled is False
    assert prod.services[0].autoscale_enabled is True and service.autoscale_enabled is True


@pytest.mark.parametrize("name", ["inferenceconfig.json", "deploymentconfig.json"])
def test_the_example_azure_ml_files_pass_check(name, capsys):
    """The README points at them: an Azure ML user's files, checked on their own or named by a stack (azureml:)."""
    assert check([str(ROOT / "examples" / "azureml" / name)]) == 0, capsys.readouterr().out


def test_check_finds_what_plan_and_local_up_would_refuse_on_this_machines_files(tmp_path, capsys):
    """check said "valid" to a conda file without the scorer's Python, which plan then refused, and to a
    secret a local stack cannot decrypt, which `local up` then refused; a model folder a training run makes
    later is told, not refused."""
    config = copy.deepcopy(BASE)
    (tmp_path / "env.yml").write_text("dependencies: [numpy]\n")
    config[S][0]["inference_config"]["environment"] = {"conda_file": "env.yml"}
    assert check([str(write_stack(tmp_path, config))]) == 2
    assert ("services[0].inference_config.environment.conda_file: the scorer runs in this environment, on Python 3.11"
            in capsys.readouterr().out)

    local = {"aks-model-serving:models": [{"name": "m", "version": 1, "path": "models/m/1"}],
             "aks-model-serving:services": [{"name": "svc", "models": ["m:1"], "inference_config": {
                 "entry_script": "score.py", "environment": {"environment_variables": {"DB_PASSWORD": {"secure": "v1:abc"}}}}}]}
    assert check([str(write_stack(tmp_path, local))]) == 2
    assert ("services[0].inference_config.environment.environment_variables.DB_PASSWORD: a secret (secure:), which the "
            "local stack cannot decrypt") in capsys.readouterr().out

    local["aks-model-serving:services"][0]["inference_config"]["environment"] = {}
    assert check([str(write_stack(tmp_path, local))]) == 0
    assert f"warning: models[0].path: {tmp_path / 'models' / 'm' / '1'} does not exist" in capsys.readouterr().out


def test_a_local_stack_serving_a_model_from_a_url_is_named(tmp_path, capsys):
    """The local stack serves models from folders on this machine, it downloads nothing: a blob url there would
    leave the replicas without their model. A cluster stack takes one (its replicas download it)."""
    url = "https://acct1.blob.core.windows.net/m/1"
    local = {"aks-model-serving:models": [{"name": "m", "version": 1, "url": url}],
             "aks-model-serving:services": [{"name": "svc", "models": ["m:1"], "inference_config": {"entry_script": "score.py"}}]}
    assert check([str(write_stack(tmp_path, local))]) == 2
    assert "models[0].url: the local stack serves models from folders on this machine; give path" in capsys.readouterr().out
    config = copy.deepcopy(BASE)
    config["aks-model-serving:models"][0] = {"name": "m", "version": 1, "url": url}
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c.pop("azure-native:location"), "workspace.location: no Azure region"),
    (lambda c: c[W].update(resource_group="rg-" + "x" * 60), "cluster.name: AKS would name the nodes' resource group"),
    (lambda c: None, None),
], ids=["no-region", "node-resource-group-too-long", "as-given"])
def test_check_finds_what_azure_would_refuse_as_plan_does(tmp_path, capsys, edit, expected):
    """check once said valid (exit 0) for a stack that plan and `pulumi up` refuse."""
    config = copy.deepcopy(BASE)
    edit(config)
    code = check([str(write_stack(tmp_path, config))])
    out = capsys.readouterr().out
    assert code == (0 if expected is None else 2) and (expected or "valid") in out, out


@pytest.mark.parametrize("needed", ["router_image/Dockerfile", "pyproject.toml"])
def test_check_finds_a_missing_image_source_as_plan_does(tmp_path, capsys, needed):
    path = write_stack(tmp_path, BASE)
    (tmp_path / needed).unlink()
    assert check([str(path)]) == 2
    assert f"{needed}: not found under" in capsys.readouterr().out


def test_memory_far_beyond_what_the_nodes_have_is_warned_about(tmp_path):
    """memory_gb 1024, meant as MB: the nodes have 16 GB."""
    config = copy.deepcopy(BASE)
    config[S][0]["memory_gb"] = 1024
    warnings = load_stack(write_stack(tmp_path, config)).spec.warnings
    assert any(w.startswith("services[0].memory_gb: 1024 GB per replica (memory_gb is in GB), more than a Standard_D4s_v3 "
                            "node (4 vCPUs, pool system)") for w in warnings), warnings
    config[S][0]["memory_gb"] = 12
    assert not [w for w in load_stack(write_stack(tmp_path, config)).spec.warnings if "memory_gb" in w]


def test_a_cpu_replica_is_measured_against_the_pools_it_can_land_on(tmp_path, capsys):
    """A System pool tainted CriticalAddonsOnly keeps model pods off; the untainted User pool is where they run."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"][0]["taints"] = [CRITICAL]
    config[C]["node_pools"].append({"name": "big", "vm_size": "Standard_D16s_v3", "count": 1})
    config[S][0]["cpu_cores"] = 8
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out
    config[C]["node_pools"][2]["vm_size"] = "Standard_D8s_v3"
    assert check([str(write_stack(tmp_path, config))]) == 2
    assert "(Standard_D8s_v3, pool big) has 8 vCPUs" in capsys.readouterr().out


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    """`check ... | head -1` ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "components", "check", str(ROOT / "stacks" / "Pulumi.prod.yaml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before it writes: its first line meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("field, kind, label", [("gpu_cores", "GPU", "gpu"), ("fpga_cores", "FPGA", "fpga")])
def test_accelerator_replicas_on_an_attached_cluster_are_told_the_node_label_they_need(tmp_path, field, kind, label):
    """Only pools this stack creates carry the label the replicas select and a device plugin: an attached
    cluster's GPU nodes do not, and its replicas stayed Pending without a word."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"] = []
    config[C]["attach"] = {"kubeconfig": "~/.kube/config"}
    config[S][0][field] = 1
    warnings = load_stack(write_stack(tmp_path, config)).spec.warnings
    assert any(w.startswith(f"services[0].{field}: on an attached cluster these replicas run only on nodes labelled "
                            f"aks-model-serving/accelerator={label}") and f"label the cluster's {kind} nodes" in w
               for w in warnings), warnings
    config[S][0][field] = 0
    assert not any("on an attached cluster" in w for w in load_stack(write_stack(tmp_path, config)).spec.warnings)


def _endpoint_of_files(tmp_path: Path, dc: dict, endpoint: dict | None = None) -> Path:
    """BASE with its endpoint's treatment read from Azure ML files (dc as its deploymentconfig.json)."""
    (tmp_path / "aml").mkdir(exist_ok=True)
    (tmp_path / "aml" / "deploymentconfig.json").write_text(json.dumps(dc))
    (tmp_path / "aml" / "inferenceconfig.json").write_text(json.dumps({"entryScript": "../score.py"}))
    config = copy.deepcopy(BASE)
    config[E][0] |= endpoint or {}
    config[E][0]["versions"][1] = {"version_name": "treat", "models": ["m:2"], "traffic_percentile": 20, "azureml": {
        "inference_config": "aml/inferenceconfig.json", "deployment_config": "aml/deploymentconfig.json"}}
    return write_stack(tmp_path, config)


def test_an_endpoint_versions_deployment_config_may_say_the_endpoints_auth(tmp_path, capsys):
    """A deploymentconfig.json carries authEnabled (the README's example does): under an endpoint's version it
    was refused as 'unknown field (check its spelling)', so no such file could be used for a version at all.
    An endpoint's versions share its auth (as under Azure ML's AksEndpoint): the file's auth settings pass when
    they are the endpoint's, and are refused, naming the endpoint's setting, when they are not."""
    example = json.loads((ROOT / "examples" / "azureml" / "deploymentconfig.json").read_text())
    assert check([str(_endpoint_of_files(tmp_path, example))]) == 0, capsys.readouterr().out
    token = {"auth_enabled": False, "token_auth_enabled": True}
    assert check([str(_endpoint_of_files(tmp_path, {"computeType": "aks", "authEnabled": False,
                                                    "tokenAuthEnabled": True}, token))]) == 0, capsys.readouterr().out
    in_dc = "endpoints[0].versions[1].azureml.deployment_config: deploymentconfig.json: "
    with pytest.raises(StackError) as err:
        load_stack(_endpoint_of_files(tmp_path, {"computeType": "aks", "authEnabled": False, "tokenAuthEnabled": True}))
    assert err.value.problems == [
        in_dc + "authEnabled: false, where the endpoint's auth_enabled is true: an endpoint's versions share its auth, "
                "as under Azure ML's AksEndpoint; set auth_enabled on the endpoint",
        in_dc + "tokenAuthEnabled: true, where the endpoint's token_auth_enabled is false: an endpoint's versions share "
                "its auth, as under Azure ML's AksEndpoint; set token_auth_enabled on the endpoint"]
    with pytest.raises(StackError) as err:
        load_stack(_endpoint_of_files(tmp_path, {"computeType": "aks", "keys": {"primaryKey": "s3cret-version-key"}}))
    assert err.value.problems == [
        in_dc + "keys.primaryKey: not the endpoint's primary key: an endpoint's versions share its keys; give it as the "
                "endpoint's primary_key (a secret)"]
    # The endpoint's key still encrypted (check, plan): it cannot be compared, so it is not refused.
    assert check([str(_endpoint_of_files(tmp_path, {"computeType": "aks", "keys": {"primaryKey": "s3cret-version-key"}},
                                         {"primary_key": {"secure": "v1:abc"}}))]) == 0, capsys.readouterr().out
    # The same key given to the endpoint (decrypted, as the program gets it): the file says what the endpoint has.
    config = yaml.safe_load(_endpoint_of_files(tmp_path, {"computeType": "aks", "keys": {"primaryKey": "s3cret-version-key"}},
                                               {"primary_key": {"secure": "v1:abc"}}).read_text())["config"]
    secrets = secure_paths(config)
    config[E][0]["primary_key"] = "s3cret-version-key"
    assert parse_config(config, tmp_path, secrets)[0].endpoints[0].versions[1].version_name == "treat"
    # Written in the stack beside the version, it is still no version's setting.
    config = yaml.safe_load(_endpoint_of_files(tmp_path, {"computeType": "aks"}).read_text())["config"]
    config[E][0]["versions"][1]["auth_enabled"] = True
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert err.value.problems == ["endpoints[0].versions[1].auth_enabled: unknown field here; it is a setting of "
                                  "services[] or endpoints[]"]


def test_an_aksendpoint_deployment_config_is_a_versions(tmp_path, capsys):
    """`az ml endpoint realtime create` takes a deploymentconfig.json of computeType AKSENDPOINT, which names the
    version (versionName) and its share (trafficPercentile): it was refused everywhere, under endpoints[].versions
    too, where its own message sent the user. It is a version's file; under a service (whose URL is
    /api/v1/service/..., not the endpoint's) it is refused, saying where it goes."""
    dc = {"computeType": "AKSENDPOINT", "versionName": "treat", "trafficPercentile": 20, "numReplicas": 2,
          "authEnabled": True}
    path = _endpoint_of_files(tmp_path, dc)
    config = yaml.safe_load(path.read_text())["config"]
    del config[E][0]["versions"][1]["version_name"], config[E][0]["versions"][1]["traffic_percentile"]
    version = load_stack(write_stack(tmp_path, config)).spec.endpoints[0].versions[1]
    assert (version.version_name, version.traffic_percentile, version.num_replicas) == ("treat", 20, 2)
    assert check([str(tmp_path / "aml" / "deploymentconfig.json")]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "  version_name = treat" in out and "  traffic_percentile = 20.0" in out
    (tmp_path / "aml" / "deploymentconfig.json").write_text(json.dumps(dc | {"trafficPercentile": 120}))
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert err.value.problems == ["endpoints[0].versions[1].azureml.deployment_config: deploymentconfig.json: "
                                  "trafficPercentile: Input should be less than or equal to 100"]
    with pytest.raises(StackError) as err:
        load_stack(_azureml_stack(tmp_path, dc))
    assert err.value.problems == [
        "services[0].azureml.deployment_config: deploymentconfig.json: computeType: AKSENDPOINT is an endpoint "
        "version's file; give it under endpoints[].versions[].azureml (a service's computeType is aks)"]
    with pytest.raises(StackError) as err:
        load_stack(_azureml_stack(tmp_path, {"computeType": "aks", "versionName": "treat"}))
    assert err.value.problems == [
        "services[0].azureml.deployment_config: deploymentconfig.json: versionName: only an endpoint version's file "
        "(computeType AKSENDPOINT) names a version"]


def test_a_cluster_attached_by_kubeconfig_is_told_it_cannot_pull_the_images_until_granted(tmp_path):
    """The workspace's registry is made by the stack with its admin user off, and only an AKS cluster's kubelet
    identity is granted AcrPull: a kubeconfig cluster got no credentials, so its first up timed out on pods in
    ImagePullBackOff without a word before."""
    config = copy.deepcopy(BASE)
    config[C]["node_pools"] = []
    config[C]["attach"] = {"kubeconfig": "~/.kube/config"}
    warnings = load_stack(write_stack(tmp_path, config)).spec.warnings
    assert any(w.startswith("cluster.attach.kubeconfig: the router's and the models' images are pulled from the "
                            "workspace's registry mlwtestacr.azurecr.io") and "AcrPull" in w for w in warnings), warnings
    config[C]["attach"] = {"resource_id": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"}
    assert not any(w.startswith("cluster.attach") for w in load_stack(write_stack(tmp_path, config)).spec.warnings)


def test_a_misspelt_key_is_named_with_the_key_it_is_close_to_at_every_level(tmp_path, capsys):
    """'unknown field (check its spelling ...)' left the user to find the right spelling in the docs, at every
    level (a setting, a cluster's, a pool's, a service's, an Azure ML file's camelCase key); a key close to none
    (auth_enabled on a version: the endpoint's) says where it belongs."""
    config = copy.deepcopy(BASE)
    config["aks-model-serving:routr"] = {}
    config[C]["cluster_purpse"] = config[C].pop("cluster_purpose")
    config[C]["node_pools"][0]["vmsize"] = config[C]["node_pools"][0].pop("vm_size")
    config[S][0]["num_replica"] = 1
    config[E][0]["versions"][0]["auth_enabled"] = True
    with pytest.raises(StackError) as err:
        load_stack(write_stack(tmp_path, config))
    assert sorted(err.value.problems) == [
        "cluster.cluster_purpse: unknown field; did you mean cluster_purpose?",
        "cluster.node_pools[0].vmsize: unknown field; did you mean vm_size?",
        "endpoints[0].versions[0].auth_enabled: unknown field here; it is a setting of services[] or endpoints[]",
        "routr: unknown field; did you mean router?",
        "services[0].num_replica: unknown field; did you mean num_replicas?",
    ]
    (tmp_path / "deploymentconfig.json").write_text(json.dumps({"computeType": "aks", "autoScaler": {"maxReplica": 2}}))
    assert check([str(tmp_path / "deploymentconfig.json")]) == 2
    assert "deployment_config: deploymentconfig.json: autoScaler.maxReplica: unknown field; did you mean maxReplicas?" in capsys.readouterr().out


def test_a_value_yaml_reads_as_a_number_boolean_or_date_where_text_is_expected_is_told_to_be_quoted(tmp_path):
    """kubernetes_version: 1.30 is the number 1.3 to YAML, yes a boolean, 2024-01-01 a date: 'Input should be a
    valid string (given: 1.3)' named a value the user never wrote and did not say why, a date's not even that."""
    config = copy.deepcopy(BASE)
    config[C]["kubernetes_version"] = 1.3
    config[S][0]["tags"] = {"gpu": True}
    config[S][0]["description"] = datetime.date(2024, 1, 1)
    config[S][0]["inference_config"]["environment"] = {"environment_variables": {"WORKERS": 4}}
    config["aks-model-serving:models"][0]["version"] = datetime.date(2024, 1, 1)
    path = write_stack(tmp_path, config)
    assert "kubernetes_version: 1.3\n" in path.read_text() and "description: 2024-01-01\n" in path.read_text()
    with pytest.raises(StackError) as err:
        load_stack(path)
    assert sorted(err.value.problems) == [
        "cluster.kubernetes_version: a number (1.3) where text is expected; quote it (unquoted, 1.30 reads as the number 1.3)",
        "models[0].version: Input should be a valid integer (given: 2024-01-01)",
        "services[0].description: a date (2024-01-01) where text is expected; quote it (YAML reads 2024-01-01 unquoted as a date)",
        "services[0].inference_config.environment.environment_variables.WORKERS: a number where text is expected; quote it",
        "services[0].tags.gpu: a boolean (True) where text is expected; quote it (YAML reads yes, no, on and off "
        "unquoted as booleans)",
    ]


def test_settings_nested_under_the_project_or_written_without_it_are_named_as_they_should_be(tmp_path):
    """`aks-model-serving:` as a mapping of the settings (YAML's nesting for Pulumi's namespace) was told 'keys are
    namespaced, e.g. aks-model-serving:aks-model-serving', and `services:` alone 'e.g. aks-model-serving:services'
    only by chance of spelling: each now says the key to write."""
    with pytest.raises(StackError) as err:
        parse_config({"aks-model-serving": {"services": [], "cluster": {}}, "servics": [], "location": "westeurope"}, tmp_path)
    assert err.value.problems == [
        "config.aks-model-serving: settings are not nested under the project; write each as its own key of config:, "
        "aks-model-serving:services, aks-model-serving:cluster",
        "config.servics: keys are namespaced; did you mean aks-model-serving:services?",
        "config.location: keys are namespaced, e.g. aks-model-serving:location",
    ]


def test_a_setting_of_json_text_that_is_not_json_or_a_scalar_where_settings_go_is_named_so(tmp_path):
    """`pulumi config set aks-model-serving:services '[{"name": "iris",}]'` stores text that json.loads refuses: it
    was validated as text ('Input should be a valid list'), and a scalar where a mapping goes named pydantic's
    class (RouterSpec)."""
    with pytest.raises(StackError) as err:
        parse_config({"aks-model-serving:services": '[{"name": "iris",}]'}, tmp_path)
    assert err.value.problems == ["config.aks-model-serving:services: JSON text (as pulumi config set stores an object) "
                                  "that is not JSON: line 1, column 18: Expecting property name enclosed in double quotes"]
    with pytest.raises(StackError) as err:
        parse_config({"aks-model-serving:router": 3, "aks-model-serving:models": "m:1"}, tmp_path)
    # Not shown: the program gets a whole setting made secret decrypted, as text.
    assert err.value.problems == ["router: Input should be a mapping of settings", "models: Input should be a valid list"]


def test_an_integer_written_with_a_leading_zero_is_refused_with_its_line_and_what_to_write(tmp_path, capsys):
    """YAML 1.1 (PyYAML, and so check and plan) reads `count: 010` as the octal number 8: the stack was checked
    and planned with 8 nodes, without a word."""
    (tmp_path / "Pulumi.octal.yaml").write_text(
        "config:\n"
        "  aks-model-serving:router:\n"
        "    min_replicas: 02\n"
        "    max_replicas: 010\n"
        "    cpu_cores: '010'\n")  # quoted: text, read as the number 10
    assert check([str(tmp_path / "Pulumi.octal.yaml")]) == 2
    problems = [p.strip() for p in capsys.readouterr().out.splitlines()[1:]]
    assert problems == [
        "config.aks-model-serving:router.min_replicas: 02 (line 3) is an octal number to YAML 1.1 (2); write 2, "
        "without the leading 0",
        "config.aks-model-serving:router.max_replicas: 010 (line 4) is an octal number to YAML 1.1 (8); write 10, "
        "without the leading 0 (or 8, if octal was meant)"]


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c.update({"azure-native:location": "westeurpe"}),
     "config.azure-native:location: 'westeurpe' is not an Azure region; did you mean westeurope?"),
    (lambda c: c[W].update(location="North Europ"),
     "workspace.location: 'North Europ' is not an Azure region; did you mean northeurope?"),
    (lambda c: c[W].update(location="moon-base-1"), "workspace.location: 'moon-base-1' is not an Azure region ("),
], ids=["provider-misspelt", "workspace-misspelt", "none-close"])
def test_a_location_that_is_no_azure_region_is_refused_with_the_one_it_is_close_to(tmp_path, capsys, edit, expected):
    """`location: westeurpe` passed check and plan; Azure refused it at `pulumi up`."""
    config = copy.deepcopy(BASE)
    edit(config)
    assert check([str(write_stack(tmp_path, config))]) == 2
    problems = [p.strip() for p in capsys.readouterr().out.splitlines()[1:]]
    assert any(p.startswith(expected) for p in problems), problems


def test_a_region_in_its_display_name_passes(tmp_path, capsys):
    config = copy.deepcopy(BASE)
    config[W]["location"] = "West Europe"
    assert check([str(write_stack(tmp_path, config))]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("edits,expected", [
    ([(CL + ["autoscale_max_replicas"], 4)],
     "cluster.autoscale_max_replicas: unknown field here; it is a setting of services[] or endpoints[].versions[]"),
    ([(["aks-model-serving:node_pools"], [])], "node_pools: unknown field here; it is a setting of cluster"),
    ([(["aks-model-serving:router_port"], 9000)], "router_port: unknown field here; it is a setting of local"),
    ([(CL + ["node_pools", 0, "vm_sizes"], "x")], "cluster.node_pools[0].vm_sizes: unknown field; did you mean vm_size?"),
], ids=["deployment-setting-on-the-cluster", "pools-at-the-top", "local-setting-at-the-top", "misspelt-stays-so"])
def test_a_setting_at_the_wrong_level_says_where_it_belongs(tmp_path, capsys, edits, expected):
    """A setting put one level off was told only "unknown field (check its spelling ...)", though its spelling was right."""
    config = copy.deepcopy(BASE)
    for keys, value in edits:
        _set(config, keys, value)
    assert check([str(write_stack(tmp_path, config))]) == 2
    problems = [p.strip() for p in capsys.readouterr().out.splitlines()[1:]]
    assert expected in problems, problems


KEY_TEXT = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"


def test_a_key_in_clear_text_in_a_cluster_stack_is_refused_without_showing_it(tmp_path, capsys):
    """A service key or the TLS private key written in clear in a stack file passed check and plan: committed with
    the file, it is in every clone and its history. Pulumi keeps such values as `secure:` config."""
    config = copy.deepcopy(BASE)
    config[S][0]["primary_key"] = KEY_TEXT
    config[E][0]["secondary_key"] = KEY_TEXT
    config[C]["ssl"] = {"cname": "scoring.example.com", "certificate": "-----BEGIN CERTIFICATE-----", "key": KEY_TEXT}
    path = write_stack(tmp_path, config)
    assert check([str(path)]) == 2
    out = capsys.readouterr().out
    assert KEY_TEXT not in out
    problems = [p.strip() for p in out.splitlines()[1:]]
    for where in ("services[0].primary_key", "endpoints[0].secondary_key", "cluster.ssl.key"):
        assert (f"{where}: a secret in clear text in the stack file; keep it as a Pulumi secret: "
                f"pulumi config set --secret --path 'aks-model-serving:{where}' <value>") in " ".join(problems), out
    assert not any("certificate" in p for p in problems)  # a certificate is public

    decrypted = {k: v for k, v in config.items()}  # as the program gets it: secure paths decrypted, none here
    with pytest.raises(StackError) as refused:
        parse_config(decrypted, tmp_path, secure_paths(config))
    assert any(p.startswith("services[0].primary_key: a secret in clear text") for p in refused.value.problems)

    config[S][0]["primary_key"] = {"secure": "v1:abc"}
    secured = secure_paths(config)
    config[S][0]["primary_key"] = KEY_TEXT  # decrypted by Pulumi for the program: a secret, not clear text
    with pytest.raises(StackError) as refused:
        parse_config(config, tmp_path, secured)
    assert not any(p.startswith("services[0].primary_key") for p in refused.value.problems)


def test_a_local_stack_may_give_its_keys_in_clear(tmp_path, capsys):
    """The local stack serves on loopback and cannot decrypt secure: values: its keys are given in clear or made."""
    local = {"aks-model-serving:models": [{"name": "m", "version": 1, "path": "models/m/1"}],
             "aks-model-serving:services": [{"name": "svc", "models": ["m:1"], "primary_key": KEY_TEXT,
                                             "inference_config": {"entry_script": "score.py"}}]}
    assert check([str(write_stack(tmp_path, local))]) == 0, capsys.readouterr().out
