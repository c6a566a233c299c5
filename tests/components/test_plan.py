"""`python -m components plan`: exit codes, the printed plan, written manifests, findings named."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from components.mocks import Recorded, Recording
from components.plan import Plan, main, validate_manifests

ROOT = Path(__file__).resolve().parents[2]


def test_dev_plan_passes_prints_tree_counts_and_writes_masked_manifests(project, tmp_path, capsys):
    out = tmp_path / "manifests"
    assert main([str(project / "stacks" / "Pulumi.dev.yaml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "plan: stack dev," in text
    assert "  aks-model-serving:index:ModelRouter  router\n    kubernetes:apps/v1:Deployment  router" in text
    assert "      1  kubernetes:rbac.authorization.k8s.io/v1:Role" in text
    assert "policy: 8 rules, 0 violations" in text and "0 invalid" in text
    assert "iris_primary_key = [secret]" in text
    keys = yaml.safe_load((out / "azureml" / "secret-model-router-keys.yaml").read_text())
    assert keys["stringData"] == {"service.iris.primary": "[secret]", "service.iris.secondary": "[secret]"}
    deployment = yaml.safe_load((out / "azureml" / "deployment-iris.yaml").read_text())
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 1
    assert (out / "_cluster" / "namespace-azureml.yaml").exists()


def test_local_stack_has_nothing_to_deploy_on_a_cluster(capsys):
    assert main([str(ROOT / "stacks" / "Pulumi.local.yaml")]) == 0
    assert "nothing to deploy on a cluster" in capsys.readouterr().out


def test_invalid_stack_exits_2_naming_the_field(edit, capsys):
    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(cpu_cores=-1))
    assert main([str(path)]) == 2
    assert "services[0].cpu_cores" in capsys.readouterr().err


def test_public_router_without_tls_in_fast_prod_fails_naming_the_service(edit, capsys):
    path = edit("prod", lambda c: c["aks-model-serving:cluster"].pop("ssl"))
    assert main([str(path)]) == 1
    text = capsys.readouterr().out
    assert ("violation public-router-serves-tls-in-production: kubernetes:core/v1:Service router: "
            "router Service 'model-router' is public in a fast_prod cluster and serves plain HTTP") in text


def test_anonymous_public_service_fails_unless_the_policy_config_allows_it(edit, tmp_path, capsys):
    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(auth_enabled=False))
    assert main([str(path)]) == 1
    assert "violation auth-on-for-public-services: kubernetes:core/v1:Service router: service 'iris'" in capsys.readouterr().out
    config = tmp_path / "policy.json"
    config.write_text(json.dumps({"auth-on-for-public-services": {"allowAnonymous": ["iris"]}}))
    assert main([str(path), "--policy-config", str(config)]) == 0


def test_schema_errors_are_findings_named_by_resource():
    bad = Recorded(type="kubernetes:core/v1:ConfigMap", name="cm", urn="urn:x", id="cm", custom=True, parent="", provider="",
                   protect=False, delete_before_replace=False, ignore_changes=[], additional_secret_outputs=[], dependencies=[], secret_inputs=[], outputs={},
                   inputs={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "dataa": {}})
    crd = Recorded(type="kubernetes:cert-manager.io/v1:Certificate", name="cert", urn="urn:y", id="c", custom=True, parent="",
                   provider="", protect=False, delete_before_replace=False, ignore_changes=[], additional_secret_outputs=[], dependencies=[], secret_inputs=[], outputs={},
                   inputs={"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"}})
    plan = Plan(Recording([bad, crd], []), {}, [])
    validate_manifests(plan, "1.35")
    assert [(f.what, f.resource) for f in plan.findings] == [("schema", "kubernetes:core/v1:ConfigMap cm")]
    assert "'dataa' was unexpected" in plan.findings[0].message
    assert plan.skipped == ["kubernetes:cert-manager.io/v1:Certificate cert"]


def test_a_built_in_api_the_cluster_no_longer_serves_is_a_finding_not_skipped():
    """Only custom resources lack a schema; policy/v1beta1 left Kubernetes in 1.25."""
    pdb = Recorded(type="kubernetes:policy/v1beta1:PodDisruptionBudget", name="router", urn="urn:p", id="p", custom=True,
                   parent="", provider="", protect=False, delete_before_replace=False, ignore_changes=[], additional_secret_outputs=[], dependencies=[], secret_inputs=[],
                   outputs={}, inputs={"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
                                       "metadata": {"name": "router"}, "spec": {"minAvailable": 1}})
    plan = Plan(Recording([pdb], []), {}, [])
    validate_manifests(plan, "1.35")
    assert [(f.what, f.message) for f in plan.findings] == [
        ("schema", "policy/v1beta1 PodDisruptionBudget is not served by Kubernetes 1.35")]
    assert plan.skipped == []


def test_policy_enforcement_levels_are_read_as_pulumi_preview_reads_them(edit, tmp_path, capsys):
    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(auth_enabled=False))
    config = tmp_path / "policy.json"
    for given, code, shown in [
        ({"auth-on-for-public-services": "disabled"}, 0, "policy: 8 rules, 0 violations\n"),
        ({"auth-on-for-public-services": {"enforcementLevel": "advisory"}}, 0, "advisory auth-on-for-public-services:"),
        ({"all": "advisory"}, 0, "policy: 8 rules, 0 violations, 1 advisory"),
        ({"all": "disabled", "auth-on-for-public-services": "mandatory"}, 1, "violation auth-on-for-public-services:"),
        ({"all": "remediate"}, 1, "violation auth-on-for-public-services:"),  # these rules fix nothing: mandatory
    ]:
        config.write_text(json.dumps(given))
        assert main([str(path), "--policy-config", str(config)]) == code, given
        assert shown in capsys.readouterr().out, given


def test_a_policy_config_the_engine_would_refuse_is_named_before_the_plan(edit, tmp_path, capsys):
    """A misspelt level once let a mandatory violation pass (exit 0); a list was a traceback."""
    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(auth_enabled=False))
    config = tmp_path / "policy.json"
    for given, shown in [
        ({"all": "mandtory"}, "--policy-config: all: enforcement level 'mandtory'; one of advisory, mandatory, remediate, disabled"),
        ({"auth-on-for-public-services": {"enforcementLevel": "off"}}, "auth-on-for-public-services: enforcement level 'off'"),
        ({"auth-on-public-services": "disabled"}, "--policy-config: auth-on-public-services: no such rule; the pack's: "),
        ([1, 2], "--policy-config: must be a JSON object"),
        ({"auth-on-for-public-services": {"allowAnonymous": "iris"}},  # a name, not a list: the engine refuses it
         "--policy-config: auth-on-for-public-services.allowAnonymous: 'iris' is not of type 'array'"),
        # Settings the engine ignores: refused here, as a typo would leave the rule at its default.
        ({"at-most-six-versions-per-endpoint": {"enforcementLevel": "mandatory", "maxVersons": 3}},
         "--policy-config: at-most-six-versions-per-endpoint.maxVersons: no such setting; "
         "at-most-six-versions-per-endpoint takes enforcementLevel\n"),
        ({"auth-on-for-public-services": {"allowAnonymus": ["iris"]}},
         "--policy-config: auth-on-for-public-services.allowAnonymus: no such setting; "
         "auth-on-for-public-services takes enforcementLevel, allowAnonymous\n"),
        ({"all": {"enforcementLevel": "advisory", "allowAnonymous": ["iris"]}},
         "--policy-config: all.allowAnonymous: no such setting; all takes enforcementLevel\n"),
    ]:
        config.write_text(json.dumps(given))
        assert main([str(path), "--policy-config", str(config)]) == 2, given
        captured = capsys.readouterr()
        assert shown in captured.err and "plan:" not in captured.out, given


def test_out_naming_a_file_is_named_before_the_plan(project, tmp_path, capsys):
    (tmp_path / "afile").touch()
    assert main([str(project / "stacks" / "Pulumi.dev.yaml"), "--out", str(tmp_path / "afile")]) == 2
    captured = capsys.readouterr()
    assert f"--out: {tmp_path / 'afile'} is a file" in captured.err and "plan:" not in captured.out


def test_a_kubernetes_version_without_schemas_is_named_not_a_traceback(edit, capsys):
    path = edit("dev", lambda c: c["aks-model-serving:cluster"].update(kubernetes_version="1.24"))
    assert main([str(path)]) == 2
    assert "cluster.kubernetes_version: 1.24: kubernetes-validate has no schemas for it (1.25 to" in capsys.readouterr().err


def test_out_keeps_only_what_this_plan_declares_and_refuses_a_folder_it_did_not_write(project, edit, tmp_path, capsys):
    out = tmp_path / "manifests"
    assert main([str(project / "stacks" / "Pulumi.dev.yaml"), "--out", str(out)]) == 0
    assert (out / "azureml" / "deployment-iris.yaml").exists()
    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(name="iris2"))
    assert main([str(path), "--out", str(out)]) == 0
    assert (out / "azureml" / "deployment-iris2.yaml").exists() and not (out / "azureml" / "deployment-iris.yaml").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main([str(path), "--out", str(foreign)]) == 2
    assert "holds files plan did not write" in capsys.readouterr().err and (foreign / "notes.txt").exists()


def test_the_registry_rule_takes_the_stacks_own_registry_from_its_outputs():
    """As the engine shows a stack rule each resource's outputs: the Registry's loginServer is the one."""
    from components.plan import check_policies

    def recorded(typ, name, inputs, outputs):
        return Recorded(type=typ, name=name, urn=f"urn:{name}", id=name, custom=True, parent="", provider="", protect=False, delete_before_replace=False, ignore_changes=[],
                        additional_secret_outputs=[], dependencies=[], secret_inputs=[], inputs=inputs, outputs=outputs)

    registry = recorded("azure-native:containerregistry:Registry", "acr", {"registryName": "mlwacr"},
                        {"loginServer": "mlwacr.azurecr.io"})
    pod = {"containers": [{"name": "c", "image": "someoneelse.azurecr.io/x@sha256:" + "a" * 64,
                           "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}
    deployment = recorded("kubernetes:apps/v1:Deployment", "d", {"metadata": {"name": "d"}, "spec": {"template": {"spec": pod}}}, {})
    plan = Plan(Recording([registry, deployment], []), {}, [])
    check_policies(plan, {})
    assert [(f.what, f.resource) for f in plan.findings] == [("images-from-workspace-registry", "kubernetes:apps/v1:Deployment d")]
    assert "is not from the workspace registry mlwacr.azurecr.io" in plan.findings[0].message
