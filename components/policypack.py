"""`python -m components policy-pack OUT`: the policy pack as one folder that `pulumi policy publish OUT` can upload.

The pack in the checkout (policy/) imports the project's tables (components.accelerators, components.spec
and what they import) from the folder above it. `pulumi policy publish` uploads the pack's folder alone,
and an organization's stacks run the published copy from a folder of its own, so the copy carries those
modules inside it. Which ones is read from a fresh interpreter that imports the rules, not from a list
kept by hand: a new import of the rules comes along by itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "policy"
PACK_FILES = ("PulumiPolicy.yaml", "requirements.txt", "__main__.py")  # what the engine reads at the pack's top

# Which of the project's modules importing the rules loads (run in a fresh interpreter: this one has more).
_IMPORTED = """
import json, sys
import policy.rules
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values())
                        if getattr(m, "__file__", None) and m.__name__.split(".")[0] in ("components", "policy", "router_image"))))
"""


def imported_modules() -> list[Path]:
    """The project's source files the rules import: policy/, components/ and router_image's config schema alike."""
    out = subprocess.run([sys.executable, "-c", _IMPORTED], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    files = [Path(f).resolve() for f in json.loads(out)]
    outside = [f for f in files if not f.is_relative_to(ROOT)]
    if outside:  # an installed copy, not this checkout: the pack would carry other code than the plan checks
        raise RuntimeError(f"the rules imported {outside[0]}, which is not under {ROOT}")
    return files


def write(out: Path) -> list[Path]:
    """Write the pack to `out` (emptied first): the pack's files at its top, the modules under their packages."""
    if out.resolve() == PACK or PACK in out.resolve().parents:
        raise ValueError(f"{out} is the pack's own folder: write the publishable copy elsewhere")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in PACK_FILES:
        shutil.copy2(PACK / name, out / name)
    written = []
    for source in imported_modules():
        target = out / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m components policy-pack", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the pack to (emptied first), e.g. build/policy-pack")
    args = parser.parse_args(argv)
    try:
        written = write(args.out)
    except (ValueError, RuntimeError) as exc:
        print(f"policy-pack: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {', '.join(PACK_FILES)} and {len(written)} modules "
          f"({', '.join(str(p.relative_to(args.out)) for p in written)}); publish with: pulumi policy publish {args.out}")
    return 0
