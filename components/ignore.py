"""Git's ignore rules, as git applies them: which files of an image's build context count.

A port of git's own matching (dir.c, wildmatch.c), as no library agrees with git in every case:
pathspec says `data/**` matches the folder `data` itself and so prunes `!data/keep.txt`, dulwich
errs elsewhere. tests/components/test_image.py holds git itself as the oracle.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

IGNORE_FILES = (".amlignore", ".gitignore")
# In the folder of a local stack's state (components.local), naming its stack file: that folder holds the
# stack's keys and token signing key, so it is never part of an image's context, whatever the ignore
# files say (an .amlignore replaces .gitignore, which ignores .local/) and wherever state_dir points.
STATE_MARKER = ".aks-model-serving-state"
# Names never part of a context, folder or file, whatever the ignore files say: git's own, which in a worktree
# or a submodule is a file naming the repository by absolute path (so it made the tag differ by checkout), and
# Python's bytecode caches, stamped with their sources' mtimes (so a clone and a machine that imported the entry
# script differed) and read by no image: staged sources get new mtimes, which the stamps no longer match.
NEVER_IN_CONTEXT = frozenset({".git", "__pycache__"})
# The context's own .dockerignore: the staged build writes ours in its place (components.image), so it never
# reaches the image, and counting it changed the tag alone.
NEVER_AT_ROOT = frozenset({".dockerignore"})


# wildmatch's [:name:] classes, ASCII only as in git.
_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \t", "cntrl": "\x00-\x1f\x7f", "digit": "0-9",
            "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": " \t\n\r",
            "upper": "A-Z", "xdigit": "0-9A-Fa-f"}


def _bracket(pattern: str, i: int) -> tuple[str, int] | None:
    """The regex for the `[...]` at pattern[i] and the index after it; None when malformed (git then
    matches nothing). As in wildmatch: `!` or `^` negates, a leading `]` is a member, never `/`."""
    i += 1
    negated = pattern[i:i + 1] in ("!", "^")
    i += negated
    members: list[str] = []
    prev: str | None = None  # a range's low end, when the last member can be one
    start = i
    while True:
        if i >= len(pattern):
            return None
        c = pattern[i]
        if c == "]" and i > start:
            break
        if c == "\\":
            i += 1
            if i >= len(pattern):
                return None
            prev = pattern[i]
            members.append(re.escape(prev))
        elif c == "-" and prev is not None and pattern[i + 1:i + 2] not in ("", "]"):
            i += 1
            high = pattern[i]
            if high == "\\":
                i += 1
                if i >= len(pattern):
                    return None
                high = pattern[i]
            members[-1:] = [f"{re.escape(prev)}-{re.escape(high)}"] if prev <= high else [re.escape(prev)]
            prev = None
        elif c == "[" and pattern[i + 1:i + 2] == ":":
            end = pattern.find("]", i + 2)
            if end < 0:
                return None
            if end - i < 3 or pattern[end - 1] != ":":  # no `:]`: a plain `[`
                prev = "["
                members.append(re.escape(prev))
            else:
                if (cls := _CLASSES.get(pattern[i + 2:end - 1])) is None:
                    return None
                members.append(cls)
                prev, i = None, end
        else:
            prev = c
            members.append(re.escape(c))
        i += 1
    body = "".join(members)
    return ("[^/" + body + "]" if negated else "(?!/)[" + body + "]" if body else "(?!)"), i + 1


def _glob(pattern: str) -> re.Pattern[str] | None:
    """wildmatch with WM_PATHNAME as a regex; None when it can match nothing.

    `**` spans folders only as a whole segment: `**/` at the start or after `/` is zero or more folders,
    a trailing `/**` everything inside. git compares the literal head (up to the first `*?[\\`) before
    calling wildmatch, so a `**` right after it counts as at the start too (`foo**/bar` spans folders).
    """
    head = next((i for i, c in enumerate(pattern) if c in "*?[\\"), len(pattern))
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            end = len(pattern) - len(pattern[i:].lstrip("*"))
            rest = pattern[end:]
            whole_segment = (i == head or pattern[i - 1] == "/") and (rest[:1] in ("", "/") or rest[:2] == "\\/")
            if end - i > 1 and whole_segment:
                zero_folders = rest[:1] == "/"  # not for an escaped `\/`, as in wildmatch
                out.append("(?:.*/)?" if zero_folders else ".*")
                end += zero_folders
            else:
                out.append("[^/]*")
            i = end
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            if (found := _bracket(pattern, i)) is None:
                return None
            out.append(found[0])
            i = found[1]
            continue
        else:
            if c == "\\":
                i += 1
                if i == len(pattern):  # a trailing backslash: git matches nothing
                    return None
            out.append(re.escape(pattern[i]))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class IgnoreRule:
    """One line of an ignore file: its glob and how git applies it."""

    glob: re.Pattern[str]
    negated: bool  # `!`: re-includes what an earlier line excluded
    dir_only: bool  # a trailing `/`: folders only (a link to a folder is no folder)
    anchored: bool  # a `/` in it: the path from the context root; else the name at any depth

    @classmethod
    def parse(cls, line: str) -> IgnoreRule | None:
        """As git's add_patterns_from_buffer: None for a blank or `#` line or one that can match nothing."""
        line = line.removesuffix("\r")
        if not line or line.startswith("#"):
            return None
        # Unescaped trailing spaces go (a lone trailing backslash keeps them, as in git).
        if trimmed := re.fullmatch(r"((?:\\.|[^\\])*?) *", line, re.DOTALL):
            line = trimmed.group(1)
        negated = line.startswith("!")
        line = line[negated:]
        dir_only = line.endswith("/")
        line = line[:-1] if dir_only else line
        anchored = "/" in line
        line = line.removeprefix("/")
        glob = _glob(line) if line else None
        return cls(glob, negated, dir_only, anchored) if glob is not None else None

    def matches(self, path: str, is_dir: bool) -> bool:
        name = path if self.anchored else path.rpartition("/")[2]
        return (is_dir or not self.dir_only) and self.glob.fullmatch(name) is not None


