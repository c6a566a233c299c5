"""program.build under Pulumi mocks: the example stacks, end to end, in a copy of the project."""

from __future__ import annotations

import copy
import json
import runpy
import shutil
from pathlib import Path

import pulumi
import pytest
import yaml

from components.mocks import SUBSCRIPTION_ID, run
from components.plan import declare, make_plan, write_manifests
from components.deployable import deployable_problems
from components.program import build
from components.stackfile import Stack, load_stack, parse_config, secure_paths

ROOT = Path(__file__).resolve().parents[2]


def test_local_stack_is_refused_with_a_clear_message():
    stack = load_stack(ROOT / "stacks" / "Pulumi.local.yaml")
    assert "python -m components local up" in deployable_problems(stack)[0]
    with pytest.raises(pulumi.RunError, match="cannot be deployed to a cluster"):
        build(stack)


def test_dev_stack_exports_uris_and_secret_keys(project):
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.dev.yaml")))
    base = "https://mlw-dev-scoring.westeurope.cloudapp.azure.com/api/v1/service/iris"
    assert rec.outputs["iris_scoring_uri"] == f"{base}/score"
    assert rec.outputs["iris_swagger_uri"] == f"{base}/swagger.json"
    assert len(rec.outputs["iris_primary_key"]) == 32 and rec.outputs["iris_primary_key"] != rec.outputs["iris_secondary_key"]
    assert set(rec.secret_outputs) == {"iris_primary_key", "iris_secondary_key", "token_signing_key"}
    # dev_test: one fixed replica, the router does not autoscale, nothing has an HPA.
    assert not [r for r in rec.resources if "HorizontalPodAutoscaler" in r.type]
    deployment = next(r for r in rec.of_type("kubernetes:apps/v1:Deployment") if r.name == "iris")
    assert deployment.inputs["spec"]["replicas"] == 1
    assert deployment.provider.startswith("urn:pulumi:") and "cluster-k8s" in deployment.provider


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_model_pods_admit_only_the_routers_pods_and_the_cluster_enforces_it(project, name):
    """The scorer asks for no key or token: any other pod reaching it would score past the router's auth."""
    rec = run(declare(load_stack(project / "stacks" / f"Pulumi.{name}.yaml")))
    pods = {r.inputs["metadata"]["name"]: r.inputs["spec"]["template"]["metadata"]["labels"]
            for r in rec.of_type("kubernetes:apps/v1:Deployment")}
    models = {n for n, labels in pods.items() if labels["app.kubernetes.io/component"] == "model"}
    policies = [r.inputs["spec"] for r in rec.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")]

    def selects(selector: dict, labels: dict) -> bool:
        return selector["matchLabels"].items() <= labels.items()

    assert models and len(policies) == len(models)
    for model in models:
        guarding = [p for p in policies if selects(p["podSelector"], pods[model])]
        assert len(guarding) == 1 and guarding[0]["policyTypes"] == ["Ingress"]
        rule, metrics = guarding[0]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 5001}]
        admitted = {n for n, labels in pods.items() for peer in rule["from"] if selects(peer["podSelector"], labels)}
        assert admitted == {"model-router"}
        # /metrics alone, for Prometheus in any namespace: pods, not the VNet
        assert metrics == {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 5002}]}
    assert rec.one("azure-native:containerservice:ManagedCluster").inputs["networkProfile"]["networkPolicy"] == "calico"


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_mounted_secrets_are_readable_by_the_pods_group_only(project, name):
    rec = run(declare(load_stack(project / "stacks" / f"Pulumi.{name}.yaml")))
    modes = {(r.name, v["name"]): v["secret"].get("defaultMode") for r in rec.of_type("kubernetes:apps/v1:Deployment")
             for v in r.inputs["spec"]["template"]["spec"].get("volumes") or [] if "secret" in v}
    assert len(modes) >= 3 and set(modes.values()) == {0o440}, modes


