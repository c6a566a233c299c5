"""`python -m components plan stacks/Pulumi.<stack>.yaml [--out DIR] [--policy-config FILE]`.

A policy-checked preview with no credentials and no Pulumi CLI: the program runs under Pulumi
mocks (components.mocks), then
- the resource tree is printed with counts by type,
- every Kubernetes object is validated against the cluster version's schema (strict: a
  misspelled field fails; custom resources such as cert-manager's Certificate have no schema
  and are skipped) and written to DIR as YAML when --out is given,
- the policy pack's rules (policy.rules) run on the declared resources, as
  `pulumi preview --policy-pack policy` would run them.
Exit 0 when all passed, 1 on any schema error or policy violation (each named with its
resource), 2 when the stack itself is unusable. A stack without a cluster (the local stack)
has nothing to deploy on a cluster: plan says so and exits 0.

--policy-config is the JSON file `pulumi preview --policy-pack-config` takes
(`{"auth-on-for-public-services": {"allowAnonymous": ["name"]}}`, enforcement levels included).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.deployable import deployable_problems
from components.spec import KUBERNETES_VERSION
from components.stackfile import Stack, StackError, load_stack

SECRET = "[secret]"


@dataclass
class Finding:
    what: str  # "schema" or a policy rule name
    resource: str  # "<type> <name>" or "stack"
    message: str
    level: str = "mandatory"  # or "advisory": reported, but the plan still passes (as `pulumi preview`)


@dataclass
class Plan:
    recording: Any  # components.mocks.Recording
    outputs: dict[str, Any]
    secret_outputs: list[str]
    findings: list[Finding] = field(default_factory=list)
    validated: int = 0
    skipped: list[str] = field(default_factory=list)  # manifests without a schema (custom resources)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m components plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", type=Path, help="stacks/Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="write the rendered Kubernetes manifests here")
    parser.add_argument("--policy-config", type=Path, help="policy configuration (pulumi's --policy-pack-config format)")
    args = parser.parse_args(argv)
    try:
        stack = load_stack(args.stack)
        policy_config = json.loads(args.policy_config.read_text()) if args.policy_config else {}
    except StackError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"--policy-config: {exc}", file=sys.stderr)
        return 2
    if problems := policy_config_problems(policy_config):
        print("\n".join(f"--policy-config: {p}" for p in problems), file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"--out: {args.out} is a file; give a new or empty folder", file=sys.stderr)
        return 2
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()) and not (args.out / OUT_MARKER).exists():
        print(f"--out: {args.out} holds files plan did not write; give a new or empty folder", file=sys.stderr)
        return 2
    if stack.spec.is_local:
        print(f"stack {stack.name}: no cluster declared, so nothing to deploy on a cluster.\n"
              f"It runs on this machine: python -m components local up {args.stack}")
        for warning in stack.spec.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return 0
    problems = deployable_problems(stack) + _unvalidated_version(stack)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2

    plan = make_plan(stack, policy_config)
    print_plan(stack, plan)
    for warning in stack.spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.out:
        count = write_manifests(plan, args.out)
        print(f"\nmanifests: {count} written to {args.out}")
    return 1 if any(f.level in ("mandatory", "remediate") for f in plan.findings) else 0


def _unvalidated_version(stack: Stack) -> list[str]:
    """The cluster's Kubernetes minor must have schemas here, or no manifest could be checked."""
    from kubernetes_validate.utils import all_versions, major_minor

    version = _kubernetes_version(stack)
    minors = sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    if major_minor(version) not in minors:
        return [f"cluster.kubernetes_version: {version}: kubernetes-validate has no schemas for it ({minors[0]} to "
                f"{minors[-1]}), so the manifests cannot be checked against it"]
    return []


def _kubernetes_version(stack: Stack) -> str:
    """What the manifests are validated against: the cluster's version."""
    return stack.spec.cluster.kubernetes_version if stack.spec.cluster else KUBERNETES_VERSION


def declare(stack: Stack) -> Callable[[], dict[str, Any]]:
    """The Pulumi program of `stack`, returning what it exported (pulumi.export is caught)."""
    import pulumi

    from components.program import build

    def program() -> dict[str, Any]:
        exported: dict[str, Any] = {}
        real = pulumi.export
        pulumi.export = exported.__setitem__  # type: ignore[assignment]
        try:
            build(stack)
        finally:
            pulumi.export = real
        return exported
    return program


