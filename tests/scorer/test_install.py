"""The `scorer` extra alone is enough to serve: the image installs nothing else."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from components.image import INSTALL_SCORER, SCORER_SOURCE, content_hash, stage_context
from components.program import IMAGE_FILES, image_args
from scorer_helpers import EXAMPLE, ROOT, StartScorer


@pytest.mark.slow  # about 70 s: a fresh venv installs the scorer extra (from pip's cache)
def test_scorer_extra_alone_serves_a_request(start_scorer: StartScorer, tmp_path: Path) -> None:
    """Installed as a custom base gets it: the step a generated Dockerfile runs, on the files the
    scorer image keeps in /opt/scorer, with the base's Python (here a fresh venv) first on PATH.
    What the base pinned for its model stays as it was: here scikit-learn 1.3 (the scorer image has 1.9)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "scikit-learn==1.3.2", "numpy==1.26.4"], check=True)
    image = image_args("scorer", ROOT, "registry.test")
    source = stage_context(image, content_hash(image))  # the build context: what the image keeps in /opt/scorer
    assert "dev" not in tomllib.loads((source / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    step = INSTALL_SCORER.removeprefix("RUN ").replace(SCORER_SOURCE, str(source))
    subprocess.run(["sh", "-c", step], check=True, env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"})
    # Nothing beyond the extra: no Pulumi, no router, no test tooling.
    installed = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert "pulumi" not in installed.lower() and "pytest" not in installed.lower()
    assert re.search(r"^scikit-learn +1\.3\.2$", installed, re.M) and re.search(r"^numpy +1\.26\.4$", installed, re.M), installed

    # The model as the base's own scikit-learn pickles it.
    subprocess.run([python, str(EXAMPLE / "train.py"), "--out", str(tmp_path / "models")], check=True)
    # The installed package, whatever PYTHONPATH the test run has (a checkout there would be imported instead).
    alone = {"PYTHONPATH": "", "PYTHONSAFEPATH": "1"}
    where = subprocess.run([python, "-c", "import scoring_image; print(scoring_image.__file__)"], capture_output=True,
                           text=True, check=True, cwd=tmp_path, env={**os.environ, **alone}).stdout
    assert where.startswith(str(venv)), where
    server = start_scorer(
        EXAMPLE / "score.py",
        env={"AZUREML_MODEL_DIR": str(tmp_path / "models" / "sklearn-iris" / "1"), **alone},
        python=python,
        cwd=tmp_path,  # the installed package, not the source tree
    )
    response = server.post(json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.status_code == 200
    assert response.json() == [0]


def test_the_dockerfile_copies_what_the_image_hash_covers_and_installs_only_the_scorer_extra() -> None:
    text = (ROOT / "scoring_image" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert next(line for line in lines if line.startswith("FROM ")) == "FROM python:3.11-slim-bookworm"
    copied = {line.split()[1].split("/")[0] for line in lines if line.startswith("COPY ")}
    assert copied == set(IMAGE_FILES["scorer"])  # what the image's hash covers, nothing else
    # The scorer's dependencies, pinned by hash (tests/components/test_locks.py), then the project alone
    # (tests/components/test_image.py checks the order).
    assert "RUN pip install --require-hashes -r scoring_image/requirements.txt" in lines
    assert lines.index("RUN pip install --require-hashes -r scoring_image/requirements.txt") < lines.index("RUN pip install --no-deps .")
    assert "[infra" not in text and "[router" not in text
    assert next(line for line in lines if line.startswith("USER ")) == "USER scorer"
    assert "HEALTHCHECK" in text and lines[-1] == 'CMD ["python", "-m", "scoring_image"]'
    # PID 1 reaps orphans (the supervisor waits only for its workers) and passes SIGTERM on; custom-base
    # images copy the same static binary (components/image.py).
    assert "apt-get install -y --no-install-recommends tini " in text
    assert lines[-2] == 'ENTRYPOINT ["/usr/bin/tini-static", "--"]'
    assert "SCORER_PORT" in next(line for line in lines if "urlopen" in line)  # the port the scorer listens on


def test_the_dockerfile_healthcheck_asks_the_port_the_scorer_listens_on(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py")
    text = (ROOT / "scoring_image" / "Dockerfile").read_text().replace("\\\n", "")
    probe = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK")).split(" CMD ", 1)[1]
    assert probe.startswith("python -c ")

    def probe_rc(port: int) -> int:
        env = {**os.environ, "SCORER_PORT": str(port)}
        return subprocess.run(["sh", "-c", probe.replace("python", sys.executable, 1)], env=env,
                              capture_output=True).returncode

    assert probe_rc(server.port) == 0
    server.stop()
    assert probe_rc(server.port) != 0
