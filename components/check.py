"""`python -m components check FILE`: is this stack (or Azure ML JSON file) usable?

Exit 0 with a one-screen summary, or exit 2 with every problem as `path.to.field: message`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

import yaml

from components.azureml import AzureMlFileError, Origin, in_files, kind_of, load_deployment_config, load_inference_config, named
from components.deployable import cluster_problems
from components.sources import conda_problems, entry_script_problems, missing_models, source_problems
from components.spec import InferenceConfigSpec, StackSpec, WebserviceSettings, registry_name, storage_account_name
from components.stackfile import StackError, load_stack
from components.validation import format_errors
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def summary(spec: StackSpec, name: str) -> list[str]:
    lines = [f"stack {name}: valid"]
    if spec.workspace:
        # Global names: Azure refuses one taken anywhere, which only `pulumi up` finds out.
        lines.append(f"  workspace   {spec.workspace.name} (resource group {spec.workspace.resource_group}, "
                     f"registry {registry_name(spec.workspace)}, storage account {storage_account_name(spec.workspace)}: "
                     "global names; if Azure says one is taken, set registry_name / storage_account_name)")
    c = spec.cluster
    if c is None:
        lines.append("  cluster     none: runs on this machine (python -m components local up)")
    elif c.attach:
        lines.append(f"  cluster     {c.name}: attached ({'resource id' if c.attach.resource_id else 'kubeconfig'}), {c.cluster_purpose}")
    else:
        net = c.network
        lines.append(f"  cluster     {c.name}: {c.cluster_purpose}, kubernetes {c.kubernetes_version}, network {net.plugin}"
                     f" (services {net.service_cidr}, dns {net.dns_service_ip}), load balancer {c.load_balancer.type}")
        for p in c.node_pools:
            size = f"{p.count} nodes" if p.min_count is None else f"{p.min_count}-{p.max_count} nodes"
            lines.append(f"    pool {p.name:<12} {p.mode:<6} {p.vm_size:<20} {size}{'' if p.accelerator == 'none' else ', ' + p.accelerator}")
    lines.append(f"  models      {len(spec.models)}")
    for path, dep in spec.deployments():
        scale = (f"autoscale {dep.autoscale_min_replicas}-{dep.autoscale_max_replicas} at {dep.autoscale_target_utilization}%"
                 if dep.autoscale_enabled else f"{dep.replicas} replicas fixed")
        lines.append(f"  {path:<28} {len(dep.models)} models, cpu {dep.cpu_cores:g}/{dep.cpu_limit:g}, "
                     f"memory {dep.memory_gb:g}/{dep.memory_limit_gb:g} GB{', gpu ' + str(dep.gpu_cores) if dep.gpu_cores else ''}, {scale}")
    for s in spec.services:
        lines.append(f"  service  {s.name}: /api/v1/service/{s.name}/score, auth {_auth(s.auth_enabled, s.token_auth_enabled)}")
    for e in spec.endpoints:
        split = ", ".join(f"{v.version_name} {v.traffic_percentile:g}%{' default' if v.is_default else ''}{' control' if v.is_control_version_type else ''}" for v in e.versions)
        lines.append(f"  endpoint {e.name}: /api/v1/endpoint/{e.name}/score, auth {_auth(e.auth_enabled, e.token_auth_enabled)}; {split}")
    lines += [f"warning: {w}" for w in spec.warnings]
    return lines


def _auth(key: bool, token: bool) -> str:
    return "token" if token else "key" if key else "off"


def check_azureml(path: Path) -> list[str]:
    """Validate one Azure ML JSON file as the spec it maps onto."""
    try:
        kind = kind_of(path)
        if kind is None:
            raise StackError([f"{path}: not a deploymentconfig.json (computeType) or inferenceconfig.json (entryScript)"])
        if kind == "deployment_config":
            settings = _validated(WebserviceSettings, *load_deployment_config(path))
            return [f"{path}: valid deployment config", *(f"  {k} = {v}" for k, v in settings.model_dump(exclude={"primary_key", "secondary_key"}).items())]
        values, origins = load_inference_config(path)
        # Validated on its own, not as a service's inference_config: its paths start below that field.
        spec = _validated(InferenceConfigSpec, values, origins, at=("inference_config",))
        def name(field: str) -> str:
            return named(origins, f"inference_config.{field}")

        # As plan finds them for a cluster stack naming the file: its image is built from them.
        if problems := entry_script_problems(Path, name, spec) + conda_problems(Path, name, spec):
            raise StackError(problems)
        return [f"{path}: valid inference config", f"  entry_script = {spec.entry_script}", f"  source_directory = {spec.source_directory}"]
    except AzureMlFileError as exc:
        raise StackError(str(exc).splitlines()) from None


def _validated(model: type[M], values: dict[str, Any], origins: dict[str, Origin], at: tuple[str, ...] = ()) -> M:
    """All of it is the file's: its problems are told in the file's keys, as the file's own ones are, through
    the origins a stack's deployment gets (`at`: where the model sits in their spec names)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise StackError(format_errors(in_files(exc, origins, at))) from None


def _is_stack_file(path: Path) -> bool:
    """A stack file holds its settings under `config:`, which no Azure ML file has (JSON, or YAML as its CLI
    reads them); a file that cannot be read is told so by the stack's reader, when named as Pulumi names it."""
    if path.name.startswith("Pulumi."):
        return True
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "config" in data  # `config:` with nothing under it too


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m components check", description=__doc__)
    parser.add_argument("file", type=Path, help="stacks/Pulumi.<stack>.yaml, deploymentconfig.json or inferenceconfig.json")
    args = parser.parse_args(argv)
    try:
        if not _is_stack_file(args.file):
            lines = check_azureml(args.file)
        else:
            stack = load_stack(args.file)
            # What plan, `pulumi up` or `local up` would refuse, found here first; model folders a
            # training run makes later are only told.
            problems = source_problems(stack, local=stack.spec.is_local)
            if not stack.spec.is_local:
                problems = cluster_problems(stack) + problems
            if problems:
                raise StackError(problems)
            lines = summary(stack.spec, stack.name)
            lines += [f"warning: {m} (plan and local up need it)" for m in missing_models(stack, local=stack.spec.is_local)]
    except StackError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s)")
        for line in exc.problems:
            print(f"  {line}")
        return 2
    print("\n".join(lines))
    return 0
