"""The pack's __main__ builds one policy per rule (PolicyPack itself is swapped for a recorder:
its constructor would serve the engine and never return)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi_policy

from policy import rules

PACK = Path(__file__).resolve().parents[2] / "policy" / "__main__.py"


def test_pack_serves_every_rule_as_a_mandatory_policy(monkeypatch):
    built = {}

    def record(name, policies, enforcement_level=None, **_):
        built.update(name=name, policies=policies, level=enforcement_level)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", record)
    runpy.run_path(str(PACK), run_name="__main__")
    assert built["name"] == "aks-model-serving" and built["level"] == pulumi_policy.EnforcementLevel.MANDATORY
    by_name = {p.name: p for p in built["policies"]}
    assert set(by_name) == set(rules.RESOURCE_RULES) | set(rules.STACK_RULES) and len(by_name) == 8
    assert all(isinstance(by_name[n], pulumi_policy.ResourceValidationPolicy) for n in rules.RESOURCE_RULES)
    assert all(isinstance(by_name[n], pulumi_policy.StackValidationPolicy) for n in rules.STACK_RULES)
    assert set(by_name["auth-on-for-public-services"].config_schema.properties) == {"allowAnonymous"}


def test_pack_manifest_names_a_python_runtime_and_its_requirements():
    import yaml

    manifest = yaml.safe_load((PACK.parent / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    requirements = (PACK.parent / "requirements.txt").read_text()
    assert "pulumi-policy" in requirements and "pydantic" in requirements
