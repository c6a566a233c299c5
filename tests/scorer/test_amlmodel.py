"""`Model.get_model_path` as azureml-core resolves it inside a deployed service, without azureml-core.

Many Azure ML v1 entry scripts call it in init(); the image has no azureml-core, so amlcompat provides the
call, resolving under AZUREML_MODEL_DIR: the version folder of one model, or the root of <name>/<version>/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scoring_image import amlcompat

from scorer_helpers import ROOT


def _layout(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_one_model_the_version_folder_its_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _layout(tmp_path / "azureml-models", {"diabetes/3/model.pkl": "m"})
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(root / "diabetes" / "3"))
    assert amlcompat.Model.get_model_path("diabetes") == str(root / "diabetes" / "3" / "model.pkl")
    assert amlcompat.Model.get_model_path(model_name="diabetes", version=3) == str(root / "diabetes" / "3" / "model.pkl")


def test_several_models_by_name_latest_or_given_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _layout(tmp_path / "models", {"first/1/first.pkl": "1", "first/2/first.pkl": "2", "first/10/first.pkl": "10",
                                         "second/4/outputs/a.bin": "a", "second/4/outputs/b.bin": "b"})
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(root))
    assert amlcompat.Model.get_model_path("first") == str(root / "first" / "10" / "first.pkl")  # 10 > 2: by number
    assert amlcompat.Model.get_model_path("first", version=2) == str(root / "first" / "2" / "first.pkl")
    assert amlcompat.Model.get_model_path("second") == str(root / "second" / "4" / "outputs")  # a folder: its path


def test_a_version_folder_of_several_files_is_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure ML keeps a model registered from a folder in one folder under its version; this image copies the
    folder's files into the version folder itself, which is then the model's path."""
    root = _layout(tmp_path / "models", {"bundle/1/a.pkl": "a", "bundle/1/b.pkl": "b"})
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(root / "bundle" / "1"))
    assert amlcompat.Model.get_model_path("bundle") == str(root / "bundle" / "1")


def test_a_model_not_deployed_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _layout(tmp_path / "models", {"first/1/first.pkl": "1"})
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(amlcompat.ModelNotFoundException, match="'other'"):
        amlcompat.Model.get_model_path("other")
    with pytest.raises(amlcompat.ModelNotFoundException, match="version 7"):
        amlcompat.Model.get_model_path("first", version=7)
    with pytest.raises(ValueError, match="version should be an int"):
        amlcompat.Model.get_model_path("first", version="1")
    # As azureml-core: last, a file or folder of that name in the working directory.
    (tmp_path / "other").write_text("here")
    assert amlcompat.Model.get_model_path("other") == "other"


def test_scripts_import_model_from_azureml_core(tmp_path: Path) -> None:
    root = _layout(tmp_path / "models", {"m/1/m.pkl": "1"})
    code = ("from scoring_image import amlcompat\n"
            "amlcompat.install()\n"
            "from azureml.core.model import Model\n"
            "from azureml.core import Model as Same\n"
            "import azureml.core.model\n"
            "assert Model is Same is azureml.core.model.Model is amlcompat.Model\n"
            "print(Model.get_model_path('m'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"AZUREML_MODEL_DIR": str(root), "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == str(root / "m" / "1" / "m.pkl")
