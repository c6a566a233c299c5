"""ScorerSettings: the one schema both the server and the infrastructure code render from."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from scoring_image import config
from scoring_image.config import ScorerSettings


def test_environment_round_trip() -> None:
    settings = ScorerSettings(
        entry_script="score.py", model_dir="/models", workers=3, scoring_timeout_ms=5000,
        cors_origins=["https://a.example", "https://b.example"], access_log=False,
        data_collection_enabled=True, data_collection_models=["iris:1", "iris-b:2"],
        data_collection_connection_string="UseDevelopmentStorage=true",
    )
    env = settings.to_env()
    assert env["AZUREML_ENTRY_SCRIPT"] == "score.py"
    assert env["AZUREML_MODEL_DIR"] == "/models"
    assert env["WORKER_COUNT"] == "3"
    assert env["SCORING_TIMEOUT_MS"] == "5000"
    assert env["AML_CORS_ORIGINS"] == "https://a.example,https://b.example"
    assert env["AZUREML_DATA_COLLECTION_CONNECTION_STRING"] == "UseDevelopmentStorage=true"
    assert env["SCORER_ACCESS_LOG"] == "false"
    assert all(isinstance(v, str) for v in env.values())
    assert ScorerSettings.from_env(env) == settings


def test_azure_ml_defaults() -> None:
    settings = ScorerSettings.from_env({})
    assert settings.port == 5001
    assert settings.scoring_timeout_ms == 60_000
    assert settings.worker_count >= 1
    assert "AZUREML_MODEL_DIR" not in settings.to_env()


def test_entry_script_is_relative_to_the_app_root() -> None:
    assert ScorerSettings(app_root="/app", entry_script="score.py").entry_script_path == "/app/score.py"
    assert ScorerSettings(app_root="/app", entry_script="/abs/s.py").entry_script_path == "/abs/s.py"


@pytest.mark.parametrize("destinations", [
    {},
    {"data_collection_local_dir": "/x", "data_collection_connection_string": "y"},
])
def test_data_collection_needs_exactly_one_destination(destinations: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="exactly one destination"):
        ScorerSettings(data_collection_enabled=True, data_collection_models=["m:1"], **destinations)


def test_data_collection_needs_the_models_it_files_records_under() -> None:
    """Each record is filed under each model's `<name>:<version>`: with none, collected data would go nowhere."""
    with pytest.raises(ValidationError, match="data collection needs data_collection_models"):
        ScorerSettings(data_collection_enabled=True, data_collection_local_dir="/spool-out")
    ScorerSettings(data_collection_enabled=True, data_collection_local_dir="/spool-out", data_collection_models=["m:1"])


@pytest.mark.parametrize(("destination", "problem"), [
    ({"data_collection_connection_string": "AccountName=acct;AccountKey"}, "not <key>=<value> pairs"),
    ({"data_collection_connection_string": "DefaultEndpointsProtocol=https;AccountName=acct"}, "no credential"),
    ({"data_collection_connection_string": "SharedAccessSignature=sv=2022-11-02&sig=abc"}, "no blob endpoint"),
    ({"data_collection_container_url": "https://acct.blob.core.windows.net/modeldata"}, "no SAS token"),
    ({"data_collection_container_url": "https://acct.blob.core.windows.net/?sv=2022-11-02&sig=abc"}, "no container"),
    ({"data_collection_container_url": "acct.blob.core.windows.net/modeldata?sv=2022-11-02&sig=abc"}, "not an http"),
])
def test_a_blob_destination_the_scorer_cannot_write_to_is_refused(destination: dict[str, str], problem: str) -> None:
    """A connection string or container URL the Blob SDK cannot use, or uses without a credential, started a scorer
    that answered as usual while every upload failed (or the supervisor died on a traceback that named no setting):
    the spool filled to its budget and collection stopped, seen only in the logs."""
    with pytest.raises(ValidationError, match=problem) as refused:
        ScorerSettings(data_collection_enabled=True, data_collection_models=["m:1"], **destination)
    assert "abc" not in str(refused.value) and "acct" not in str(refused.value)


