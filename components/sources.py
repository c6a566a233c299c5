"""What a stack's files on this machine must hold: entry scripts, source folders, conda environments,
model folders, an attached cluster's kubeconfig, and (for a run on this machine) values it can use as they are.

Free of Pulumi, so that `check` finds these as `plan`, `pulumi up` and `local up` would, before any
of them runs: each line names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from components.documents import yaml_problem
from components.spec import SECURE, InferenceConfigSpec
from components.stackfile import Stack


def source_problems(stack: Stack, local: bool) -> list[str]:
    """The files each deployment is built or run from; for a cluster, what its images need, for a run on
    this machine (`local`: the local stack, or any stack under `local up`), what it can use as it is:
    folders here, values in clear."""
    spec, problems = stack.spec, []
    for path, dep in spec.deployments():
        ic = dep.inference_config
        if ic is None:
            continue

        def name(field: str) -> str:  # used at once, in this round of the loop
            return f"{path}.{dep.named(f'inference_config.{field}')}"

        problems += entry_script_problems(stack.resolve, name, ic)
        if local:
            problems += [f"{path}.inference_config.environment.environment_variables.{k}: a secret (secure:), which the local "
                         "stack cannot decrypt; give the value in clear in the local stack file"
                         for k, v in ic.environment.secret_variables.items() if v.get_secret_value() == SECURE]
        else:
            problems += conda_problems(stack.resolve, name, ic)
    if local:
        problems += [f"models[{i}].url: the local stack serves models from folders on this machine; give path"
                     for i, model in enumerate(spec.models) if model.url is not None]
    return problems


def missing_models(stack: Stack, local: bool) -> list[str]:
    """Model folders not (yet) there: a stack may name what a training run makes later (`make local` does)."""
    return [f"models[{i}].path: {stack.resolve(model.path)} does not exist; "
            + ("it is served from there" if local else "it is uploaded from there")
            for i, model in enumerate(stack.spec.models) if model.path is not None and not stack.resolve(model.path).exists()]


def app_context(stack: Stack, ic: InferenceConfigSpec) -> Path:
    """The folder an app image is built from: source_directory, else the entry script's folder."""
    return _app_folder(stack.resolve, ic)


def _app_folder(resolve: Callable[[str], Path], ic: InferenceConfigSpec) -> Path:
    return resolve(ic.source_directory) if ic.source_directory else resolve(ic.entry_script).parent


def entry_script_problems(resolve: Callable[[str], Path], name: Callable[[str], str], ic: InferenceConfigSpec) -> list[str]:
    """There and readable: not a traceback mid-plan, nor an image built from an empty folder. `resolve`: where
    the config's paths are relative to (a stack's project; for an Azure ML file alone, already its folder);
    `name`: how a field of the config is named (in an Azure ML file's keys, when one gave it)."""
    folder = _app_folder(resolve, ic)
    script = folder / ic.app_entry_script
    if ic.source_directory and not folder.is_dir():
        return [f"{name('source_directory')}: {folder} is not a folder; the image is built from it"]
    if not script.is_file():
        return [f"{name('entry_script')}: {script} does not exist"]
    return []


def conda_problems(resolve: Callable[[str], Path], name: Callable[[str], str], ic: InferenceConfigSpec) -> list[str]:
    """What an image's conda environment needs: readable, and the scorer's Python pinned (`resolve` and `name`
    as for entry_script_problems)."""
    env, problems = ic.environment, []
    conda: object = env.conda_dependencies.model_dump() if env.conda_dependencies else None
    if env.conda_file is not None:
        file = resolve(env.conda_file)
        try:
            conda = yaml.safe_load(file.read_text())
            if not isinstance(conda, dict):
                problems.append(f"{name('environment.conda_file')}: {file} is not a conda environment (a YAML mapping)")
        except yaml.YAMLError as exc:
            problems.append(f"{name('environment.conda_file')}: {file}: {yaml_problem(exc)}")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{name('environment.conda_file')}: {file}: {getattr(exc, 'strerror', None) or exc}")
    if isinstance(conda, dict) and not _pins_scorer_python(conda.get("dependencies")):
        field = "conda_file" if env.conda_file else "conda_dependencies"
        problems.append(f"{name(f'environment.{field}')}: the scorer runs in this environment, on Python 3.11 or later; "
                        "list python=3.11 (or later) under dependencies")
    return problems


def _pins_scorer_python(dependencies: object) -> bool:
    """Whether a conda environment's dependencies ask for Python 3.11 or later (`python=3.11`,
    `python>=3.12`, `python 3.11.*`); without a pin conda may pick any Python, or none."""
    for dep in dependencies if isinstance(dependencies, list) else []:
        found = re.fullmatch(r"python\s*(==|=|>=|~=|\s)\s*(\d+)\.(\d+)\S*", dep.strip()) if isinstance(dep, str) else None
        if found:
            return (int(found.group(2)), int(found.group(3))) >= (3, 11)
    return False


def read_kubeconfig(path: Path) -> tuple[str, str]:
    """A kubeconfig's text and its current context's API server; ValueError naming what is wrong."""
    where = f"cluster.attach.kubeconfig: {path}"
    try:
        text = path.read_text()
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        current = contexts.get(config.get("current-context"), next(iter(contexts.values()), {}))
        server = clusters.get(current.get("cluster"), {}).get("server", "")
    except (AttributeError, KeyError, TypeError):
        server = ""
    if not server:
        raise ValueError(f"{where}: no API server for its current context (a kubeconfig names its clusters and contexts)")
    return text, server
