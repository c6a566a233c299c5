"""The router's hot path compiled with mypyc, from the same .py sources (as Black ships its wheels).

    make compiled    # python setup_compiled.py build_ext --build-lib build/compiled --with-sources

compiles COMPILED into build/compiled/ (ignored by git: never next to the sources, where an edited .py
would be shadowed by a stale build) and `PYTHONPATH=build/compiled` selects it. The router image builds
the same modules in a stage of its own and lays them over the installed sources (router_image/Dockerfile).
The .py files stay the only source of truth and run as they are without a build: the local stack, the
scorer image, the first test run.

COMPILED, chosen by measurement (Python time of one proxied request in-process, best of 15 x 10k, three
interleaved runs on a shared 2-core box): pure 16.0-16.8 us; the server, upstream, relay and pool
10.9-11.5 us; + app, auth, metrics, routes, traffic, responses 10.0-10.4 us. Under wrk at c64 (compiled
A/B, 4 interleaved rounds, 2026-11-29) every module of the request path against those four: router
CPU per request 0.89x (median of per-round ratios; lower in 4 of 4), req/s 1.06x. So every module a
request runs through is compiled; config (pydantic models), autoscale, the backends and the entry
point, which run off the request path, stay pure.

mypyc's rules for what it compiles (native classes): no undeclared attributes on instances, annotations
enforced at run time, a monkeypatched method is not seen by compiled callers, a subclass outside needs
@mypyc_attr(allow_interpreted_subclasses=True), no async generators, asyncio.Protocol not as a base.
"""

import hashlib
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "http_server/__init__.py",
    "router_image/upstream.py",
    "router_image/relay.py",
    "router_image/pool.py",
    "router_image/app.py",
    "router_image/proxy.py",
    "router_image/auth.py",
    "router_image/tls.py",
    "router_image/routes.py",
    "router_image/traffic.py",
    "router_image/metrics.py",
    "router_image/responses.py",
]
MODULES = os.environ.get("COMPILED", " ".join(COMPILED)).split()  # COMPILED="a.py b.py": measure another set

HERE = Path(__file__).resolve().parent

# build/compiled/router_image/__init__.py: router_image's modules that are not compiled come from the
# checkout, and a build older than a source it compiled refuses to load (the Makefile rebuilds it).
PACKAGE_INIT = '''\
"""Written by setup_compiled.py --with-sources: router_image as compiled modules from here and every
other module from {sources!r}."""

__path__.append({sources!r})


def _check_fresh() -> None:
    import hashlib

    for source, digest in {digests!r}.items():
        with open(source, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                raise ImportError(f"{{__path__[0]}} was compiled from an older {{source}}: run `make compiled`")


_check_fresh()
'''


class BuildExt(build_ext):
    user_options = build_ext.user_options + [
        ("with-sources", None, "also write router_image/__init__.py: with PYTHONPATH=<build-lib>, the "
                               "compiled modules load from there and the others from this checkout")]
    boolean_options = build_ext.boolean_options + ["with-sources"]

    def initialize_options(self) -> None:
        super().initialize_options()
        self.with_sources = False

    def run(self) -> None:
        super().run()
        if self.with_sources:
            digests = {str(HERE / m): hashlib.sha256((HERE / m).read_bytes()).hexdigest() for m in MODULES}
            init = Path(self.build_lib) / "router_image" / "__init__.py"
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(PACKAGE_INIT.format(sources=str(HERE / "router_image"), digests=digests))


if __name__ == "__main__":
    from mypyc.build import mypycify  # mypy: the dev extra, or the router image's build stage

    os.chdir(HERE)
    setup(
        name="aks-model-serving-compiled",
        packages=[],
        py_modules=[],
        cmdclass={"build_ext": BuildExt},
        ext_modules=mypycify(["--config-file", "pyproject.toml", *MODULES], opt_level="3", target_dir="build/mypyc"),
    )