def test_the_stacks_warnings_reach_the_preview_and_the_offline_plan(project, monkeypatch, capsys):
    """`check` printed them; `pulumi preview` and `plan` did not: a dev_test cluster's autoscaling quietly off."""
    from components.plan import main as plan

    path = project / "stacks" / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("      num_replicas: 1\n", "      autoscale_enabled: true\n"))
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    run(declare(load_stack(path)))
    assert warned == ["stack dev: services[0]: a dev_test cluster keeps replicas fixed; autoscaling is off and it runs 1 "
                      "(autoscale_min_replicas; num_replicas sets the count)"]
    assert plan([str(path)]) == 0
    assert "warning: services[0]: a dev_test cluster keeps replicas fixed" in capsys.readouterr().err


def test_prod_stack_endpoint_versions_share_an_image_and_run_on_the_gpu_pool(project):
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.prod.yaml")))
    assert rec.outputs["fraud_scoring_uri"].endswith("/api/v1/endpoint/fraud/score")
    assert "fraud_primary_key" not in rec.outputs  # token auth
    deployments = {r.name: r.inputs for r in rec.of_type("kubernetes:apps/v1:Deployment")}
    versions = [deployments["fraud-control"], deployments["fraud-treatment"]]
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in versions}
    assert len(images) == 1 and "/aks-model-serving/app@sha256:" in images.pop()
    for d in versions:
        pod = d["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"aks-model-serving/accelerator": "gpu"}
        assert pod["initContainers"][0]["image"].split("@")[0].endswith("/aks-model-serving/scorer")
        # Collected data in Azure ML's folders: <subscription>/<resource group>/<workspace>/<service>/...
        scorer_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert scorer_env["AZUREML_DATA_COLLECTION_WORKSPACE"] == f"{SUBSCRIPTION_ID}/rg-ml-prod/mlw-prod"
    # Models by URL are read where they are: no upload.
    assert not rec.of_type("azure-native:storage:Blob")
    connections = next(r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name == "workspace-connections")
    assert connections.secret_inputs == ["stringData"]
    # The storage key is not in the cluster: the scorer pods reach storage as their workload identity.
    assert sorted(connections.inputs["stringData"]) == ["appinsights-connection-string"]


def test_only_a_stack_whose_services_report_to_application_insights_requires_its_ingestion_host(project):
    """The scorers of enable_app_insights send to the ingestion endpoint their connection string names: behind a
    firewall opened to required_fqdns their telemetry was dropped while the connectivity check passed."""
    ingestion = "westeurope-0.in.applicationinsights.azure.com"
    prod = run(declare(load_stack(project / "stacks" / "Pulumi.prod.yaml")))
    assert ingestion in prod.outputs["required_fqdns"]
    assert "required_fqdns" not in prod.secret_outputs  # the host, not the key beside it in the connection string
    assert ingestion not in run(declare(load_stack(project / "stacks" / "Pulumi.dev.yaml"))).outputs["required_fqdns"]


def test_the_storage_account_of_a_model_read_by_url_is_required(project, edit):
    """A model kept where Azure ML kept it (its workspace's own storage) is fetched from there by each replica."""
    def elsewhere(config):
        config["aks-model-serving:models"][1]["url"] = "https://amlwsdefault.blob.core.windows.net/azureml/fraud-net/4"
    fqdns = run(declare(load_stack(edit("prod", elsewhere)))).outputs["required_fqdns"]
    assert {"amlwsdefault.blob.core.windows.net", "mlwprodstorage.blob.core.windows.net"} <= set(fqdns)


def test_local_model_folders_are_uploaded_file_by_file(project):
    model = project / ".local" / "models" / "sklearn-iris" / "1"
    (model / "sub").mkdir(parents=True)
    (model / "model.pkl").write_bytes(b"x")
    (model / "sub" / "meta.json").write_text("{}")
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.dev.yaml")))
    blobs = sorted(b.inputs["blobName"] for b in rec.of_type("azure-native:storage:Blob"))
    assert blobs == ["sklearn-iris/1/model.pkl", "sklearn-iris/1/sub/meta.json"]
    manifest = next(r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name == "iris-models")
    assert '"url": "https://mlwdevstorage.blob.core.windows.net/models/sklearn-iris/1"' in manifest.inputs["stringData"]["models.json"]


def test_replicas_wait_for_their_models_upload(project):
    """A first `up` created the Deployment beside the uploads: each replica's init container found no files,
    failed, and was retried with a back-off reaching 5 minutes, outlasting a large model's upload and
    Pulumi's 10 minutes for the rollout."""
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.dev.yaml")))
    blobs = {b.urn for b in rec.of_type("azure-native:storage:Blob")}
    manifest = next(r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name == "iris-models")
    deployment = next(r for r in rec.of_type("kubernetes:apps/v1:Deployment") if r.name == "iris")
    assert blobs and blobs <= set(manifest.dependencies) and blobs <= set(deployment.dependencies)


def test_a_rotated_storage_key_rolls_the_scorers_and_sas_tokens_stay_secret(project, edit, tmp_path):
    """Connection strings reach the scorer as env at its start; a model url's query is a credential."""
    sas = "?sv=2022-11-02&sr=c&sig=SECRETSIGNATURE"
    path = edit("prod", lambda c: c["aks-model-serving:models"][0].update(url=c["aks-model-serving:models"][0]["url"] + sas))
    plan = make_plan(load_stack(path))
    deployment = next(r for r in plan.recording.of_type("kubernetes:apps/v1:Deployment") if r.name == "fraud-control")
    annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["aks-model-serving/connections-sha256"]) == 16
    out = tmp_path / "manifests"
    write_manifests(plan, out)
    written = "".join(p.read_text() for p in out.rglob("*.yaml"))
    assert "SECRETSIGNATURE" not in written and "fraud-control-models" in written


