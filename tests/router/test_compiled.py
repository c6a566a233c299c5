"""`make test` runs the router's tests a second time against the compiled build (PYTHONSAFEPATH=1
PYTHONPATH=build/compiled, as the router image ships it): there, each module setup_compiled.py compiles
must load compiled, or that run would silently test the pure sources again."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "compiled"


def compiled_modules() -> list[str]:
    spec = importlib.util.spec_from_file_location("setup_compiled", ROOT / "setup_compiled.py")
    assert spec is not None and spec.loader is not None
    setup_compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_compiled)  # setup() runs only as __main__
    return [path.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for path in setup_compiled.COMPILED]


@pytest.mark.skipif(not any(Path(p).resolve() == BUILD for p in sys.path if p),
                    reason="the pure run: build/compiled is not on the path")
def test_the_compiled_build_is_what_runs() -> None:
    modules = compiled_modules()
    assert "router_image.upstream" in modules and "http_server" in modules
    for name in modules:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.endswith(".so"), (
            f"{name} loaded from {module.__file__}, not build/compiled (PYTHONSAFEPATH=1 unset?)")
        assert Path(module.__file__).resolve().is_relative_to(BUILD)
    # What is not compiled still comes from the checkout's sources.
    config = importlib.import_module("router_image.config")
    assert config.__file__ is not None and Path(config.__file__).resolve() == ROOT / "router_image" / "config.py"
