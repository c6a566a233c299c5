"""HashedImage: the content-hash tag (pure, no engine) and reuse-or-build under Pulumi mocks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pulumi
import pytest
from pydantic import SecretStr

from components import image as image_module
from components.deployable import DOCKERFILES
from components.image import (
    INSTALL_SCORER,
    STAGED_DOCKERFILE,
    HashedImage,
    HashedImageArgs,
    content_hash,
    context_files,
    render_dockerfile,
)
from components.mocks import AzureMocks, run
from components.spec import EnvironmentSpec

LOGIN = "mlwacr.azurecr.io"
SCORER = f"{LOGIN}/aks-model-serving/scorer:" + "a" * 16


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "pkg").mkdir(parents=True)
    (root / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / "notes.log").write_text("ignored\n")
    (root / "cache").mkdir()
    (root / "cache" / "big.bin").write_bytes(b"\0" * 10)
    (root / ".gitignore").write_text("*.log\ncache/\n")
    return root


def args(context: Path, **fields) -> HashedImageArgs:
    return HashedImageArgs(**{"repository": "scorer", "registry_login_server": LOGIN, "context": context,
                              "base_image": "python:3.11-slim", **fields})


# ------------------------------------------------------------------ the tag


def test_a_base_dockerfiles_parser_directives_stay_at_the_top(ctx):
    """Docker reads `# syntax=` and `# escape=` only before any other line; below ours they were comments."""
    base = "# syntax=docker/dockerfile:1.7\n# escape=`\nFROM python:3.11-slim\nRUN echo `\n  hi\n"
    lines = render_dockerfile(HashedImageArgs(repository="app", registry_login_server=LOGIN, context=ctx,
                                              base_dockerfile=base)).splitlines()
    assert lines[:3] == ["# syntax=docker/dockerfile:1.7", "# escape=`", "FROM python:3.11-slim"]
    escape_only = render_dockerfile(HashedImageArgs(repository="app", registry_login_server=LOGIN, context=ctx,
                                                    base_dockerfile="#escape=`\nFROM x\n")).splitlines()
    assert escape_only[:3] == ["#escape=`", "# syntax=docker/dockerfile:1", "FROM x"]  # ours for the heredoc
    plain = render_dockerfile(args(ctx)).splitlines()
    assert plain[:2] == ["# syntax=docker/dockerfile:1", "FROM python:3.11-slim"]


def test_environment_values_are_escaped_with_the_base_dockerfiles_escape_character(ctx):
    """Under `# escape=` + "`" a backslash is a plain character: `\\$HOME` was the value's backslash and the build's
    HOME, and `\\"` ended the quotes, so the image got another value or the build failed."""
    base = "# escape=`\nFROM python:3.11-slim\n"
    text = render_dockerfile(args(ctx, base_image=None, base_dockerfile=base,
                                  environment_variables={"K": 'a$HOME "q" \\ `'}))
    assert 'ENV K="a`$HOME `"q`" \\ ``"' in text.splitlines()


def test_environment_values_reach_the_image_as_written(ctx):
    """Docker's ENV substitutes $NAME inside quotes and knows no JSON escapes (\\u00e9 would arrive as u00e9)."""
    text = render_dockerfile(args(ctx, environment_variables={"K": 'a$HOME "q" \\ é'}))
    assert 'ENV K="a\\$HOME \\"q\\" \\\\ é"' in text.splitlines()
    with pytest.raises(ValueError, match="holds a line break"):
        EnvironmentSpec(environment_variables={"K": "a\nb"})
    with pytest.raises(ValueError, match="not a variable name"):
        EnvironmentSpec(environment_variables={"K-1": "a"})


def test_a_link_to_a_folder_is_hashed_and_staged_as_a_link(ctx):
    """os.walk lists it among the folders without going in: it was in neither the tag nor the image."""
    before = content_hash(args(ctx))
    (ctx / "shared").symlink_to("pkg", target_is_directory=True)
    assert context_files(ctx) == [".gitignore", "pkg/util.py", "score.py", "shared"]
    linked = content_hash(args(ctx))
    assert linked != before
    (ctx / "shared").unlink()
    (ctx / "shared").symlink_to("cache", target_is_directory=True)
    assert content_hash(args(ctx)) != linked  # retargeted
    staged = image_module.stage_context(args(ctx), content_hash(args(ctx)))
    assert os.readlink(staged / "shared") == "cache"


def test_each_build_stages_a_folder_of_its_own_that_another_never_touches(ctx):
    """Two stacks building the same image at once: the second staging must neither rewrite nor remove
    the stage the first one's docker build reads."""
    tag = content_hash(args(ctx))
    stage = image_module.stage_context(args(ctx), tag)
    script = stage / "score.py"
    before = script.stat().st_ino
    again = image_module.stage_context(args(ctx), tag)
    assert again != stage and script.stat().st_ino == before
    assert sorted(p.relative_to(stage) for p in stage.rglob("*")) == sorted(p.relative_to(again) for p in again.rglob("*"))
    assert (stage / STAGED_DOCKERFILE).read_text() == render_dockerfile(args(ctx))


