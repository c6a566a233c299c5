"""The model fetch (components/service.py FETCH_MODELS): what a model Deployment's init container runs,
in the scorer image, against blob storage (Azurite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from components.service import FETCH_MODELS
from scorer_helpers import AZURITE_KEY

SIGNATURE_PART = "sig="


@pytest.fixture
def models(azurite: str) -> tuple[str, str]:
    """A `models` container holding iris/1 (two files, one in a folder); its url, and the connection string."""
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client("models")
    if not container.exists():
        container.create_container()
    container.upload_blob("iris/1/model.pkl", b"weights", overwrite=True)
    container.upload_blob("iris/1/vocab/words.txt", b"a b c", overwrite=True)
    return f"{service.url.rstrip('/')}/models", azurite


def fetch(tmp_path: Path, manifest: list[dict], connection: str | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "models.json").write_text(json.dumps(manifest))
    env = {**os.environ, "MODEL_ROOT": str(tmp_path / "root"), "MODELS_MANIFEST": str(tmp_path / "models.json")}
    env.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    if connection:
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection
    return subprocess.run([sys.executable, "-c", FETCH_MODELS], env=env, capture_output=True, text=True, timeout=60)


def sas(container_url: str) -> str:
    account = container_url.split("/")[-2]
    return generate_container_sas(account, "models", account_key=AZURITE_KEY, permission=ContainerSasPermissions(read=True, list=True),
                                  expiry=datetime.now(timezone.utc) + timedelta(hours=1))


def test_a_models_blobs_are_copied_under_its_name_and_version(tmp_path: Path, models: tuple[str, str]) -> None:
    url, connection = models
    done = fetch(tmp_path, [{"name": "iris", "version": 1, "url": f"{url}/iris/1"}], connection)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "root" / "iris" / "1"
    assert (root / "model.pkl").read_bytes() == b"weights" and (root / "vocab" / "words.txt").read_bytes() == b"a b c"
    assert "model iris:1: 2 files" in done.stdout


def test_a_sas_urls_model_is_fetched_with_its_token_and_the_token_never_printed(tmp_path: Path,
                                                                                  models: tuple[str, str]) -> None:
    url, _ = models
    token = sas(url)
    done = fetch(tmp_path, [{"name": "iris", "version": 1, "url": f"{url}/iris/1?{token}"}])
    assert done.returncode == 0, done.stderr
    empty = fetch(tmp_path, [{"name": "gone", "version": 7, "url": f"{url}/gone/7?{token}"}])
    assert empty.returncode != 0 and f"model gone:7: no files under {url}/gone/7/" in empty.stderr
    refused = fetch(tmp_path, [{"name": "iris", "version": 1, "url": f"{url}/iris/1?{token.replace('sig=', 'sig=AAAA')}"}])
    assert refused.returncode != 0 and f"model iris:1: AuthorizationFailure reading {url}/iris/1/" in refused.stderr
    for run in (done, empty, refused):
        assert SIGNATURE_PART not in run.stdout + run.stderr


WORKLOAD_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")


def fetch_as_identity(tmp_path: Path, identity: dict[str, str]) -> subprocess.CompletedProcess:
    """The fetch on a cluster the stack created: the workspace's blob endpoint, no connection string; `identity`,
    what the workload identity webhook set."""
    (tmp_path / "models.json").write_text(json.dumps([
        {"name": "iris", "version": 1, "url": "https://mlwstore.blob.core.windows.net/models/iris/1"}]))
    env = {k: v for k, v in os.environ.items() if k not in WORKLOAD_ENV and k != "AZURE_STORAGE_CONNECTION_STRING"}
    env |= {"MODEL_ROOT": str(tmp_path / "root"), "MODELS_MANIFEST": str(tmp_path / "models.json"),
            "AZURE_STORAGE_ACCOUNT_URL": "https://mlwstore.blob.core.windows.net/", **identity}
    return subprocess.run([sys.executable, "-c", FETCH_MODELS], env=env, capture_output=True, text=True, timeout=60)


def test_the_account_url_without_the_pods_workload_identity_fails_naming_what_is_missing(tmp_path: Path) -> None:
    done = fetch_as_identity(tmp_path, {"AZURE_CLIENT_ID": "22222222-2222-2222-2222-222222222222"})
    assert done.returncode == 1
    assert "AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE unset" in done.stderr and "azure.workload.identity/use" in done.stderr

