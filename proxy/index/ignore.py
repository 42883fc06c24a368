"""What a collection leaves out: hidden files and folders, dependency and cache folders, editors'
backup, swap, lock and temporary files, and what its ``.gitignore`` files exclude."""

from __future__ import annotations

import re
from fnmatch import translate
from pathlib import Path
from typing import Any

import pathspec

from proxy.index.files import read_regular

IGNORED_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".tox", ".mypy_cache"}
)
# Editor backups, swap and lock files, and the temporary files of atomic saves.
IGNORED_FILES = (
    "*~",
    "*.swp",
    "*.swo",
    "*.swx",
    ".#*",
    "#*#",
    "*.tmp",
    "*.part",
    "*.crdownload",
    "4913",
    ".DS_Store",
    "*___jb_tmp___",
    "*___jb_old___",
    ".~lock.*#",
    "~$*",  # the owner file Word, Excel and PowerPoint keep beside a document they have open
)
_IGNORED_FILE = re.compile("|".join(translate(pattern) for pattern in IGNORED_FILES))


GITIGNORE_BYTES = 1024 * 1024


class IgnoreRules:
    """The rules for one folder. Its ``.gitignore`` files are read on first use and again when
    they change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._gitignores: dict[str, tuple[float, Any]] = {}

    def ignores(self, rel: str, is_dir: bool = False, specs: dict[str, Any] | None = None) -> bool:
        """Hidden files and folders (``.git``, ``.env``, editors' temporary files), dependency and
        cache folders, editor backups, and what ``.gitignore`` files exclude. ``specs``: the
        ``.gitignore`` files already looked up by this walk, by folder (a walk looks each up once,
        not once for every file under it)."""
        parts = rel.split("/")
        if any(part.startswith(".") or part in IGNORED_DIRS for part in parts[:-1]):
            return True
        if parts[-1].startswith(".") or (is_dir and parts[-1] in IGNORED_DIRS):
            return True
        if not is_dir and _IGNORED_FILE.match(parts[-1]):
            return True
        return self.gitignored(parts, is_dir, specs)

    def gitignored(self, parts: list[str], is_dir: bool, specs: dict[str, Any] | None = None) -> bool:
        """As git decides: the ``.gitignore`` of the root and of each folder on the way, patterns
        relative to their folder; the deepest matching pattern wins (``!`` re-includes)."""
        decision = None
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            if specs is None:
                spec = self._gitignore_in(folder)
            elif folder in specs:
                spec = specs[folder]
            else:
                spec = specs[folder] = self._gitignore_in(folder)
            if spec is not None:
                result = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else ""))
                if result.include is not None:
                    decision = result.include
        return decision is True

    def _gitignore_in(self, folder: str) -> Any:
        """The folder's ``.gitignore`` as a pathspec, re-read when the file changes."""
        path = self.root / folder / ".gitignore"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            self._gitignores.pop(folder, None)
            return None
        cached = self._gitignores.get(folder)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            lines = read_regular(path, GITIGNORE_BYTES).decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        self._gitignores[folder] = (mtime, spec)
        return spec