def test_stages_of_builds_long_done_are_removed_and_recent_ones_kept(ctx):
    """Nothing removed a stage once built: every `up` that built an image left a copy of its context behind."""
    tag = content_hash(args(ctx))
    done, recent = image_module.stage_context(args(ctx), tag), image_module.stage_context(args(ctx), tag)
    day_old = time.time() - image_module.STAGE_KEEP_S - 60
    os.utime(done, (day_old, day_old))
    latest = image_module.stage_context(args(ctx), tag)
    assert not done.exists() and recent.is_dir() and latest.is_dir()


def test_a_file_saved_after_the_image_was_hashed_is_not_built_under_the_old_tag(ctx):
    """The tag is taken when the image is declared, the build comes minutes later (the registry asked, a new
    one created): the edit went into an image tagged as the file was before, reused as that for ever."""
    tag = content_hash(args(ctx))
    (ctx / "score.py").write_text("def init(): pass\ndef run(raw): return 'edited'\n")
    with pytest.raises(RuntimeError, match=f"its files changed after the image scorer was hashed as {tag}"):
        image_module.stage_context(args(ctx), tag)
    assert not [p for p in image_module._own_folder().iterdir() if tag in p.name]  # nothing half-made left
    assert image_module.stage_context(args(ctx), content_hash(args(ctx))).is_dir()


def test_a_dockerignore_in_the_context_leaves_no_hashed_file_out_of_the_image(ctx, tmp_path):
    """Azure ML reads .amlignore or .gitignore, never .dockerignore; here docker applied the source folder's own
    (written for another build: `*.json`, or `*` then `!app/`) to `COPY .`, so a file the tag counted was
    missing from the image and the replicas failed, reused under that tag until the sources changed."""
    (ctx / "config.json").write_text("{}")
    (ctx / ".dockerignore").write_text("*.json\npkg/\n")
    stage = image_module.stage_context(args(ctx), content_hash(args(ctx)))
    assert (stage / ".dockerignore").read_text().split() == [STAGED_DOCKERFILE, ".dockerignore"]
    assert (stage / "config.json").is_file() and (stage / "pkg" / "util.py").is_file()
    # Staged as a link to a file elsewhere, it was appended to through the link.
    shared = tmp_path / "shared.dockerignore"
    shared.write_text("*.json\n")
    (ctx / ".dockerignore").unlink()
    (ctx / ".dockerignore").symlink_to(shared)
    stage = image_module.stage_context(args(ctx), content_hash(args(ctx)))
    assert shared.read_text() == "*.json\n"
    assert (stage / ".dockerignore").read_text().split() == [STAGED_DOCKERFILE, ".dockerignore"]


def test_staged_files_are_readable_by_the_images_user_and_executable_as_hashed(ctx):
    """COPY keeps modes and the tag counts only the executable bit: a 0600 file (a checkout under umask 077)
    was unreadable by the scorer's user, and making it 0644 kept the tag, so the broken image stayed in use."""
    (ctx / "score.py").chmod(0o600)
    (ctx / "pkg").chmod(0o700)
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / "run.sh").chmod(0o700)
    stage = image_module.stage_context(args(ctx), content_hash(args(ctx)))
    modes = {rel: (stage / rel).stat().st_mode & 0o777 for rel in ("score.py", "pkg", "pkg/util.py", "run.sh")}
    assert modes == {"score.py": 0o644, "pkg": 0o755, "pkg/util.py": 0o644, "run.sh": 0o755}


def test_pyproject_is_hashed_and_staged_reduced_to_what_the_build_reads(ctx):
    """The whole file was hashed and copied: a dev dependency changed every image's tag, rolling every pod."""
    (ctx / "pyproject.toml").write_text('[project]\nname = "p"\n[project.optional-dependencies]\ndev = ["pytest"]\n')
    (ctx / "pyproject.toml").chmod(0o600)
    reads = args(ctx, pyproject=("project.name",))
    tag = content_hash(reads)
    assert tag != content_hash(args(ctx))
    (ctx / "pyproject.toml").write_text('[project]\nname = "p"\n[project.optional-dependencies]\ndev = ["pytest>=9"]\n')
    assert content_hash(reads) == tag
    stage = image_module.stage_context(reads, tag)  # saved after the hash, in a key the build does not read
    assert (stage / "pyproject.toml").read_text() == '[project]\nname = "p"\n'
    assert (stage / "pyproject.toml").stat().st_mode & 0o777 == 0o644
    (ctx / "pyproject.toml").write_text('[project]\nname = "q"\n')
    with pytest.raises(RuntimeError, match="its files changed after the image scorer was hashed"):
        image_module.stage_context(reads, tag)


