"""`python -m scoring_image`: serve an Azure ML entry script.

Settings come from the environment (`ScorerSettings`, Azure ML's variable names); options
given here override them.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from scoring_image.config import ScorerSettings

# option -> settings field
_OPTIONS = {
    "--host": ("host", str, "address to listen on"),
    "--port": ("port", int, "port to listen on (default 5001)"),
    "--workers": ("workers", int, "worker processes, each running init() (default: one per core of its CPU limit; one where it sees a GPU)"),
    "--entry-script": ("entry_script", str, "entry script with init() and run(), relative to --app-root"),
    "--model-dir": ("model_dir", str, "AZUREML_MODEL_DIR: a model's version folder or a root of <name>/<version>"),
    "--app-root": ("app_root", str, "folder the entry script path is relative to"),
    "--scoring-timeout-ms": ("scoring_timeout_ms", int, "answer 504 and recycle the worker when run() takes longer"),
    "--log-level": ("log_level", str, "DEBUG, INFO, WARNING or ERROR"),
}


def parse(argv: list[str] | None = None) -> tuple[ScorerSettings, int | None]:
    """The settings, and the listening socket handed over, if one was."""
    parser = argparse.ArgumentParser(
        prog="python -m scoring_image",
        description="Serve an Azure ML entry script (init() / run()) over HTTP. "
        "Every option can also be set through its environment variable (in brackets).",
    )
    for option, (name, kind, text) in _OPTIONS.items():
        parser.add_argument(option, dest=name, type=kind, help=f"{text} [{ScorerSettings.env_name(name)}]")
    parser.add_argument("--fd", type=int, help="serve on this inherited socket, bound and listening, instead of "
                        "--host/--port: a parent that picked a free port hands it over with no race for it")
    args = vars(parser.parse_args(argv))
    fd = args.pop("fd")
    overrides = {k: v for k, v in args.items() if v is not None}
    try:
        base = ScorerSettings.from_env()
        return ScorerSettings.model_validate({**base.model_dump(), **overrides}), fd
    except ValidationError as exc:
        # Each error's place and message only: pydantic's own text quotes the input, secrets and all
        # (a SAS token in a container URL), and this goes to the container log.
        problems = "".join(f"  {_place(error['loc'])}: {error['msg']}\n"
                           for error in exc.errors(include_url=False, include_input=False))
        parser.exit(2, f"invalid settings:\n{problems}")


def _place(loc: tuple[int | str, ...]) -> str:
    """Where an error is: the field and its environment variable, or "settings" for the whole."""
    if not loc:
        return "settings"
    where = ".".join(map(str, loc))
    field = str(loc[0])
    return f"{where} [{ScorerSettings.env_name(field)}]" if field in ScorerSettings.model_fields else where


def main(argv: list[str] | None = None) -> None:
    settings, fd = parse(argv)
    from scoring_image import supervisor

    supervisor.serve(settings, fd)


if __name__ == "__main__":
    main(sys.argv[1:])
