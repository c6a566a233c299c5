"""HashedImage: an image tagged by what it is made of, built only when the registry lacks it.

As Azure ML names environment images by a hash of their definition, the tag here is a hash of
the Dockerfile (given, or generated from a base image, extra docker steps, a conda environment
and pip packages, with canonical YAML so key order does not matter) and of every file in the
build context that `.amlignore` (or, without one, `.gitignore`) does not exclude, read as git
reads it: relative POSIX paths, contents and the executable bit, in sorted order, so the tag is
the same on any machine, in any checkout directory, whatever order the file system lists files in.
Never counted: `.git` (a file naming the repository's path in a worktree), `__pycache__` (stamped with
mtimes), pipes and sockets, nor the context's own `.dockerignore`, which the build does not apply: it
replaces it with its own.
With `pyproject`, the context's pyproject.toml counts (and is built from) reduced to the keys named
(components.pyproject): a dev dependency or a pytest option in it changes no image's tag.

At deploy time the registry is asked for `<repo>:<tag>` (`docker buildx imagetools inspect`):
when it answers, the image is reused without building; otherwise it is built from a staged copy of
the context holding exactly the hashed files (so an ignored file can never reach an image whose
tag did not account for it) and pushed with pulumi-docker. Either way `image_ref` pins the image
by digest. Both use `registry_password` when given (Workspace gives an ACR refresh token for the
Azure identity running Pulumi, as `az acr login` gets one, so the `up` that creates the registry can
push to it), else the docker login of the machine running Pulumi.

Why not docker's `getRegistryImage` invoke: for a missing tag it fails, and a failed invoke
fails the whole Pulumi program even when the exception is caught (the SDK's RPC manager records
it). `registry_lookup` is the one place that asks; `components.mocks.run` swaps in the mock
registry for tests and the offline plan.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker
import yaml

from components.ignore import context_files
from components.pyproject import PYPROJECT, reduced
from components.spec import EnvironmentSpec

# Bump when the recipe below changes, so that no tag of the old recipe names an image of the new one.
# v4: pyproject.toml counts reduced to `pyproject` (every image's tag changed once, on the first `up` after it).
# v5: a context's .dockerignore no longer applies to the build: a v4 tag of a context holding one may name an
# image that lacks files it counted, which the registry would otherwise serve again.
HASH_VERSION = "aks-model-serving/hashed-image/v5"
APP_ROOT = "/var/azureml-app"  # where a generated Dockerfile puts the context (Azure ML's app root)
# Where the scorer image keeps the package it installed (scoring_image/Dockerfile): a generated image
# on another base installs the scorer from there, with that base's own Python.
SCORER_SOURCE = "/opt/scorer"
# The scorer image's PID 1 (see its Dockerfile): static, so it runs on any base.
INIT = "/usr/bin/tini-static"
SCORER_UID = 10001  # the scorer image's user (scoring_image/Dockerfile)
# As Azure ML does: an image's conda environment in a prefix of its own, first on PATH, so it never
# fights the base's conda for the base environment's Python.
CONDA_ENV = "/azureml-envs/app"
# Azure ML's bases for a conda environment that names no image (CPU, and with enable_gpu).
AZUREML_BASE_IMAGES = {False: "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
                       True: "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"}
STAGED_DOCKERFILE = "Dockerfile.aks-model-serving"


@dataclass(frozen=True)
class HashedImageArgs:
    """What an image is made of and where it goes.

    Give `dockerfile` (a path; relative paths are taken from `context`) or generate one from
    `base_image` or `base_dockerfile` (Dockerfile text) plus `environment_variables`, `conda`
    (a conda environment as a dict, or the path of an environment.yml), `pip` packages and
    `docker_steps` (Dockerfile lines, Azure ML's extraDockerFileSteps), then the context copied
    to `context_target`. With `scorer_image`, the scoring server that image carries is installed
    with the base's own Python and the image runs it: how a custom base serves.
    """

    repository: str
    registry_login_server: pulumi.Input[str]
    context: str | Path
    dockerfile: str | Path | None = None
    base_image: str | None = None
    base_dockerfile: str | None = None
    docker_steps: str | None = None
    conda: Mapping[str, Any] | str | Path | None = None
    pip: Sequence[str] = ()
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    context_target: str = APP_ROOT
    scorer_image: str | None = None
    # A refresh token for registry_login_server (user ACR_TOKEN_USER); None: this machine's docker login.
    registry_password: pulumi.Input[str | None] | None = None
    platform: str = "linux/amd64"
    # Top-level files or folders of the context the image is made of (all when empty), so
    # that e.g. the router's tag does not change with the tests or the scorer's code.
    include: Sequence[str] = ()
    # Dotted keys of the context's pyproject.toml that the build reads (`project.dependencies`, `tool.mypy`):
    # the image holds, and its tag counts, that file reduced to them. Empty: the file as it is, if any.
    pyproject: Sequence[str] = ()

    def __post_init__(self) -> None:
        for field_name in ("base_image", "scorer_image", "base_dockerfile", "docker_steps"):
            value = getattr(self, field_name)
            if value is not None and not isinstance(value, str):  # an Output: it would be written as its repr
                raise TypeError(f"HashedImageArgs.{field_name}: a plain string, known before anything is created, not "
                                f"{type(value).__name__} (the tag is a hash of the Dockerfile written from it); another "
                                "HashedImage's is '<registry login server>/<its repository>:<its tag>', its tag a string")
        for field_name in ("pip", "include", "pyproject"):
            if isinstance(getattr(self, field_name), str):  # a Sequence[str] too, read letter by letter
                raise TypeError(f"HashedImageArgs.{field_name}: a list of strings, not one string")
        sources = [self.dockerfile is not None, self.base_image is not None, self.base_dockerfile is not None]
        if sum(sources) != 1:
            raise ValueError("HashedImageArgs: give exactly one of dockerfile, base_image or base_dockerfile")
        if self.dockerfile is not None and (self.docker_steps or self.conda or self.pip or self.environment_variables
                                            or self.scorer_image):
            raise ValueError("HashedImageArgs: docker_steps, conda, pip, environment_variables and scorer_image need a generated "
                             "Dockerfile (base_image or base_dockerfile); put them in the given dockerfile instead")

    @classmethod
    def from_environment(
        cls, env: EnvironmentSpec, *, repository: str, registry_login_server: pulumi.Input[str],
        context: str | Path, scorer_image: str, base_dir: str | Path = ".",
        registry_password: pulumi.Input[str | None] | None = None, include: Sequence[str] = (),
    ) -> HashedImageArgs:
        """A service's own environment image (EnvironmentSpec): on the scorer image, unless it names a
        base or a conda environment (on Azure ML's base image, as Azure ML builds one); any other base
        gets the scorer installed.

        `base_dir` resolves a relative conda_file or base_dockerfile path (the project directory).
        """
        base_dockerfile = None
        if env.base_dockerfile is not None:
            path = Path(base_dir) / env.base_dockerfile
            base_dockerfile = path.read_text() if "\n" not in env.base_dockerfile and path.is_file() else env.base_dockerfile
        conda: Mapping[str, Any] | Path | None = None
        if env.conda_dependencies is not None:
            conda = env.conda_dependencies.model_dump()
        elif env.conda_file is not None:
            conda = Path(base_dir) / env.conda_file
        base_image = None if base_dockerfile else (env.base_image or (AZUREML_BASE_IMAGES[env.gpu] if conda else scorer_image))
        return cls(
            repository=repository,
            registry_login_server=registry_login_server,
            registry_password=registry_password,
            context=context,
            include=include,
            base_image=base_image,
            base_dockerfile=base_dockerfile,
            scorer_image=None if base_image == scorer_image else scorer_image,
            docker_steps=env.docker_steps,
            conda=conda,
            pip=tuple(env.pip),
            environment_variables=env.image_variables,  # secrets stay out of the image (a Secret gives them)
        )


# ------------------------------------------------------------------ the hash (pure, no engine)


def _canonical_conda(conda: Mapping[str, Any] | str | Path, context: Path) -> str:
    if isinstance(conda, Mapping):
        doc = dict(conda)
    else:
        path = Path(conda)
        doc = yaml.safe_load((path if path.is_absolute() else context / path).read_text()) or {}
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


_DIRECTIVES = re.compile(r"^(?:#[ \t]*[A-Za-z]+[ \t]*=[^\n]*\n)+")  # `# syntax=...`, `# escape=...` lines first
_ESCAPE = re.compile(r"#[ \t]*escape[ \t]*=[ \t]*(\S)", re.IGNORECASE)


def _env_value(value: str, escape: str) -> str:
    """A value as Dockerfile ENV reads it back unchanged: in double quotes, with the escape character (the
    base's `# escape=`, else backslash), quote and `$` escaped (ENV substitutes $NAME even in quotes; JSON's
    \\uXXXX and \\n escapes are not Docker's)."""
    return '"' + value.replace(escape, escape * 2).replace('"', escape + '"').replace("$", escape + "$") + '"'


def render_dockerfile(args: HashedImageArgs) -> str:
    """The Dockerfile the image is built from: the given file's text, or one generated from args."""
    context = Path(args.context)
    if args.dockerfile is not None:
        path = Path(args.dockerfile)
        return (path if path.is_absolute() else context / path).read_text()
    base = args.base_dockerfile.rstrip() if args.base_dockerfile else f"FROM {args.base_image}"
    # Parser directives count only at the very top: the base file's own first, and ours for the heredocs
    # below unless it names a syntax of its own.
    found = _DIRECTIVES.match(base)
    directives = found.group(0).splitlines() if found else []
    if not any("syntax" in line.lower() for line in directives):
        directives.append("# syntax=docker/dockerfile:1")
    lines = [*directives, base[found.end():] if found else base]
    escape = next((m.group(1) for line in directives if (m := _ESCAPE.fullmatch(line.strip()))), "\\")
    # A base may build as a user of its own (the scorer image: its non-root user), under which apt-get,
    # conda and pip cannot install; the pod names the user it runs as.
    as_root = bool(args.scorer_image or args.conda is not None or args.pip or args.docker_steps)
    if as_root:
        lines.append("USER root")
    for key in sorted(args.environment_variables):
        lines.append(f"ENV {key}={_env_value(args.environment_variables[key], escape)}")
    if args.conda is not None:
        lines += ["COPY <<'CONDA_ENV' /tmp/conda_env.yml", _canonical_conda(args.conda, context).rstrip(), "CONDA_ENV",
                  f"RUN conda env create -p {CONDA_ENV} -f /tmp/conda_env.yml && conda clean -afy && rm /tmp/conda_env.yml",
                  f"ENV PATH={CONDA_ENV}/bin:$PATH"]
    if args.pip:
        # The exec form: each entry reaches pip as written, where a shell would expand a $ or ` in it.
        lines.append("RUN " + json.dumps(["python", "-m", "pip", "install", "--no-cache-dir", *args.pip]))
    if args.docker_steps:
        lines.append(args.docker_steps.rstrip())
    if args.scorer_image:
        lines += [f"COPY --from={args.scorer_image} {SCORER_SOURCE} {SCORER_SOURCE}", INSTALL_SCORER,
                  f"COPY --from={args.scorer_image} {INIT} {INIT}"]
    lines += [f"COPY . {args.context_target}", f"WORKDIR {args.context_target}"]
    if args.scorer_image:
        # The pod's user (uid 10001) is in no passwd file of a custom base: without this its home is `/`,
        # where libraries that cache under ~ cannot write.
        lines += ["ENV HOME=/tmp", f'ENTRYPOINT ["{INIT}", "--"]', 'CMD ["python", "-m", "scoring_image"]']
    if as_root:
        lines.append(f"USER {SCORER_UID}")  # as the scorer image runs, and as the pod's runAsUser checks
    return "\n".join(lines) + "\n"


# The scorer needs Python 3.11: a base that lacks it stops the build here, saying so, rather than
# yielding an image whose replicas crash at start. It installs the `scorer` extra by its ranges, not the
# scorer image's lock, nor the `sklearn` extra that image carries: a custom base or a conda environment
# pins what its model needs (numpy, scikit-learn, torch), and those would replace its versions.
INSTALL_SCORER = (
    "RUN python -c 'import sys; sys.exit(None if sys.version_info >= (3, 11) else "
    "\"the scorer runs on Python 3.11 or later; the python on this base is \" + sys.version.split()[0])' "
    f"&& python -m pip install --no-cache-dir '{SCORER_SOURCE}[scorer]'"
)


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return _entry(digest.hexdigest(), executable=bool(path.stat().st_mode & stat.S_IXUSR))


def _entry(hexdigest: str, executable: bool) -> str:
    """A file's part of the tag: its content and the one mode bit `COPY` carries into what runs."""
    return f"{'x' if executable else '-'}:{hexdigest}"


def content_hash(args: HashedImageArgs) -> str:
    """The image tag: 32 hex digits of a SHA-256 over the recipe, the Dockerfile and the context files."""
    context = Path(args.context)
    files = context_files(context, args.include)
    return _digest(args, context, files, _reduced_pyproject(args, files))


def _reduced_pyproject(args: HashedImageArgs, files: list[str]) -> bytes | None:
    """The pyproject.toml the image holds in place of the context's, when `pyproject` names its keys."""
    if not args.pyproject:
        return None
    if PYPROJECT not in files:
        raise ValueError(f"{args.context}: no {PYPROJECT} in the context of the image {args.repository}, whose build "
                         f"reads {', '.join(args.pyproject)} of it")
    return reduced(Path(args.context) / PYPROJECT, args.pyproject)


def _digest(args: HashedImageArgs, root: Path, files: list[str], pyproject: bytes | None = None) -> str:
    """With `pyproject`, the pyproject.toml under `root` counts as that text, as stage_context writes it (0644)."""
    digest = hashlib.sha256()
    digest.update(f"{HASH_VERSION}\nplatform={args.platform}\ntarget={args.context_target}\n".encode())
    digest.update(render_dockerfile(args).encode())
    for rel in files:
        if rel == PYPROJECT and pyproject is not None:
            file_digest = _entry(hashlib.sha256(pyproject).hexdigest(), executable=False)
        else:
            file_digest = _file_digest(root / rel)
        # As the file system holds them: a name or link target that is not UTF-8 comes from os as surrogates.
        digest.update(f"\0{rel}\0{file_digest}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


# Longer than any build, so that a build beside this one (another stack's `up`) keeps its stage.
STAGE_KEEP_S = 24 * 3600


def _own_folder() -> Path:
    """This user's folder for stages under the shared temp folder, private: on a shared build host,
    another user could otherwise read a stage, or swap its files between the hash and the build."""
    folder = Path(tempfile.gettempdir()) / f"aks-model-serving-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    mode = folder.lstat()
    if not stat.S_ISDIR(mode.st_mode) or mode.st_uid != os.getuid() or mode.st_mode & 0o077:
        raise RuntimeError(f"{folder} is not a private folder of this user (owner {mode.st_uid}, mode "
                           f"{stat.filemode(mode.st_mode)}): remove it, it is where images are staged")
    return folder


def stage_context(args: HashedImageArgs, tag: str) -> Path:
    """A copy of exactly the hashed files (pyproject.toml as reduced) plus the Dockerfile, to build from,
    checked against the tag.

    The tag was taken when the image was declared, the build comes after the registry was asked (minutes,
    on a first `up`): a file saved meanwhile would be built under the tag of what it was, and reused as
    that for ever. Each build gets a folder of its own, so a build of the same image beside it (another
    stack's `up`) or a cleaner of old temp files never changes what it reads. Modes are made what the
    image needs, as `COPY` keeps them and the tag counts only the executable bit: readable by the
    scorer's user (a 0600 file from a checkout under umask 077 would not be), executable as hashed.
    """
    context = Path(args.context)
    folder = _own_folder()
    for old in folder.iterdir():  # the stages of builds long done: nothing removes a stage once it is built
        with contextlib.suppress(OSError):
            if time.time() - old.lstat().st_mtime > STAGE_KEEP_S:
                shutil.rmtree(old)
    stage = Path(tempfile.mkdtemp(prefix=f"{args.repository.replace('/', '_')}-{tag}-", dir=folder))
    try:
        files = context_files(context, args.include)
        pyproject = _reduced_pyproject(args, files)
        for rel in files:
            source, target = context / rel, stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel == PYPROJECT and pyproject is not None:
                target.write_bytes(pyproject)
                target.chmod(0o644)
            elif source.is_symlink():
                target.symlink_to(os.readlink(source))
            else:
                shutil.copyfile(source, target)
                target.chmod(0o755 if source.stat().st_mode & stat.S_IXUSR else 0o644)
        for folder, _, _ in os.walk(stage):
            os.chmod(folder, 0o755)
        if _digest(args, stage, files) != tag:
            raise RuntimeError(f"{context}: its files changed after the image {args.repository} was hashed as {tag} "
                               "(while `pulumi up` ran); run it again to build what they are now")
        # Docker applies the context's .dockerignore to `COPY .`: ours, in place of one the context holds (written
        # for another build; Azure ML reads none), so that every hashed file reaches the image. It leaves out the
        # Dockerfile, which docker still reads, and itself. Unlinked first: a staged link is not written through.
        own = {STAGED_DOCKERFILE: render_dockerfile(args), ".dockerignore": f"{STAGED_DOCKERFILE}\n.dockerignore\n"}
        for name, text in own.items():
            (stage / name).unlink(missing_ok=True)
            (stage / name).write_text(text)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


# ------------------------------------------------------------------ the registry


ACR_TOKEN_USER = "00000000-0000-0000-0000-000000000000"  # the user name ACR takes with a refresh token


def acr_refresh_token(login_server: str, arm_token: str, tenant_id: str, base_url: str | None = None) -> str | None:
    """A refresh token for the registry, exchanged for the ARM token of the identity running Pulumi (what
    `az acr login` does). None when the registry does not give one: this machine's docker login is used."""
    body = urllib.parse.urlencode({"grant_type": "access_token", "service": login_server, "tenant": tenant_id,
                                   "access_token": arm_token}).encode()
    try:
        with urllib.request.urlopen(f"{base_url or 'https://' + login_server}/oauth2/exchange", body, timeout=30) as answer:
            return str(json.load(answer)["refresh_token"])
    except (OSError, ValueError, KeyError) as exc:  # unreachable, refused, not JSON, no token
        pulumi.log.warn(f"no token from {login_server} ({exc}); using this machine's docker login for it")
        return None


async def docker_registry_digest(image_name: str, password: str | None = None) -> str | None:
    """The digest `image_name` has in its registry, or None when it is not there (or cannot be asked).
    With `password` (a registry refresh token), asked with it rather than this machine's docker login."""
    with tempfile.TemporaryDirectory(prefix="docker-config-") as config:
        env = None
        if password:
            env = {**os.environ, "DOCKER_CONFIG": config}
            auth = base64.b64encode(f"{ACR_TOKEN_USER}:{password}".encode()).decode()
            Path(config, "config.json").write_text(json.dumps({"auths": {image_name.split("/", 1)[0]: {"auth": auth}}}))
            plugins = Path(os.environ.get("DOCKER_CONFIG", "~/.docker")).expanduser() / "cli-plugins"
            if plugins.is_dir():  # buildx may be installed there only
                Path(config, "cli-plugins").symlink_to(plugins)
        try:
            proc = await asyncio.create_subprocess_exec(
                "docker", "buildx", "imagetools", "inspect", image_name, "--format", "{{json .Manifest}}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        except (OSError, asyncio.TimeoutError) as exc:
            pulumi.log.warn(f"cannot ask the registry for {image_name} ({exc}); building it")
            return None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        if "not found" not in message.lower():
            pulumi.log.warn(f"cannot ask the registry for {image_name} ({message}); building it")
        return None
    return json.loads(out).get("digest") or None


# Swapped by components.mocks.run for the mock registry (no docker, no network).
registry_lookup = docker_registry_digest
registry_token = acr_refresh_token


# ------------------------------------------------------------------ the component


class HashedImage(pulumi.ComponentResource):
    """An image in the registry named by its content hash; reused when present, else built and pushed.

    Attributes: tag (str, known at construction), image_name (`<login server>/<repo>:<tag>`),
    image_ref (`<login server>/<repo>@sha256:<digest>`, what pods should run), built (whether
    this deployment builds it).
    """

    tag: str
    image_name: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    built: pulumi.Output[bool]

    def __init__(self, name: str, args: HashedImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:HashedImage", name, None, opts)
        self._name, self._args = name, args
        # The build is a child created later, inside an apply; it must wait for what this image
        # waits for (an app image builds FROM the scorer image, so the scorer's push comes first).
        self._depends_on = opts.depends_on if opts is not None else None
        self.tag = content_hash(args)
        repo = pulumi.Output.from_input(args.registry_login_server).apply(lambda server: f"{server}/{args.repository}")
        self.image_name = repo.apply(lambda r: f"{r}:{self.tag}")
        self._password = pulumi.Output.from_input(args.registry_password)
        # A digest is no secret, though asked for with one.
        digest = pulumi.Output.unsecret(pulumi.Output.all(self.image_name, self._password).apply(lambda a: self._lookup(*a)))
        self.built = digest.apply(lambda d: d is None)
        self.image_ref = pulumi.Output.unsecret(pulumi.Output.all(repo, digest, self._password).apply(
            lambda a: f"{a[0]}@{a[1]}" if a[1] else self._build(a[0], a[2])))
        self.register_outputs({"tag": self.tag, "image_name": self.image_name, "image_ref": self.image_ref, "built": self.built})

    async def _lookup(self, image_name: str, password: str | None) -> str | None:
        digest = await registry_lookup(image_name, password)
        if digest is None:
            pulumi.log.info(f"{image_name} is not in the registry; building it", resource=self)
        return digest

    def _build(self, repo: str, password: str | None) -> pulumi.Output[str]:
        stage = stage_context(self._args, self.tag)
        image = docker.Image(
            f"{self._name}-build",
            image_name=f"{repo}:{self.tag}",
            build=docker.DockerBuildArgs(
                context=str(stage),
                dockerfile=str(stage / STAGED_DOCKERFILE),
                platform=self._args.platform,
                builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
            ),
            registry=docker.RegistryArgs(server=repo.split("/", 1)[0], username=ACR_TOKEN_USER,
                                         password=pulumi.Output.secret(password)) if password else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._depends_on),
        )
        return image.repo_digest