def make_plan(stack: Stack, policy_config: dict[str, Any] | None = None) -> Plan:
    from components.mocks import run

    recording = run(declare(stack), stack=stack.name)
    plan = Plan(recording, recording.outputs or {}, recording.secret_outputs)
    version = _kubernetes_version(stack)
    validate_manifests(plan, version)
    check_policies(plan, policy_config or {})
    return plan


def _name(r: Any) -> str:
    return f"{r.type} {r.name}"


@functools.cache
def _validator() -> Callable[[dict, str], None]:
    """kubernetes_validate.validate, with its schema files read once rather than per object."""
    import kubernetes_validate
    from kubernetes_validate import utils

    utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
    return lambda doc, version: kubernetes_validate.validate(doc, version, strict=True)


def validate_manifests(plan: Plan, version: str) -> None:
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    validate = _validator()
    for r in plan.recording.resources:
        if not r.type.startswith("kubernetes:") or "apiVersion" not in r.inputs:
            continue
        try:
            validate(r.inputs, version)
            plan.validated += 1
        except SchemaNotFoundError:
            group = r.inputs["apiVersion"].rpartition("/")[0]
            if "." in group and not group.endswith(".k8s.io"):  # a custom resource: no schema to check it by
                plan.skipped.append(_name(r))
            else:  # a built-in API this Kubernetes no longer (or not yet) serves
                plan.findings.append(Finding("schema", _name(r), f"{r.inputs['apiVersion']} {r.inputs.get('kind')} is not "
                                                                 f"served by Kubernetes {version}"))
        except ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            plan.findings.append(Finding("schema", _name(r), f"{where}: {exc.message} (Kubernetes {version})"))


def check_policies(plan: Plan, config: dict[str, Any]) -> None:
    """Run every rule of the pack on the declared resources, as the policy engine would."""
    from pulumi_policy import PolicyResource, PolicyResourceOptions, ResourceValidationArgs, StackValidationArgs

    from policy.rules import RESOURCE_RULES, STACK_RULES

    opts = PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=None, additional_secret_outputs=[])
    by_urn = {r.urn: r for r in plan.recording.resources}
    custom = [r for r in plan.recording.resources if r.custom]

    def rule_config(name: str) -> dict:
        given = config.get(name)
        return {k: v for k, v in given.items() if k != "enforcementLevel"} if isinstance(given, dict) else {}

    def reporter(name: str, fallback: str, level: str) -> Callable[..., None]:
        def report(message: str, urn: str | None = None) -> None:
            where = _name(by_urn[urn]) if urn in by_urn else fallback
            plan.findings.append(Finding(name, where, message, level))
        return report

    for name, (_, rule, _) in RESOURCE_RULES.items():
        level = enforcement_level(config, name)
        if level == "disabled":
            continue
        cfg = rule_config(name)
        for r in custom:
            rule(ResourceValidationArgs(r.type, r.inputs, r.urn, r.name, opts, None, cfg), reporter(name, _name(r), level))
    # A stack rule sees each resource as the engine reports it, its outputs too (the Registry's loginServer).
    resources = [PolicyResource(r.type, {**r.inputs, **r.outputs}, r.urn, r.name, opts, None, None, [], {}) for r in custom]
    for name, (_, rule, _) in STACK_RULES.items():
        level = enforcement_level(config, name)
        if level != "disabled":
            rule(StackValidationArgs(resources, rule_config(name)), reporter(name, "stack", level))


LEVELS = ("advisory", "mandatory", "remediate", "disabled")  # remediate: mandatory here (these rules fix nothing)


def policy_config_problems(config: Any) -> list[str]:
    """What the policy engine would refuse in a --policy-pack-config: a misspelt level must not turn a
    mandatory rule into one that passes, nor a misspelt rule name or a setting of the wrong type leave the
    rule at its default.

    Stricter than the engine on purpose: a setting a rule does not declare (and any setting but the
    level under `all`) is refused here, where the engine ignores it (its schema has no
    additionalProperties), so that a misspelt setting cannot silently leave the rule at its default."""
    import jsonschema

    from policy.rules import RESOURCE_RULES, STACK_RULES

    if not isinstance(config, dict):
        return ["must be a JSON object of rule names (or \"all\") to levels or settings"]
    schemas = {name: schema for name, (_, _, schema) in {**RESOURCE_RULES, **STACK_RULES}.items()}
    problems = []
    for name, given in config.items():
        if name != "all" and name not in schemas:
            problems.append(f"{name}: no such rule; the pack's: {', '.join(sorted(schemas))}")
            continue
        level = given.get("enforcementLevel", "mandatory") if isinstance(given, dict) else given
        if level not in LEVELS:
            problems.append(f"{name}: enforcement level {level!r}; one of {', '.join(LEVELS)}")
        settings = {} if name == "all" else schemas[name]
        for key, value in given.items() if isinstance(given, dict) else ():
            if key == "enforcementLevel":
                continue
            if key not in settings:
                problems.append(f"{name}.{key}: no such setting; {name} takes {', '.join(['enforcementLevel', *settings])}")
                continue
            try:
                jsonschema.validate(value, settings[key])
            except jsonschema.ValidationError as exc:
                problems.append(f"{name}.{key}: {exc.message}")
    return problems