@pytest.mark.parametrize("destination", [
    {"data_collection_connection_string": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
                                          "EndpointSuffix=core.windows.net"},
    {"data_collection_connection_string": "BlobEndpoint=https://acct.blob.core.windows.net;"
                                          "SharedAccessSignature=sv=2022-11-02&sig=abc"},
    {"data_collection_connection_string": "UseDevelopmentStorage=true"},
    {"data_collection_container_url": "https://acct.blob.core.windows.net/modeldata?sv=2022-11-02&sig=abc"},
    {"data_collection_container_url": "http://127.0.0.1:10000/devstoreaccount1/modeldata?sv=2022-11-02&sig=abc"},
])
def test_blob_destinations_the_sdk_writes_to_are_taken(destination: dict[str, str]) -> None:
    ScorerSettings(data_collection_enabled=True, data_collection_models=["m:1"], **destination)


# The fields that carry credentials (an account key, a SAS signature, an instrumentation key).
SECRET_FIELDS = {"appinsights_connection_string", "data_collection_connection_string", "data_collection_container_url",
                 "data_collection_account_url"}


def test_secret_settings_never_show_in_the_settings_repr() -> None:
    """Settings get logged and printed (an error, a debug line): every field that carries a credential is a
    SecretStr, masked in repr and str. The named ones and any field shaped like one (a connection string, a URL)."""
    shaped = {f for f in ScorerSettings.model_fields if "connection_string" in f or f.endswith("_url")}
    assert SECRET_FIELDS <= shaped
    values = {field: f"AccountKey=SECRET-{field}" for field in shaped}
    settings = ScorerSettings(**values)
    for field, value in values.items():
        assert value not in repr(settings) and value not in str(settings), field
        assert getattr(settings, field).get_secret_value() == value, field
        assert ScorerSettings.from_env(settings.to_env()) == settings


def test_models_are_name_and_version() -> None:
    with pytest.raises(ValidationError, match="<name>:<version>"):
        ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_MODELS": "iris"})


@pytest.mark.parametrize(("models", "problem"), [
    ("iris:1,iris-b:2,iris:1", "'iris:1' is listed twice"),
    ("../../etc:1", "'../../etc:1' is not <name>:<version>"),
    ("iris:1/x", "'iris:1/x' is not <name>:<version>"),
])
def test_models_are_each_listed_once_and_name_one_folder(models: str, problem: str) -> None:
    """Each model's records go to a blob named <service>/<name>/<version>/...: a model listed twice had two
    threads write one blob (into a local folder, their parts interleaved, records twice, or the second's rename
    failed the pass, one in ten), and a slash made the name other folders (outside the local folder's too)."""
    with pytest.raises(ValidationError, match=problem):
        ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_MODELS": models})


@pytest.mark.parametrize("service", ["../../etc", "/srv/out", "a/b", "a\\b", ".."])
def test_the_service_names_one_folder(service: str) -> None:
    """Collected records go to <service>/<name>/<version>/...: a service named "../../etc" or "/srv/out" wrote
    outside the local folder (an absolute one replaces the folder it is joined to), and a slash made more folders."""
    with pytest.raises(ValidationError, match="data_collection_service .* is not a folder name"):
        ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_SERVICE": service})


@pytest.mark.parametrize("workspace", ["sub/rg", "sub/rg/ws/x", "sub/../ws", "sub//ws", "sub/rg/.."])
def test_the_workspace_is_three_folders(workspace: str) -> None:
    """Collected records go to <subscription>/<resourcegroup>/<workspace>/<service>/..., Azure ML's folders."""
    with pytest.raises(ValidationError, match="data_collection_workspace .* is not <subscription id>/<resource group>/<workspace>"):
        ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_WORKSPACE": workspace})
    # Lowercased, as Azure ML's collector writes it.
    assert ScorerSettings.from_env({"AZUREML_DATA_COLLECTION_WORKSPACE": "Sub/My-RG/WS"}).data_collection_workspace == "sub/my-rg/ws"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ScorerSettings(entry_scrip="typo.py")  # type: ignore[call-arg]