def test_pyproject_keys_without_a_pyproject_in_the_context_are_named(ctx):
    with pytest.raises(ValueError, match=r"no pyproject.toml in the context of the image scorer, whose build reads "
                                         r"project.name, tool.mypy of it"):
        content_hash(args(ctx, pyproject=("project.name", "tool.mypy")))
    (ctx / "pyproject.toml").write_text('[project]\nname = "p"\n')
    with pytest.raises(ValueError, match="no pyproject.toml in the context"):  # there, but left out of the image
        content_hash(args(ctx, pyproject=("project.name",), include=("score.py",)))


@pytest.mark.parametrize("planted", ["open", "link"])
def test_stages_go_only_to_a_private_folder_of_this_user(ctx, tmp_path, planted):
    """On a shared build host another user could make the folder first, to read a stage or swap its files."""
    folder = Path(tempfile.gettempdir()) / f"aks-model-serving-{os.getuid()}"
    if planted == "open":
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="is not a private folder of this user"):
        image_module.stage_context(args(ctx), "t")
    assert not (tmp_path / "elsewhere").exists() or list((tmp_path / "elsewhere").iterdir()) == []


def test_a_git_file_never_counts(ctx, tmp_path):
    """In a git worktree or submodule `.git` is a file naming the repository by absolute path: it made the tag
    differ with the checkout's location (and went into the image), so every clone rebuilt and rolled the pods."""
    before = content_hash(args(ctx))
    (ctx / ".git").write_text("gitdir: /home/me/repo/.git/worktrees/ctx\n")
    (ctx / "pkg" / ".git").write_text("gitdir: ../.git/modules/pkg\n")
    assert context_files(ctx) == [".gitignore", "pkg/util.py", "score.py"]
    assert content_hash(args(ctx)) == before
    assert not (image_module.stage_context(args(ctx), before) / ".git").exists()


def test_bytecode_caches_never_count(ctx):
    """Importing the entry script (the local stack, a test) writes __pycache__/*.pyc beside it, stamped with the
    source's mtime: with no ignore file in the source folder (the repository's .gitignore is not read), a fresh
    clone and a machine that ran the script got different tags for the same sources. No image reads them: staged
    sources get new mtimes, so the stamps no longer match."""
    before = content_hash(args(ctx))
    for folder in (ctx / "__pycache__", ctx / "pkg" / "__pycache__"):
        folder.mkdir()
        (folder / "util.cpython-311.pyc").write_bytes(b"\xa7\r\r\n" + os.urandom(8))
    (ctx / ".gitignore").write_text("*.log\ncache/\n!__pycache__/\n")  # not even re-included
    assert context_files(ctx) == [".gitignore", "pkg/util.py", "score.py"]
    (ctx / ".gitignore").write_text("*.log\ncache/\n")
    assert content_hash(args(ctx)) == before


def test_a_named_pipe_or_socket_in_the_context_is_left_out_as_git_leaves_it(ctx, monkeypatch):
    """Hashing opened it: a named pipe blocked `pulumi up` for ever, a socket failed it with a traceback."""
    import socket

    before = content_hash(args(ctx))
    os.mkfifo(ctx / "pkg" / "pipe")
    monkeypatch.chdir(ctx)  # a short path: a socket's may not pass 107 bytes
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("dev.sock")
        assert context_files(ctx) == [".gitignore", "pkg/util.py", "score.py"]
        assert content_hash(args(ctx)) == before
        assert image_module.stage_context(args(ctx), before).is_dir()


def test_a_folder_that_cannot_be_listed_is_named_not_left_out(ctx, monkeypatch):
    """os.walk skips a folder it cannot list (one a container made as root, 0700): its files were in neither
    the tag nor the image, without a word, and a machine that could read it got another tag."""
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == ctx / "pkg":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ValueError, match=rf"{ctx / 'pkg'}: cannot be listed \(Permission denied\); make it readable, "
                                         r"or exclude it in \.amlignore or \.gitignore"):
        content_hash(args(ctx))
    (ctx / ".gitignore").write_text("*.log\ncache/\npkg/\n")  # an excluded one is never listed
    assert context_files(ctx) == [".gitignore", "score.py"]


def test_ignored_files_are_left_out_and_changing_one_keeps_the_tag(ctx):
    assert context_files(ctx) == [".gitignore", "pkg/util.py", "score.py"]
    before = content_hash(args(ctx))
    (ctx / "notes.log").write_text("changed\n")
    (ctx / "cache" / "big.bin").write_bytes(b"\1")
    (ctx / "cache" / "new.bin").write_bytes(b"\2")
    assert content_hash(args(ctx)) == before