def test_a_service_outside_the_router_namespace_is_refused_by_check_too(edit, capsys):
    """A rule of the stack alone: `check` exited 0 on it while `plan` refused it."""
    from components.check import main as check

    path = edit("dev", lambda c: c["aks-model-serving:services"][0].update(namespace="elsewhere"))
    assert check([str(path)]) == 2
    assert ("services[0].namespace: 'elsewhere' differs from router.namespace 'azureml'; "
            "the router watches and scales only its own namespace") in capsys.readouterr().out


def _inference(change):
    return lambda c: change(c["aks-model-serving:services"][0]["inference_config"])


@pytest.mark.parametrize(("change", "expected"), [
    (_inference(lambda ic: ic.update(source_directory="examples/gone")),
     "services[0].inference_config.source_directory: {project}/examples/gone is not a folder"),
    (_inference(lambda ic: ic.update(entry_script="missing.py")),
     "services[0].inference_config.entry_script: {project}/examples/sklearn/missing.py does not exist"),
    (_inference(lambda ic: ic.update(environment={"conda_file": "env.yml"})),
     "services[0].inference_config.environment.conda_file: {project}/env.yml: No such file or directory"),
    (lambda c: c["aks-model-serving:models"][0].update(path="models/none"),
     "models[0].path: {project}/models/none does not exist"),
], ids=["no-source-directory", "no-entry-script", "no-conda-file", "no-model-folder"])
def test_missing_image_and_model_sources_are_named_before_anything_is_declared(project, edit, change, expected):
    """Else an image is hashed from an empty folder, or plan ends in a traceback."""
    problems = deployable_problems(load_stack(edit("dev", change)))
    assert any(p.startswith(expected.format(project=project)) for p in problems), problems


@pytest.mark.parametrize(("group", "refused"), [("rg-" + "m" * 52, False), ("rg-" + "m" * 53, True)])
def test_a_node_resource_group_name_over_80_characters_is_named(project, edit, group, refused):
    """MC_<group>_aks-ml-dev_westeurope: AKS refuses 81 characters once the workspace exists."""
    problems = deployable_problems(load_stack(edit("dev", lambda c: c["aks-model-serving:workspace"].update(resource_group=group))))
    named = [p for p in problems if p.startswith("cluster.name: AKS would name the nodes' resource group")]
    assert named == ([f"cluster.name: AKS would name the nodes' resource group 'MC_{group}_aks-ml-dev_westeurope', 81 "
                      "characters, and refuses more than 80; shorten cluster.name or workspace.resource_group by 1"]
                     if refused else []), problems