def enforcement_level(config: dict[str, Any], rule: str) -> str:
    """As the policy engine reads --policy-pack-config: the rule's own level, else `all`'s, else the pack's
    (mandatory); each given as a string or as {"enforcementLevel": ...}."""
    for key in (rule, "all"):
        given = config.get(key)
        level = given.get("enforcementLevel") if isinstance(given, dict) else given
        if isinstance(level, str):
            return level
    return "mandatory"


# ---------------------------------------------------------------- output


def tree_lines(resources: list[Any]) -> list[str]:
    children: dict[str, list[Any]] = defaultdict(list)
    for r in resources:
        children[r.parent].append(r)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for r in children.get(parent, []):
            lines.append(f"{'  ' * depth}{r.type}  {r.name}")
            walk(r.urn, depth + 1)
    roots = {r.parent for r in resources} - {r.urn for r in resources}
    for root in sorted(roots):
        walk(root, 1)
    return lines


def print_plan(stack: Stack, plan: Plan) -> None:
    resources = plan.recording.resources
    print(f"plan: stack {stack.name}, {len(resources)} resources (Pulumi mocks, no cloud)")
    print("\n".join(tree_lines(resources)))
    print("\ncounts by type:")
    for typ, count in sorted(Counter(r.type for r in resources).items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:5d}  {typ}")
    version = _kubernetes_version(stack)
    schema_errors = [f for f in plan.findings if f.what == "schema"]
    skipped = f", {len(plan.skipped)} without a schema skipped ({', '.join(plan.skipped)})" if plan.skipped else ""
    print(f"\nkubernetes schema {version}: {plan.validated} manifests valid, {len(schema_errors)} invalid{skipped}")
    violations = [f for f in plan.findings if f.what != "schema"]
    advisory = sum(f.level == "advisory" for f in violations)
    from policy.rules import RESOURCE_RULES, STACK_RULES

    print(f"policy: {len(RESOURCE_RULES) + len(STACK_RULES)} rules, {len(violations) - advisory} violations"
          + (f", {advisory} advisory" if advisory else ""))
    for f in plan.findings:
        kind = "schema error" if f.what == "schema" else f"{'advisory' if f.level == 'advisory' else 'violation'} {f.what}"
        print(f"  {kind}: {f.resource}: {f.message}")
    print("\noutputs:")
    for key in sorted(plan.outputs):
        value = SECRET if key in plan.secret_outputs else plan.outputs[key]
        print(f"  {key} = {value if isinstance(value, str) else json.dumps(value)}")


OUT_MARKER = ".aks-model-serving-plan"  # a folder plan wrote: its files may be replaced


def write_manifests(plan: Plan, out: Path) -> int:
    """One YAML file per object, `<namespace>/<kind>-<name>.yaml`; secret values masked. What an earlier
    plan wrote there and this one does not is removed: `kubectl apply -f` on the folder must not bring
    back an object the stack no longer declares."""
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_MARKER).touch()
    written: set[Path] = set()
    for r in plan.recording.resources:
        if not r.type.startswith("kubernetes:") or "apiVersion" not in r.inputs:
            continue
        doc = dict(r.inputs)
        for key in r.secret_inputs:
            value = doc[key]
            doc[key] = {k: SECRET for k in value} if isinstance(value, dict) else SECRET
        meta = doc.get("metadata") or {}
        path = out / (meta.get("namespace") or "_cluster") / f"{doc['kind'].lower()}-{meta.get('name', r.name)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=True))
        written.add(path)
    for stale in set(out.glob("*/*.yaml")) - written:
        stale.unlink()
    return len(written)
