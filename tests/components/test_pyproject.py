"""pyproject.toml reduced to the keys an image's build reads, sorted, so that only what the build reads counts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from components.program import IMAGE_PYPROJECT
from components.pyproject import reduced

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("image", sorted(IMAGE_PYPROJECT))
def test_an_image_gets_the_keys_it_names_and_nothing_else(image):
    text = reduced(ROOT / "pyproject.toml", IMAGE_PYPROJECT[image])
    got = tomllib.loads(text.decode())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert got["build-system"] == project["build-system"] and got["tool"]["setuptools"] == project["tool"]["setuptools"]
    assert got["project"]["dependencies"] == project["project"]["dependencies"]
    extras = {"scorer": {"scorer", "sklearn"}, "router": {"router"}}[image]
    assert got["project"]["optional-dependencies"].keys() == extras
    assert got["tool"].keys() == ({"setuptools", "mypy"} if image == "router" else {"setuptools"})


def test_key_order_and_comments_in_the_file_do_not_count(tmp_path):
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text('[project]\nname = "x"\nversion = "1"\n[tool.pytest]\ntimeout = 1\n')
    two.write_text('# the same\n[tool.pytest]\ntimeout = 2\n[project]\nversion = "1"\nname = "x"\n')
    keys = ("project.version", "project.name")
    assert reduced(one, keys) == reduced(two, keys) == b'[project]\nname = "x"\nversion = "1"\n'


def test_a_key_the_build_reads_that_the_file_lacks_is_named(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    with pytest.raises(ValueError, match=r"pyproject.toml: no project.optional-dependencies, which the image's build "
                                         r"reads \(project.optional-dependencies.router\)"):
        reduced(path, ("project.name", "project.optional-dependencies.router"))
    path.write_text("[project\n")
    with pytest.raises(ValueError, match="pyproject.toml: not TOML"):
        reduced(path, ("project.name",))