@pytest.mark.parametrize(("dependencies", "pinned"), [
    ("[python=3.11, scikit-learn]", True),
    ("[python==3.12.4]", True),
    ("['python>=3.11']", True),
    ("['python 3.11.*']", True),
    ("[python=3.8, pip]", False),
    ("[python=3.10]", False),  # the one just below
    ("['python>=3.10']", False),
    ("[python, numpy]", False),
    ("[numpy, {pip: [python=3.11]}]", False),
    ("[pythonnet=3.11]", False),
])
def test_a_conda_environment_must_pin_the_python_the_scorer_runs_on(project, edit, dependencies, pinned):
    """The scorer is installed into the environment; unpinned, conda may pick an older Python or none."""
    (project / "env.yml").write_text(f"dependencies: {dependencies}\n")
    problems = deployable_problems(load_stack(edit("dev", _inference(lambda ic: ic.update(environment={"conda_file": "env.yml"})))))
    expected = "services[0].inference_config.environment.conda_file: the scorer runs in this environment, on Python 3.11"
    assert (problems == []) if pinned else any(p.startswith(expected) for p in problems), problems


def test_conda_dependencies_in_the_stack_are_held_to_the_same_pin(project, edit):
    env = {"conda_dependencies": {"dependencies": ["python=3.9"]}}
    problems = deployable_problems(load_stack(edit("dev", _inference(lambda ic: ic.update(environment=env)))))
    assert any(p.startswith("services[0].inference_config.environment.conda_dependencies: the scorer runs") for p in problems)


def test_a_conda_file_that_is_not_an_environment_is_named(project, edit):
    (project / "env.yml").write_text("dependencies: [python=3.11\n")
    problems = deployable_problems(load_stack(edit("dev", _inference(lambda ic: ic.update(environment={"conda_file": "env.yml"})))))
    assert any(p.startswith("services[0].inference_config.environment.conda_file:") for p in problems), problems


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_example_stacks_render_valid_manifests_and_pass_the_policy(project, name):
    plan = make_plan(load_stack(project / "stacks" / f"Pulumi.{name}.yaml"))
    assert plan.findings == []
    assert plan.validated >= 15


def test_pulumi_new_template_defaults_make_a_deployable_stack(project):
    """`pulumi new` writes the template's answers as strings; the program reads objects back from their JSON text.

    Read in a copy of the project: the template's model folder is what `make local` trains, absent
    from a fresh clone.
    """
    import json

    from components.stackfile import Stack, parse_config

    template = yaml.safe_load((project / "Pulumi.yaml").read_text())["template"]["config"]
    assert {"azure-native:location", "aks-model-serving:cluster", "aks-model-serving:models"} <= set(template)
    raw = {key: json.loads(v["default"]) if v["default"][:1] in "[{" else v["default"] for key, v in template.items()}
    spec, providers = parse_config(raw, project)
    stack = Stack("new", project / "stacks" / "Pulumi.new.yaml", project, spec, providers)
    assert deployable_problems(stack) == []
    assert spec.cluster.cluster_purpose == "dev_test" and stack.location == "westeurope"


def test_a_secret_variable_reaches_no_image_manifest_or_plain_input(project, edit, tmp_path):
    """As `pulumi up` runs it: the values decrypted, the stack file saying which were secrets."""
    def secret_variable(config: dict) -> None:
        environment = config["aks-model-serving:services"][0]["inference_config"].setdefault("environment", {})
        environment["pip"] = ["lightgbm==4.3"]  # an image of the service's own
        environment["environment_variables"] = {"MODE": "fast", "DB_PASSWORD": {"secure": "v1:abc"}}

    path = edit("dev", secret_variable)
    config = yaml.safe_load(path.read_text())["config"]
    decrypted = copy.deepcopy(config)
    decrypted["aks-model-serving:services"][0]["inference_config"]["environment"]["environment_variables"]["DB_PASSWORD"] = "hunter2"
    spec, providers = parse_config(decrypted, project, secure_paths(config))
    plan = make_plan(Stack(name="dev", path=path, project_dir=project, spec=spec, provider_config=providers))

    holders = [r for r in plan.recording.resources if "hunter2" in json.dumps(r.inputs, default=str)]
    assert [(r.type, r.name, r.secret_inputs) for r in holders] == [("kubernetes:core/v1:Secret", "iris-env", ["stringData"])]
    dockerfiles = [Path(r.inputs["build"]["dockerfile"]).read_text() for r in plan.recording.of_type("docker:index/image:Image")
                   if r.name.startswith("app-")]
    assert dockerfiles and all("MODE" in d and "hunter2" not in d and "DB_PASSWORD" not in d for d in dockerfiles)
    write_manifests(plan, tmp_path / "manifests")
    assert "hunter2" not in "".join(p.read_text() for p in (tmp_path / "manifests").rglob("*.yaml"))


