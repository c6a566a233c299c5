"""Why a valid stack still cannot go to a cluster, each line naming the field: what Azure or the image
build would refuse, and what its files on this machine lack.

Free of Pulumi, as sources.py is, so that `check` finds these without Pulumi's SDK installed.
"""

from __future__ import annotations

from components.pyproject import PYPROJECT
from components.sources import missing_models, read_kubeconfig, source_problems
from components.regions import region_name, region_problem
from components.stackfile import Stack

# https://aka.ms/aks-naming-rules: "The maximum length is 80" for the node resource group.
NODE_RESOURCE_GROUP_MAX = 80
DOCKERFILES = {"scorer": "scoring_image/Dockerfile", "router": "router_image/Dockerfile"}


def deployable_problems(stack: Stack) -> list[str]:
    """Why a valid stack still cannot go to a cluster (each line names the field)."""
    return cluster_problems(stack) + source_problems(stack, local=False) + missing_models(stack, local=False)


def cluster_problems(stack: Stack) -> list[str]:
    """What Azure or the image build would refuse in a valid stack, apart from its app sources and models
    (`check` tells those missing as warnings: a training run may make them later)."""
    spec = stack.spec
    if spec.is_local:
        return [f"cluster: none declared; this stack runs on this machine (python -m components local up {stack.path}); "
                "add workspace: and cluster: to deploy it (see stacks/Pulumi.dev.yaml)"]
    problems = []
    if stack.location is None:
        problems.append("workspace.location: no Azure region; set it or azure-native:location")
    elif problem := region_problem(stack.location):
        given = spec.workspace.location if spec.workspace is not None else None
        problems.append(f"{'workspace.location' if given else 'config.azure-native:location'}: {problem}")
    elif spec.cluster is not None and spec.workspace is not None and spec.cluster.attach is None:
        problems += _node_resource_group(spec.workspace.resource_group, spec.cluster.name, stack.location)
    attach = spec.cluster.attach if spec.cluster is not None else None
    if attach is not None and attach.kubeconfig:
        try:
            read_kubeconfig(stack.resolve(attach.kubeconfig))
        except ValueError as exc:
            problems.append(str(exc))
    for needed in (*DOCKERFILES.values(), PYPROJECT):
        if not (stack.project_dir / needed).is_file():
            problems.append(f"{needed}: not found under {stack.project_dir}; an image is built from it")
    return problems


def _node_resource_group(resource_group: str, cluster: str, location: str) -> list[str]:
    """AKS puts the nodes in a group it names MC_<group>_<cluster>_<region> and refuses a cluster whose
    name for it passes 80 characters, after the rest of the stack has been created."""
    name = f"MC_{resource_group}_{cluster}_{region_name(location)}"
    if len(name) <= NODE_RESOURCE_GROUP_MAX:
        return []
    return [f"cluster.name: AKS would name the nodes' resource group {name!r}, {len(name)} characters, and refuses "
            f"more than {NODE_RESOURCE_GROUP_MAX}; shorten cluster.name or workspace.resource_group by {len(name) - NODE_RESOURCE_GROUP_MAX}"]