@pytest.mark.parametrize("change", [
    lambda c: (c / "score.py").write_text("def init(): pass\n"),
    lambda c: (c / "pkg" / "new.py").write_text(""),
    lambda c: (c / "pkg" / "util.py").rename(c / "pkg" / "utils.py"),
    lambda c: (c / "pkg" / "util.py").unlink(),
    lambda c: os.chmod(c / "score.py", 0o755),
])
def test_any_context_change_gives_a_new_tag(ctx, change):
    before = content_hash(args(ctx))
    change(ctx)
    assert content_hash(args(ctx)) != before


def test_a_file_name_that_is_not_utf8_counts_by_its_bytes(ctx):
    """git and docker keep a file whose name is not UTF-8 (a Latin-1 `caf\\xe9.csv` from an old archive) under its
    bytes: the tag's hash stopped on it with a UnicodeEncodeError naming no file, so no preview or up ran."""
    name = os.fsdecode(b"caf\xe9.csv")
    before = content_hash(args(ctx))
    (ctx / name).write_text("a,b\n")
    tag = content_hash(args(ctx))
    assert tag != before
    (ctx / name).write_text("a,c\n")
    assert content_hash(args(ctx)) != tag
    (ctx / name).write_text("a,b\n")
    assert (image_module.stage_context(args(ctx), tag) / name).read_text() == "a,b\n"


@pytest.mark.parametrize("fields", [
    {"base_image": "python:3.12-slim"},
    {"docker_steps": "RUN apt-get update"},
    {"pip": ["scikit-learn==1.4.2"]},
    {"pip": ["scikit-learn==1.5.0"]},
    {"conda": {"dependencies": ["python=3.11", "numpy"]}},
    {"environment_variables": {"OMP_NUM_THREADS": "1"}},
    {"platform": "linux/arm64"},
    {"context_target": "/app"},
    {"base_image": None, "base_dockerfile": "FROM python:3.11-slim\nRUN true"},
])
def test_any_recipe_change_gives_a_new_tag(ctx, fields):
    assert content_hash(args(ctx, **fields)) != content_hash(args(ctx))


def test_the_tag_does_not_depend_on_where_the_context_is_or_file_listing_order(ctx, tmp_path, monkeypatch):
    before = content_hash(args(ctx))
    elsewhere = tmp_path / "somewhere" / "else"
    shutil.copytree(ctx, elsewhere)
    assert content_hash(args(elsewhere)) == before

    real_walk = os.walk

    def reversed_walk(top, **kwargs):
        for folder, dirs, files in real_walk(top, **kwargs):
            dirs.reverse()
            yield folder, dirs, list(reversed(files))

    monkeypatch.setattr(image_module.os, "walk", reversed_walk)
    assert content_hash(args(ctx)) == before


def test_conda_key_order_does_not_matter_but_its_content_does(ctx):
    a = {"name": "env", "channels": ["conda-forge"], "dependencies": ["python=3.11"]}
    b = {"dependencies": ["python=3.11"], "channels": ["conda-forge"], "name": "env"}
    assert content_hash(args(ctx, conda=a)) == content_hash(args(ctx, conda=b))
    assert content_hash(args(ctx, conda={**a, "dependencies": ["python=3.12"]})) != content_hash(args(ctx, conda=a))


def test_conda_file_is_hashed_by_content(ctx, tmp_path):
    env = tmp_path / "environment.yml"
    env.write_text("name: env\ndependencies: [python=3.11]\n")
    from_file = content_hash(args(ctx, conda=env))
    assert from_file == content_hash(args(ctx, conda={"dependencies": ["python=3.11"], "name": "env"}))
    env.write_text("name: env\ndependencies: [python=3.12]\n")
    assert content_hash(args(ctx, conda=env)) != from_file


def test_amlignore_beats_gitignore(ctx):
    (ctx / ".amlignore").write_text("pkg/\n")
    assert context_files(ctx) == [".amlignore", ".gitignore", "cache/big.bin", "notes.log", "score.py"]
    before = content_hash(args(ctx))
    (ctx / "pkg" / "util.py").write_text("X = 2\n")  # ignored by .amlignore
    assert content_hash(args(ctx)) == before
    (ctx / "notes.log").write_text("now counted\n")  # .gitignore no longer applies
    assert content_hash(args(ctx)) != before


def test_the_contexts_own_dockerignore_is_no_file_of_the_image_nor_of_its_tag(ctx):
    """The staged build replaces it with ours, so it never reaches the image: editing it changed the tag alone
    and rebuilt an identical image."""
    (ctx / ".dockerignore").write_text("*.json\n")
    before = content_hash(args(ctx))
    assert ".dockerignore" not in context_files(ctx)
    (ctx / ".dockerignore").write_text("*.json\npkg/\n")
    assert content_hash(args(ctx)) == before
    (ctx / "pkg" / ".dockerignore").write_text("x\n")  # below the root it is a file like any other
    assert "pkg/.dockerignore" in context_files(ctx) and content_hash(args(ctx)) != before


