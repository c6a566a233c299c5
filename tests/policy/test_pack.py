"""The pack's __main__ builds one policy per rule (PolicyPack itself is swapped for a recorder:
its constructor would serve the engine and never return)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
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


# What `pulumi policy publish OUT` uploads runs elsewhere (`python OUT`, from OUT): a fresh interpreter
# where the checkout's modules cannot be imported (the editable install's finder and the checkout's path
# removed), so the copy must carry everything the rules import.
_RUN_ELSEWHERE = """
import json, runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if p not in ("", {root!r})]
import pulumi_policy
built = {{}}
pulumi_policy.PolicyPack = lambda name, policies, **_: built.update(name=name, policies=[p.name for p in policies])
runpy.run_path({out!r}, run_name="__main__")
print(json.dumps({{"built": built, "files": sorted(m.__file__ for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and m.__name__.split(".")[0] in ("components", "policy", "router_image"))}}))
"""


def test_the_written_pack_runs_from_a_folder_of_its_own_with_only_what_it_carries(tmp_path):
    from components import policypack

    out = tmp_path / "published"
    (out / "stale").mkdir(parents=True)  # emptied first
    policypack.write(out)
    assert not (out / "stale").exists() and (out / "PulumiPolicy.yaml").is_file()
    ran = subprocess.run([sys.executable, "-c", _RUN_ELSEWHERE.format(root=str(PACK.parents[1]), out=str(out))],
                         cwd=out, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["built"]["name"] == "aks-model-serving"
    assert set(result["built"]["policies"]) == set(rules.RESOURCE_RULES) | set(rules.STACK_RULES)
    files = [Path(f) for f in result["files"]]
    assert {"policy/rules.py", "components/spec.py", "components/accelerators.py", "router_image/config.py"} <= {
        str(f.relative_to(out)) for f in files if f.is_relative_to(out)}
    assert all(f.is_relative_to(out) for f in files), [str(f) for f in files if not f.is_relative_to(out)]


def test_the_pack_is_not_written_over_its_own_folder(tmp_path):
    from components import policypack

    assert policypack.main([str(PACK.parent / "published")]) == 2
    assert not (PACK.parent / "published").exists()
