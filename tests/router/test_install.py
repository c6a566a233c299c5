"""The router image: its Dockerfile, and the `router` extra alone serving (what the image installs)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, free_port, wait_until  # noqa: E402

from components.image import content_hash, stage_context  # noqa: E402
from components.program import IMAGE_FILES, image_args  # noqa: E402
from router_image.config import RouterConfig  # noqa: E402

DOCKERFILE = ROOT / "router_image" / "Dockerfile"
IMAGE_CONFIG = "/etc/model-router/config/config.json"  # where the ModelRouter component mounts it


def instruction(name: str) -> str:
    """The (continuation-joined) argument of the Dockerfile's last `name` instruction."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert lines, f"no {name} in {DOCKERFILE}"
    return lines[-1][len(name) + 1:].strip()


def test_the_dockerfile_installs_only_the_router_extra_and_runs_as_10001() -> None:
    text = DOCKERFILE.read_text()
    # One Debian release for both stages: the compiled modules link against the glibc they run with.
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases == ["python:3.11-bookworm", "python:3.11-slim-bookworm"], bases
    # The router's dependencies, pinned by hash (tests/components/test_locks.py), then the project alone
    # (tests/components/test_image.py checks the order).
    final = text.rsplit("\nFROM ", 1)[1]
    assert "RUN pip install --require-hashes -r router_image/requirements.txt " in final
    assert " ".join(instruction("RUN").split()).startswith("pip install --no-deps . && ")
    assert instruction("USER").split(":")[0] == "10001"  # numeric: runAsNonRoot can verify it
    assert "--uid 10001" in text
    assert json.loads(instruction("CMD")) == ["python", "-m", "router_image", "--config", IMAGE_CONFIG]
    assert "/healthz" in instruction("HEALTHCHECK")
    copied = {src.split("/")[0] for line in text.splitlines() if line.startswith("COPY ") and "--from=" not in line
              for src in line.split()[1:-1]}
    assert copied == set(IMAGE_FILES["router"])  # what the image's hash covers, nothing else
    # The hot path compiled in a stage of its own (setup_compiled.py), laid over the installed sources.
    assert re.search(r"^FROM python:3\.11\S* AS compile$", text, re.M)
    assert "python setup_compiled.py build_ext --build-lib /compiled" in text
    assert "COPY --from=compile /compiled/ /usr/local/lib/python3.11/site-packages/" in text
    # `python -m` imports from the working directory first: the router must not start beside a source tree.
    assert instruction("WORKDIR") == "/" and "rm -rf /opt/router" in instruction("RUN")


def healthcheck_command(config_path: Path) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, pointed at `config_path` instead of the image's file."""
    command = instruction("HEALTHCHECK").split(" CMD ", 1)[1]
    return shlex.split(command.replace(IMAGE_CONFIG, str(config_path)))


@pytest.mark.slow  # about a minute: a fresh venv installs the pinned dependencies (from the local wheels)
def test_router_extra_alone_serves_healthz_compiled(tmp_path: Path) -> None:
    """Installed as the image installs it: the pinned dependencies, then the project from the files the
    Dockerfile copies alone (a router import of another part of the project would fail here, as in the image)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    image = image_args("router", ROOT, "registry.test")
    source = stage_context(image, content_hash(image))  # the build context, as the image is built from it
    assert "dev" not in tomllib.loads((source / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    subprocess.run([python, "-m", "pip", "install", "-q", "--require-hashes", "-r", "router_image/requirements.txt"],
                   cwd=source, check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "."], cwd=source, check=True)
    installed = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout.lower()
    for absent in ("pulumi", "pytest", "scikit-learn", "starlette", "azure-monitor"):
        assert absent not in installed, absent

    # The image's compile stage (its command in the build context, with its reduced pyproject.toml's
    # [tool.mypy], and this project's venv standing in for that stage's `.[router]` + mypy), laid over
    # the installed sources as the image's COPY --from=compile does.
    compiled = tmp_path / "compiled"
    subprocess.run([sys.executable, "setup_compiled.py", "-q", "build_ext", "--build-lib", str(compiled),
                    "--build-temp", str(tmp_path / "compile-temp")], cwd=source, check=True, capture_output=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(compiled, site, dirs_exist_ok=True)
    loaded = subprocess.run([python, "-c", "import http_server, router_image.upstream as u; print(u.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert loaded.strip().endswith(".so") and loaded.startswith(site), loaded

    # Run from tmp_path: the installed package, not the source tree.
    help_text = subprocess.run([python, "-m", "router_image", "--help"], cwd=tmp_path, capture_output=True,
                               text=True, check=True).stdout
    assert "--config" in help_text

    port = free_port()
    config = tmp_path / "config.json"
    config.write_text(RouterConfig(port=port).dump())  # no routes: up, ready, nothing to route
    log = (tmp_path / "router.log").open("wb")
    process = subprocess.Popen([python, "-m", "router_image", "--config", str(config)], cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "router.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, 0.1, "router /healthz")
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["ready"] is True
        # The image's HEALTHCHECK passes against it (run with the venv's python, as in the image).
        probe = healthcheck_command(config)
        assert probe[0] == "python"
        subprocess.run([python, *probe[1:]], cwd=tmp_path, check=True, timeout=10)
    finally:
        process.terminate()
        process.wait(20)
        log.close()