def test_a_gitignore_that_is_a_link_is_not_followed_as_git_does_not(ctx, tmp_path):
    """git (2.32 on) reads no in-tree .gitignore that is a symbolic link: following it left files out of the
    image that the repository, and so Azure ML's snapshot of a clone, holds."""
    rules = tmp_path / "shared-ignore"
    rules.write_text("*.log\ncache/\npkg/\n")
    (ctx / ".gitignore").unlink()
    (ctx / ".gitignore").symlink_to(rules)
    assert context_files(ctx) == [".gitignore", "cache/big.bin", "notes.log", "pkg/util.py", "score.py"]
    subprocess.run(["git", "init", "-q", str(ctx)], check=True)
    status = subprocess.run(["git", "-c", "core.excludesFile=/dev/null", "status", "--porcelain", "--ignored",
                             "--untracked-files=all"], cwd=ctx, capture_output=True, text=True, check=True).stdout
    assert "notes.log" in status and "!!" not in status  # git ignores nothing either


def test_negation_and_git_folder(ctx):
    (ctx / ".gitignore").write_text("*.log\n!keep.log\n")
    (ctx / "keep.log").write_text("kept\n")
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    files = context_files(ctx)
    assert "keep.log" in files and "notes.log" not in files
    assert not any(f.startswith(".git/") for f in files)


# Each rule set against git itself: the files `git ls-files --others --exclude-standard` lists.
GIT_TREE = ("data/keep.txt", "data/x.bin", "data/sub/keep.txt", "data/sub/y.txt", "top.txt", "#x",
            "a/b", "a/x/b", "a/x/y/b", "datax/y/keep.txt")


@pytest.mark.parametrize("rules", [
    "data/**\n!data/keep.txt\n",
    "data/**\n!data/**/\n!keep.txt\n",
    "*\n!*/\n!*.txt\n",
    "top.txt   \n",
    "top.txt\\ \n",
    "data/\n!data/keep.txt\n",
    "data\n!data/keep.txt\n",
    "data/*\n!data/sub/\n",
    "*.bin\ndata/**\n!data/sub/**\n",
    "sub/\n",
    "/data/sub\n",
    "**/sub/*.txt\n!**/keep.txt\n",
    "data/**/*.txt\n",
    "x.bin\n!data/x.bin\n",
    "a/**/b\n",
    "\\#x\n#x\n",
    "[xy].bin\n",
    "*.bi?\n",
    "data**/keep.txt\n",
    "[!a-s]*/\n[[:digit:]]*\n",
    "*\n!*/\n!/a/**\n/a/x/\n",
    "[]x]*\nx[\ntop.txt\\\n**\\/*.txt\n",  # `]` first in a set; `x[`, `top.txt\` match nothing; `**\/` needs a folder
    "lnk/\nsub\n",  # a link to a folder is no folder
])
def test_ignore_rules_match_git(tmp_path, rules):
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    root = tmp_path / "repo"
    for rel in GIT_TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "lnk").symlink_to("data", target_is_directory=True)
    (root / ".gitignore").write_text(rules)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},  # e.g. a hook's GIT_DIR
           "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=root, env=env,
                            check=True, capture_output=True, text=True).stdout
    assert context_files(root) == sorted(listed.split("\0")[:-1])


