"""The images' pinned dependencies (router_image/requirements.txt, scoring_image/requirements.txt) match pyproject.toml.

The Dockerfiles install exactly these, each file checked by its hash, so an image built twice holds the same
packages; when a dependency in pyproject.toml changes, `make locks` writes them again.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {"router": ROOT / "router_image" / "requirements.txt", "scorer": ROOT / "scoring_image" / "requirements.txt"}
EXTRAS = {"router": ("router",), "scorer": ("scorer", "sklearn")}  # what `make locks` compiles each from


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, hashes given), for the entries whose markers hold on this Python."""
    found: dict[str, tuple[Version, int]] = {}
    for entry in re.split(r"\n(?=\S)", lock.read_text().strip()):
        head = entry.split("\\", 1)[0].strip()
        spec, _, marker = head.partition(";")
        if marker and not Marker(marker).evaluate():
            continue
        name, version = spec.strip().split("==")
        found[canonicalize_name(name)] = (Version(version), entry.count("--hash=sha256:"))
    return found


@pytest.mark.parametrize("extra", sorted(LOCKS))
def test_every_dependency_of_an_image_is_pinned_within_pyproject_and_by_hash(extra):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins(LOCKS[extra])
    stale = []
    for text in project["dependencies"] + [dep for name in EXTRAS[extra] for dep in project["optional-dependencies"][name]]:
        wanted = Requirement(text)
        got = pinned.get(canonicalize_name(wanted.name))
        if got is None or not wanted.specifier.contains(got[0], prereleases=True):
            stale.append(f"{wanted} (locked: {got[0] if got else 'absent'})")
    assert not stale, f"{LOCKS[extra].relative_to(ROOT)} is stale, run `make locks`: {stale}"
    assert pinned and all(hashes for _, hashes in pinned.values())