def ignore_rules(context: Path) -> list[IgnoreRule]:
    """The context's `.amlignore` rules, else its `.gitignore` rules (as Azure ML snapshots do); the root's
    file only."""
    for name in IGNORE_FILES:
        path = context / name
        # git (2.32 on) does not follow an in-tree .gitignore that is a link; Azure ML opens .amlignore as a file.
        if path.is_file() and not (name == ".gitignore" and path.is_symlink()):
            text = path.read_text(encoding="utf-8", errors="surrogateescape").removeprefix("\ufeff")
            return [rule for line in text.split("\n") if (rule := IgnoreRule.parse(line)) is not None]
    return []


def is_ignored(rules: Sequence[IgnoreRule], path: str, is_dir: bool) -> bool:
    """Whether `path` (relative, POSIX) is excluded: the last rule that matches it decides, as in git."""
    return next((not rule.negated for rule in reversed(rules) if rule.matches(path, is_dir)), False)


def context_files(context: str | Path, include: Sequence[str] = ()) -> list[str]:
    """Relative POSIX paths of the context's files the image holds, sorted; ignored ones left out.

    What NEVER_IN_CONTEXT names is never part of a context, nor a local stack's state folder (its keys).
    Symlinks count as links (their target), not followed.
    With `include`, only those top-level files and folders count. As git, the walk never enters an
    excluded folder: nothing below it can be re-included.
    """
    root = Path(context)
    rules = ignore_rules(root)
    found: list[str] = []
    for folder, dirs, files in os.walk(root, onerror=_unlisted):
        if STATE_MARKER in files:
            dirs[:] = []
            continue
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        wanted = [d for d in dirs if d not in NEVER_IN_CONTEXT and (prefix or not include or d in include)]
        # A link to a folder is one entry, as git keeps it: os.walk lists it with the folders, not below.
        links = [d for d in wanted if os.path.islink(os.path.join(folder, d))]
        dirs[:] = sorted(d for d in wanted if d not in links and not is_ignored(rules, prefix + d, is_dir=True))
        found += [prefix + f for f in files if f not in NEVER_IN_CONTEXT
                  and (prefix or (f not in NEVER_AT_ROOT and (not include or f in include)))
                  and _file_or_link(os.path.join(folder, f))]
        found += [prefix + d for d in links]
    return sorted(f for f in found if not is_ignored(rules, f, is_dir=False))


def _unlisted(exc: OSError) -> NoReturn:
    """os.walk skips a folder it cannot list: its files were then in neither the tag nor the image, unsaid."""
    raise ValueError(f"{exc.filename}: cannot be listed ({exc.strerror}); make it readable, or exclude it in "
                     f".amlignore or .gitignore: an image is built from its folder") from exc


def _file_or_link(path: str) -> bool:
    """Whether git would keep it: a named pipe, socket or device is no file of a repository, and hashing
    one blocked (a pipe with no writer) or failed."""
    mode = os.lstat(path).st_mode
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)