def test_a_given_dockerfile_is_hashed_by_its_text(ctx):
    (ctx / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY . /app\n")
    given = args(ctx, base_image=None, dockerfile="Dockerfile")
    before = content_hash(given)
    assert render_dockerfile(given) == "FROM python:3.11-slim\nCOPY . /app\n"
    (ctx / "Dockerfile").write_text("FROM python:3.12-slim\nCOPY . /app\n")
    assert content_hash(given) != before


def test_generated_dockerfile_holds_the_recipe(ctx):
    text = render_dockerfile(args(ctx, pip=["scikit-learn==1.4.2"], docker_steps="RUN echo hi", environment_variables={"A": "1"}))
    lines = text.splitlines()
    assert lines[1] == "FROM python:3.11-slim"
    assert 'ENV A="1"' in lines and 'RUN ["python", "-m", "pip", "install", "--no-cache-dir", "scikit-learn==1.4.2"]' in lines
    assert lines.index("RUN echo hi") < lines.index("COPY . /var/azureml-app")
    # On the scorer image itself: its entrypoint and command stay the image's; its non-root user could not
    # install (apt-get in extra steps, pip), so they run as root and the image ends as that user again.
    assert not [line for line in lines if line.startswith(("CMD", "ENTRYPOINT", "COPY --from"))]
    assert lines[2] == "USER root" and lines[-1] == "USER 10001"
    plain = render_dockerfile(args(ctx, environment_variables={"A": "1"})).splitlines()
    assert not [line for line in plain if line.startswith("USER")]  # nothing to install: the image's user throughout


def test_pip_entries_reach_pip_as_written_not_through_a_shell(ctx):
    """They were quoted for JSON inside a shell's command line, where $ and ` still expand."""
    entries = ["pkg-$HOME==1.0", "tool`id`", 'x; python_version < "3.12"']
    run = [line for line in render_dockerfile(args(ctx, pip=entries)).splitlines() if "pip" in line]
    assert len(run) == 1 and run[0].startswith("RUN [")
    assert json.loads(run[0][len("RUN "):]) == ["python", "-m", "pip", "install", "--no-cache-dir", *entries]


def test_a_conda_environment_gets_a_prefix_of_its_own_first_on_path(ctx):
    text = render_dockerfile(args(ctx, conda={"dependencies": ["python=3.11", "numpy"]}, pip=["x"], scorer_image=SCORER))
    lines = text.splitlines()
    assert "- numpy" in lines
    create = lines.index("RUN conda env create -p /azureml-envs/app -f /tmp/conda_env.yml && conda clean -afy && rm /tmp/conda_env.yml")
    # pip and the scorer install then reach that environment's Python.
    assert lines[create + 1] == "ENV PATH=/azureml-envs/app/bin:$PATH"
    assert create < lines.index('RUN ["python", "-m", "pip", "install", "--no-cache-dir", "x"]') < lines.index(INSTALL_SCORER)


def test_a_custom_base_gets_the_scorer_installed_and_runs_it(ctx):
    base = "# escape=`\nFROM nvcr.io/nvidia/pytorch:24.05-py3\nUSER builder"
    lines = render_dockerfile(args(ctx, base_image=None, base_dockerfile=base, docker_steps="RUN echo hi",
                                   scorer_image=SCORER)).splitlines()
    assert lines[:4] == ["# escape=`", "# syntax=docker/dockerfile:1", "FROM nvcr.io/nvidia/pytorch:24.05-py3", "USER builder"]
    assert lines[4] == "USER root"  # the base's own user may not install; the pod runs as its own user
    copy = lines.index(f"COPY --from={SCORER} /opt/scorer /opt/scorer")
    assert lines.index("RUN echo hi") < copy and lines[copy + 1] == INSTALL_SCORER
    # The scorer image's init, which reaps what run()'s subprocesses leave: the base's entrypoint is not run.
    assert lines[copy + 2] == f"COPY --from={SCORER} /usr/bin/tini-static /usr/bin/tini-static"
    assert lines[-6:] == ["COPY . /var/azureml-app", "WORKDIR /var/azureml-app", "ENV HOME=/tmp",
                          'ENTRYPOINT ["/usr/bin/tini-static", "--"]', 'CMD ["python", "-m", "scoring_image"]', "USER 10001"]


def test_the_scorer_install_step_refuses_a_python_older_than_311(tmp_path):
    """The step's shell line as the build runs it, with a `python` that reports 3.9 on PATH."""
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f"#!{sys.executable}\nimport sys\nsys.version_info = (3, 9, 18, 'final', 0)\n"
                    "sys.version = '3.9.18 (main)'\nexec(sys.argv[2])\n")
    shim.chmod(0o755)
    check = INSTALL_SCORER.removeprefix("RUN ").split(" && ")[0]
    old = subprocess.run(["sh", "-c", check], capture_output=True, text=True, env={"PATH": f"{shim.parent}:/usr/bin:/bin"})
    assert old.returncode == 1
    assert old.stderr.strip() == "the scorer runs on Python 3.11 or later; the python on this base is 3.9.18"
    ours = subprocess.run(["sh", "-c", check], capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert ours.returncode == 0, ours.stderr


@pytest.mark.parametrize("fields", [
    {"base_image": None},
    {"dockerfile": "Dockerfile"},
    {"base_image": None, "dockerfile": "Dockerfile", "pip": ["x"]},
    {"base_image": None, "dockerfile": "Dockerfile", "scorer_image": SCORER},
])
def test_args_need_exactly_one_dockerfile_source(ctx, fields):
    with pytest.raises(ValueError, match="HashedImageArgs"):
        args(ctx, **fields)


def test_from_environment_builds_on_the_scorer_image_unless_a_base_or_conda_is_named(ctx):
    def from_env(**env) -> HashedImageArgs:
        return HashedImageArgs.from_environment(EnvironmentSpec(**env), repository="iris", registry_login_server=LOGIN,
                                                context=ctx, scorer_image=SCORER)

    stock = from_env(pip=["lightgbm==4.3"], docker_steps="RUN true")
    assert (stock.base_image, stock.scorer_image, stock.pip, stock.docker_steps) == (SCORER, None, ("lightgbm==4.3",), "RUN true")
    own = from_env(base_image="python:3.12")
    assert (own.base_image, own.scorer_image) == ("python:3.12", SCORER)
    # A conda environment without an image is built on Azure ML's base, as Azure ML builds it.
    conda = from_env(conda_dependencies={"dependencies": ["python=3.11"]})
    assert (conda.base_image, conda.scorer_image) == ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04", SCORER)
    assert conda.conda["dependencies"] == ["python=3.11"]
    gpu = from_env(conda_dependencies={"dependencies": ["python=3.11"]}, gpu=True)
    assert gpu.base_image == "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
    assert from_env(base_dockerfile="FROM python:3.12\n").scorer_image == SCORER
    # A secret variable stays out of the image and its hash: the pod gets it from a Kubernetes Secret.
    secret = from_env(pip=["x"], environment_variables={"A": "1", "DB_PASSWORD": SecretStr("hunter2")})
    assert secret.environment_variables == {"A": "1"} and "hunter2" not in render_dockerfile(secret)
    assert content_hash(secret) == content_hash(from_env(pip=["x"], environment_variables={"A": "1"}))


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_an_images_locked_dependencies_install_before_its_sources_are_copied(image):
    """Docker reuses a layer only while every step above it is unchanged: with the sources copied first, each
    change to the code reinstalled every locked dependency (the scorer's apt-get too), minutes per build."""
    dockerfile = Path(__file__).resolve().parents[2] / DOCKERFILES[image]
    lock = f"{Path(DOCKERFILES[image]).parent.as_posix()}/requirements.txt"
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    for stage in re.split(r"^FROM ", text, flags=re.M)[1:]:
        steps = [line for line in stage.splitlines() if line.startswith(("COPY ", "RUN "))]
        install = next(i for i, step in enumerate(steps) if step.startswith("RUN ") and f"-r {lock}" in step)
        assert [step for step in steps[:install] if step.startswith("COPY ")] == [f"COPY {lock} {lock}"], steps


# ------------------------------------------------------------------ reuse or build, under mocks


def deploy(a: HashedImageArgs, existing: dict[str, str] | None = None):
    def program():
        img = HashedImage("scorer", a)
        return {"ref": img.image_ref, "name": img.image_name, "built": img.built, "tag": img.tag}

    return run(program, mocks=AzureMocks(registry_images=existing))


def test_a_missing_tag_is_built_from_exactly_the_hashed_files_and_pushed(ctx):
    a = args(ctx)
    tag = content_hash(a)
    rec = deploy(a)
    build = rec.one("docker:index/image:Image")
    assert build.parent_type == "aks-model-serving:index:HashedImage"
    assert build.inputs["imageName"] == f"{LOGIN}/scorer:{tag}"
    assert build.inputs["skipPush"] is False
    stage = Path(build.inputs["build"]["context"])
    assert build.inputs["build"]["dockerfile"] == str(stage / STAGED_DOCKERFILE)
    staged = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert staged == sorted(context_files(ctx) + [STAGED_DOCKERFILE, ".dockerignore"])
    assert (stage / STAGED_DOCKERFILE).read_text() == render_dockerfile(a)
    assert rec.outputs["built"] is True and rec.outputs["tag"] == tag
    assert rec.outputs["ref"] == build.outputs["repoDigest"]
    assert rec.outputs["ref"].startswith(f"{LOGIN}/scorer@sha256:")
    assert ("registry:lookup", {"name": f"{LOGIN}/scorer:{tag}", "token": False}) in rec.calls
    assert "registry" not in build.inputs  # no token given: this machine's docker login


def test_a_registry_token_is_used_for_the_lookup_and_the_push_and_stays_secret(ctx):
    """The `up` that creates the registry has no docker login for it: the Workspace's token is the way in."""
    a = args(ctx, registry_password=pulumi.Output.secret("acr-refresh-token"))
    rec = deploy(a)
    build = rec.one("docker:index/image:Image")
    assert build.inputs["registry"] == {"server": LOGIN, "username": "00000000-0000-0000-0000-000000000000",
                                        "password": "acr-refresh-token"}
    assert build.secret_inputs == ["registry"]
    assert ("registry:lookup", {"name": f"{LOGIN}/scorer:{content_hash(a)}", "token": True}) in rec.calls
    assert rec.secret_outputs == []  # the image reference is no secret for having been asked with one


def test_a_build_waits_for_what_its_image_depends_on(ctx):
    """An app image builds FROM the scorer image: its build must wait for the scorer's push."""
    def program():
        base = HashedImage("scorer", args(ctx))
        app = HashedImage("app", args(ctx, docker_steps="RUN true"), opts=pulumi.ResourceOptions(depends_on=[base]))
        return {"ref": app.image_ref}

    rec = run(program, mocks=AzureMocks())
    builds = {b.name: b for b in rec.of_type("docker:index/image:Image")}
    # depends_on a component means on its children: the scorer's build itself.
    assert builds["scorer-build"].urn in builds["app-build"].dependencies
    assert builds["scorer-build"].dependencies == []


def test_a_tag_already_in_the_registry_is_reused_without_building(ctx):
    a = args(ctx)
    digest = "sha256:" + "b" * 64
    rec = deploy(a, {f"{LOGIN}/scorer:{content_hash(a)}": digest})
    assert rec.of_type("docker:index/image:Image") == []
    assert rec.outputs == {"ref": f"{LOGIN}/scorer@{digest}", "name": f"{LOGIN}/scorer:{content_hash(a)}",
                           "built": False, "tag": content_hash(a)}


def test_the_registry_lookup_is_restored_after_a_run(ctx):
    deploy(args(ctx))
    assert image_module.registry_lookup is image_module.docker_registry_digest


# ------------------------------------------------------------------ the real lookup, against a stand-in docker CLI


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A `docker` on PATH that knows one image, as `docker buildx imagetools inspect` answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3" = "buildx imagetools inspect" ] || exit 2\n'
        f'if [ "$4" = "{LOGIN}/scorer:known" ]; then echo \'{{"mediaType":"x","digest":"sha256:{"c" * 64}","size":1}}\'; exit 0; fi\n'
        'echo "ERROR: $4: not found" >&2; exit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_docker_lookup_with_a_token_logs_in_with_it_in_a_config_of_its_own(tmp_path, monkeypatch):
    """Not this machine's docker login: a DOCKER_CONFIG holding the token for that registry alone."""
    import asyncio
    import base64

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen.json"
    (bin_dir / "docker").write_text(f'#!/bin/sh\ncat "$DOCKER_CONFIG/config.json" > {seen}\necho "not found" >&2; exit 1\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(image_module.docker_registry_digest(f"{LOGIN}/scorer:x", "tok")) is None
    finally:
        loop.close()
    auths = json.loads(seen.read_text())["auths"]
    assert list(auths) == [LOGIN]
    assert base64.b64decode(auths[LOGIN]["auth"]).decode() == "00000000-0000-0000-0000-000000000000:tok"


def test_the_token_exchange_posts_what_acr_expects_and_reads_the_refresh_token():
    """ACR's /oauth2/exchange, as `az acr login` calls it; a stand-in server on loopback."""
    import http.server
    import threading
    import urllib.parse

    posted: dict[str, list[str]] = {}

    class Exchange(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.update(urllib.parse.parse_qs(self.rfile.read(int(self.headers["content-length"])).decode()))
            ok = self.path == "/oauth2/exchange"
            body = json.dumps({"refresh_token": "acr-rt"} if ok else {}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Exchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert image_module.acr_refresh_token(LOGIN, "arm-token", "tenant-1", base_url=base) == "acr-rt"
        assert posted == {"grant_type": ["access_token"], "service": [LOGIN], "tenant": ["tenant-1"],
                          "access_token": ["arm-token"]}
        # A registry that gives none: the machine's docker login is used, not an error.
        assert image_module.acr_refresh_token(LOGIN, "arm-token", "tenant-1", base_url=base + "/nowhere") is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_docker_lookup_returns_the_digest_of_a_known_tag_and_none_for_a_missing_one(fake_docker):
    import asyncio

    loop = asyncio.new_event_loop()  # its own loop: asyncio.run would unset the thread's current one
    try:
        assert loop.run_until_complete(image_module.docker_registry_digest(f"{LOGIN}/scorer:known")) == "sha256:" + "c" * 64
        assert loop.run_until_complete(image_module.docker_registry_digest(f"{LOGIN}/scorer:missing")) is None
    finally:
        loop.close()


def test_include_limits_the_image_to_its_own_files(ctx):
    """The router's tag must not change when the tests (or another image's code) change."""
    (ctx / "pkg" / "__pycache__").mkdir()
    (ctx / "pkg" / "__pycache__" / "util.pyc").write_text("compiled")
    (ctx / ".gitignore").write_text("*.log\ncache/\n__pycache__/\n")
    a = args(ctx, include=("pkg",))
    assert context_files(ctx, a.include) == ["pkg/util.py"]
    before = content_hash(a)
    (ctx / "score.py").write_text("def init(): pass\ndef run(raw): return 1\n")
    assert content_hash(a) == before
    (ctx / "pkg" / "util.py").write_text("X = 2\n")
    assert content_hash(a) != before


def test_an_output_where_the_dockerfile_needs_a_string_is_refused(ctx):
    """Written into the Dockerfile it became 'COPY --from=Calling __str__ on an Output[T]...', hashed and built."""
    with pytest.raises(TypeError, match=r"HashedImageArgs.scorer_image: a plain string, known before anything is created"):
        args(ctx, scorer_image=pulumi.Output.from_input(SCORER))
