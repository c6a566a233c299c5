"""pyproject.toml reduced to the keys an image's build reads, written as TOML that reads back the same."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

import pytest

from components.program import IMAGE_PYPROJECT
from components.pyproject import dumps, reduced

ROOT = Path(__file__).resolve().parents[2]


def test_the_whole_project_file_and_awkward_values_read_back_equal():
    """No TOML writer is installed: ours must give back what tomllib read, arrays of tables included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert tomllib.loads(dumps(project)) == project
    awkward = {"a b": {"c.d": ['q"uote', "back\\slash", "line\nbreak\ttab\x00\x7f", "é 🐍"]},
               "n": [1, -2, 1.5, 1e100, float("inf"), True, False], "empty": {}, "t": [{"x": 1}, {"y": [{"z": "w"}]}],
               "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "day": datetime.date(2026, 1, 2)}
    assert tomllib.loads(dumps(awkward)) == awkward


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
