"""Shared pieces of the component tests: the example stacks and Kubernetes schema validation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.stackfile import Stack, load_stack

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images are staged under the temp folder by tag, once: each test stages into its own."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


@pytest.fixture
def stack():
    """Load stacks/Pulumi.<name>.yaml."""
    def load(name: str) -> Stack:
        return load_stack(STACKS / f"Pulumi.{name}.yaml")
    return load


@pytest.fixture
def validate():
    """Validate manifests against the Kubernetes schema of `version`, strictly (misspelled fields fail).

    Returns how many it validated, so a caller can assert that there was something to check.
    """
    def check(manifests: list[dict], version: str) -> int:
        for doc in manifests:
            kubernetes_validate.validate(doc, version, strict=True)
        return len(manifests)
    return check


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's stacks, pyproject.toml, Dockerfiles and example source in a folder of their own.

    The image tags hash their build context, so a small copy keeps each run fast and independent
    of whatever else lies in the checkout.
    """
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)  # what the images' builds read of it counts in their tags
    shutil.copytree(STACKS, tmp_path / "stacks")
    for image in ("scoring_image", "router_image"):
        (tmp_path / image).mkdir()
        (tmp_path / image / "Dockerfile").write_text((ROOT / image / "Dockerfile").read_text())
    (tmp_path / "examples" / "sklearn").mkdir(parents=True)
    (tmp_path / "examples" / "sklearn" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    for stack in STACKS.glob("Pulumi.*.yaml"):  # the local model folders they upload (`make local` trains them)
        for model in yaml.safe_load(stack.read_text())["config"].get("aks-model-serving:models", []):
            if "path" in model:
                (tmp_path / model["path"]).mkdir(parents=True, exist_ok=True)
                (tmp_path / model["path"] / "model.pkl").write_bytes(b"stand-in")
    return tmp_path


@pytest.fixture
def edit(project: Path):
    """Change the config of the copied stacks/Pulumi.<name>.yaml; returns its path."""
    def change_stack(name: str, change) -> Path:
        path = project / "stacks" / f"Pulumi.{name}.yaml"
        doc = yaml.safe_load(path.read_text())
        change(doc["config"])
        path.write_text(yaml.safe_dump(doc))
        return path
    return change_stack
