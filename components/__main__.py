"""`python -m components <command>`: check, plan, local and policy-pack, each in its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "check": ("components.check", "validate a stack file or an Azure ML JSON file"),
    "plan": ("components.plan", "offline, policy-checked plan of a stack under Pulumi mocks"),
    "local": ("components.local", "run a stack's router and scorers on this machine"),
    "policy-pack": ("components.policypack", "write the policy pack as a folder `pulumi policy publish` can upload"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m components", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage and exits 2
    try:
        return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
    except ModuleNotFoundError as exc:  # `make local` installs what `local` needs; plan needs Pulumi too
        print(f"python -m components {argv[0]} needs {exc.name}, which this environment lacks; `make setup` installs "
              "everything (the infra extra: pulumi and its providers)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `... check stack.yaml | head -1`: the reader left, as for any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        code = 141  # 128 + SIGPIPE, what a shell reports for such a command
    sys.exit(code)