def test_without_a_source_directory_the_image_holds_the_entry_script_alone_and_runs_it(project, edit):
    """Its folder went in whole (keys in a deploymentconfig.json beside it too), and the scorer looked for
    examples/sklearn/score.py under the app root, where the image had score.py."""
    (project / "examples" / "sklearn" / "deploymentconfig.json").write_text('{"keys": {"primaryKey": "k"}}')
    path = edit("dev", _inference(lambda ic: (ic.pop("source_directory"), ic.update(entry_script="examples/sklearn/score.py"))))
    plan = make_plan(load_stack(path))
    [image] = [r for r in plan.recording.of_type("docker:index/image:Image") if r.name.startswith("app-")]
    staged = Path(image.inputs["build"]["context"])
    assert sorted(p.name for p in staged.iterdir()) == sorted([".dockerignore", "score.py", Path(image.inputs["build"]["dockerfile"]).name])
    [deployment] = [r for r in plan.recording.of_type("kubernetes:apps/v1:Deployment") if r.name == "iris"]
    env = {e["name"]: e.get("value") for e in deployment.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AZUREML_ENTRY_SCRIPT"] == "score.py"


def test_an_attached_kubeconfig_is_read_from_the_project_and_named_when_it_is_not_one(project, edit, monkeypatch, tmp_path):
    """It was read from wherever the command ran, and `contexts: null` was a TypeError mid-program."""
    from components.mocks import fake_kubeconfig

    path = edit("dev", lambda c: c.update({"aks-model-serving:cluster": {"name": "onprem", "attach": {"kubeconfig": "kube/config"}}}))
    assert deployable_problems(load_stack(path)) == [f"cluster.attach.kubeconfig: {project / 'kube' / 'config'}: No such file or directory"]
    (project / "kube").mkdir()
    (project / "kube" / "config").write_text("apiVersion: v1\ncontexts: null\n")
    assert deployable_problems(load_stack(path)) == [
        f"cluster.attach.kubeconfig: {project / 'kube' / 'config'}: no API server for its current context "
        "(a kubeconfig names its clusters and contexts)"]
    (project / "kube" / "config").write_text(fake_kubeconfig("https://k8s.example.internal:6443", "onprem"))
    monkeypatch.chdir(tmp_path.parent)  # anywhere but the project
    rec = run(declare(load_stack(path)))
    provider = next(r for r in rec.resources if r.type == "pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == (project / "kube" / "config").read_text()


def test_a_kubeconfig_that_is_not_yaml_is_named_without_quoting_its_credentials(project, edit):
    """PyYAML's message quotes the line it stopped at: a user's token reached `check`, `plan` and the preview's log."""
    path = edit("dev", lambda c: c.update({"aks-model-serving:cluster": {"name": "onprem", "attach": {"kubeconfig": "kube/config"}}}))
    (project / "kube").mkdir()
    (project / "kube" / "config").write_text('users:\n- name: u\n  user:\n    token: "SECRET-BEARER-TOKEN\n')
    assert deployable_problems(load_stack(path)) == [
        f"cluster.attach.kubeconfig: {project / 'kube' / 'config'}: not valid YAML at line 5, column 1: "
        "found unexpected end of stream"]


def test_a_conda_file_that_is_not_yaml_is_named_without_quoting_its_index_password(project, edit):
    """PyYAML's message quotes the line it stopped at: a pip index url's password reached `check` and `plan`."""
    path = edit("dev", _inference(lambda ic: ic.update(environment={"conda_file": "env.yml"})))
    (project / "env.yml").write_text('dependencies:\n  - pip:\n    - "--index-url https://me:SECRET-INDEX-TOKEN@pkgs.example/simple\n')
    assert f"services[0].inference_config.environment.conda_file: {project / 'env.yml'}: not valid YAML at line 4, column 1: " \
           "found unexpected end of stream" in deployable_problems(load_stack(path))


def _program_config(stack_file: Path) -> dict[str, str]:
    """A stack file's config as Pulumi hands it to the program: `project:key` -> JSON text (objects) or text."""
    config = yaml.safe_load(stack_file.read_text())["config"]
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


def _run_root_program(project: Path, config: dict[str, str], monkeypatch, via_environment: bool):
    """The root __main__.py, with the config set as the SDK's own (set_all_config) or, as the language host
    passes it, in PULUMI_CONFIG."""
    (project / "__main__.py").write_text((ROOT / "__main__.py").read_text())
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config if via_environment else {}))
    program = lambda: runpy.run_path(str(project / "__main__.py"), run_name="__main__")  # noqa: E731
    return run(program, stack="dev", config={} if via_environment else config)