def test_config_imports_only_pydantic_and_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import scoring_image.config; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before if not m.startswith('_sysconfigdata')}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'pydantic', 'pydantic_core', 'typing_extensions', "
        "'annotated_types', 'typing_inspection', 'scoring_image', '_virtualenv'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_lists_the_options() -> None:
    out = subprocess.run([sys.executable, "-m", "scoring_image", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--port", "--host", "--workers", "--entry-script", "--model-dir", "--scoring-timeout-ms"):
        assert option in out
    assert "WORKER_COUNT" in out and "AZUREML_ENTRY_SCRIPT" in out


def test_cli_rejects_bad_settings() -> None:
    done = subprocess.run([sys.executable, "-m", "scoring_image", "--port", "70000"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "port" in done.stderr


def test_cli_settings_errors_do_not_print_secrets() -> None:
    signature = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789SECRET%3D"
    env = {
        "AZUREML_DATA_COLLECTION_ENABLED": "true",
        "AZUREML_DATA_COLLECTION_MODELS": "m:1",
        # Two destinations: the error must say so without quoting either.
        "AZUREML_DATA_COLLECTION_CONTAINER_URL": f"https://acct.blob.core.windows.net/c?sv=2022-11-02&sig={signature}",
        "AZUREML_DATA_COLLECTION_CONNECTION_STRING": "AccountName=a;AccountKey=KEY0123456789SECRET==",
    }
    done = subprocess.run([sys.executable, "-m", "scoring_image"], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 2
    assert "exactly one destination" in done.stderr
    output = done.stdout + done.stderr
    assert "SECRET" not in output and "sig=" not in output and "KEY0123" not in output


def test_cli_refuses_a_container_url_without_a_container_naming_the_variable_not_the_signature() -> None:
    env = {
        "AZUREML_DATA_COLLECTION_ENABLED": "true",
        "AZUREML_DATA_COLLECTION_MODELS": "m:1",
        "AZUREML_DATA_COLLECTION_CONTAINER_URL": "https://acct.blob.core.windows.net/?sv=2022-11-02&sig=SECRET%3D",
    }
    done = subprocess.run([sys.executable, "-m", "scoring_image"], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 2
    assert "AZUREML_DATA_COLLECTION_CONTAINER_URL" in done.stderr and "no container" in done.stderr
    assert "SECRET" not in done.stdout + done.stderr


@pytest.mark.parametrize("cpu_max, cores, workers", [
    ("200000 100000\n", 64, 2),  # docker run --cpus=2 on a 64-core host: a quota, not an affinity
    ("150000 100000\n", 64, 2),  # 1.5 cores: rounded up, as the components round a pod's cpu_limit
    ("50000 100000\n", 64, 1),
    ("max 100000\n", 64, 64),  # no quota: every core the process may run on
    ("800000 100000\n", 4, 4),  # a quota over the cores it may run on: the cores
    (None, 8, 8),  # no cgroup v2 file (cgroup v1, or not in a container)
])
def test_a_container_cpu_quota_bounds_the_default_worker_count(tmp_path, monkeypatch, cpu_max, cores, workers) -> None:
    """Each worker loads the model: a 2-CPU container on a 64-core host must not start 64 copies of it."""
    cpu_max_file = tmp_path / "cpu.max"
    if cpu_max is not None:
        cpu_max_file.write_text(cpu_max)
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", cpu_max_file)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert ScorerSettings.from_env({}).worker_count == workers
    assert ScorerSettings.from_env({"WORKER_COUNT": "3"}).worker_count == 3


def test_a_process_that_sees_a_gpu_runs_one_worker_by_default(tmp_path, monkeypatch) -> None:
    """Each worker loads the model onto the device: `docker run --gpus all` of the image on a 16-core GPU host
    put 16 copies of it there (tests/scorer/test_gpu.py measures a copy per worker), as Azure ML never does."""
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(config, "GPU_DEVICES", tmp_path)
    (tmp_path / "nvidiactl").touch()  # the driver's control device alone: no GPU given to this container
    assert ScorerSettings.from_env({}).worker_count == 16
    (tmp_path / "nvidia0").touch()
    assert ScorerSettings.from_env({}).worker_count == 1
    assert ScorerSettings.from_env({"WORKER_COUNT": "4"}).worker_count == 4