@pytest.mark.parametrize("via_environment", [False, True])
def test_the_pulumi_program_refuses_a_misspelt_setting_instead_of_deploying_without_it(project, monkeypatch, via_environment):
    """`servces:` once deployed a stack without services (deleting every one a stack had): the program read
    only the settings it knew."""
    config = _program_config(project / "stacks" / "Pulumi.dev.yaml")
    rec = _run_root_program(project, config, monkeypatch, via_environment)
    assert {r.name for r in rec.of_type("kubernetes:apps/v1:Deployment")} >= {"router", "iris"}
    config["aks-model-serving:servces"] = config.pop("aks-model-serving:services")
    with pytest.raises(pulumi.RunError, match=r"servces: unknown field"):
        _run_root_program(project, config, monkeypatch, via_environment)


@pytest.mark.parametrize("via_environment", [False, True])
def test_the_pulumi_program_names_a_setting_given_as_text_without_echoing_it(project, monkeypatch, via_environment):
    """`pulumi config set --secret aks-model-serving:api_key s3cr3t` (a setting we do not have), or text where
    an object belongs: the program read every setting as JSON, and Pulumi's error quoted the value."""
    config = _program_config(project / "stacks" / "Pulumi.dev.yaml")
    config["aks-model-serving:api_key"] = "s3cr3t-value"
    config["aks-model-serving:router"] = "s3cr3t-router"
    with pytest.raises(pulumi.RunError) as raised:
        _run_root_program(project, config, monkeypatch, via_environment)
    message = str(raised.value)
    assert "api_key: unknown field" in message and "router:" in message, message
    assert "s3cr3t" not in message


def test_the_pulumi_program_refuses_a_key_in_clear_text_or_an_octal_number_in_the_stack_file(project, monkeypatch):
    """`pulumi up` deployed a service key written in clear in the stack file (committed with it), and read
    `count: 010` otherwise than check did; both are refused before anything is declared, the key not shown."""
    config = _program_config(project / "stacks" / "Pulumi.dev.yaml")
    services = json.loads(config["aks-model-serving:services"])
    services[0]["primary_key"] = "s3cr3t-key-value"
    with pytest.raises(pulumi.RunError) as raised:
        _run_root_program(project, config | {"aks-model-serving:services": json.dumps(services)}, monkeypatch, False)
    message = str(raised.value)
    assert "services[0].primary_key: a secret in clear text in the stack file" in message and "s3cr3t" not in message
    stack_file = project / "stacks" / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("count: 1", "count: 01"))
    with pytest.raises(pulumi.RunError, match=r"node_pools\[0\]\.count: 01 \(line \d+\) is an octal number to YAML 1.1"):
        _run_root_program(project, config, monkeypatch, False)


def _image_tags(project: Path) -> dict[str, str]:
    """The tag of each image the dev stack builds, by kind: router, scorer and its service's app image."""
    rec = run(declare(load_stack(project / "stacks" / "Pulumi.dev.yaml")))
    builds = {r.name.split("-")[0]: r.inputs["imageName"].rsplit(":", 1)[1] for r in rec.of_type("docker:index/image:Image")}
    assert builds.keys() == {"router", "scorer", "app"}
    return builds


ALL_IMAGES = {"router", "scorer", "app"}


@pytest.mark.parametrize(("old", "new", "changed"), [
    ('"pytest>=8",', '"pytest>=9",', set()),
    ("timeout = 300", "timeout = 600", set()),  # [tool.pytest.ini_options]
    ('"pulumi-tls>=5,<6",', '"pulumi-tls>=5,<7",', set()),  # the infra extra
    ("[build-system]", "# a comment\n[build-system]", set()),
    ('"orjson>=3.10",', '"orjson>=3.11",', {"scorer", "app"}),
    ('"joblib>=1.3",', '"joblib>=1.4",', {"scorer", "app"}),
    ('"aiohttp>=3.9",', '"aiohttp>=3.10",', {"router"}),
    ('python_version = "3.11"', 'python_version = "3.12"', {"router"}),  # [tool.mypy]: the router's compile stage
    ('"pyyaml>=6",', '"pyyaml>=6.0.1",', ALL_IMAGES),  # project.dependencies
    ('version = "0.1.0"', 'version = "0.2.0"', ALL_IMAGES),
    ('"setuptools>=69"', '"setuptools>=70"', ALL_IMAGES),
    ('"policy*"', '"policy*", "benchmarks*"', ALL_IMAGES),  # [tool.setuptools]
], ids=["dev-extra", "tool-pytest", "infra-extra", "comment", "scorer-extra", "sklearn-extra", "router-extra",
        "tool-mypy", "dependencies", "version", "build-system", "tool-setuptools"])
def test_an_image_tag_changes_only_with_what_its_build_reads_of_pyproject(project, old, new, changed):
    """The whole pyproject.toml was hashed into every tag: a dev dependency or a pytest option rolled every
    model pod on the next `up`. App images build on the scorer image: they change with its tag."""
    before = _image_tags(project)
    text = (project / "pyproject.toml").read_text()
    assert text.count(old) == 1, old
    (project / "pyproject.toml").write_text(text.replace(old, new))
    after = _image_tags(project)
    assert {kind for kind in before if after[kind] != before[kind]} == changed


@pytest.mark.parametrize("via_environment", [False, True])
def test_the_pulumi_program_reads_a_setting_with_no_value_as_not_set(project, monkeypatch, via_environment):
    """`aks-model-serving:endpoints:` with no value reaches the program as "", which it refused as an endpoints
    list, where check read it as YAML's null: both are a setting not given."""
    config = _program_config(project / "stacks" / "Pulumi.dev.yaml")
    config["aks-model-serving:endpoints"] = ""
    config["aks-model-serving:router"] = ""
    rec = _run_root_program(project, config, monkeypatch, via_environment)
    assert {r.name for r in rec.of_type("kubernetes:apps/v1:Deployment")} >= {"router", "iris"}
    config["aks-model-serving:endpoint"] = ""  # misspelt: still refused
    with pytest.raises(pulumi.RunError, match=r"endpoint: unknown field"):
        _run_root_program(project, config, monkeypatch, via_environment)


def test_the_pulumi_program_of_a_stack_without_settings_says_so(project, monkeypatch):
    """`config:` with nothing: what check and plan warn about, the program tells too, before refusing a
    stack without a cluster."""
    (project / "stacks" / "Pulumi.dev.yaml").write_text("config:\n")
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    with pytest.raises(pulumi.RunError, match="cluster: none declared"):
        _run_root_program(project, {}, monkeypatch, via_environment=False)
    assert any("no aks-model-serving: settings" in w for w in warned), warned


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_a_checkout_in_another_folder_declares_the_same_resources(project, tmp_path_factory, name):
    """A platform team's next `up` often runs from a fresh clone elsewhere (a CI runner's work folder): the app
    image's name held the source folder's absolute path, so each move replaced its HashedImage and build."""
    moved = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(project, moved)
    urns = [sorted(r.urn for r in run(declare(load_stack(root / "stacks" / f"Pulumi.{name}.yaml"))).resources)
            for root in (project, moved)]
    assert urns[0] == urns[1]
