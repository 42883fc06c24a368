"""Where ragproxy keeps what is expensive to make again: the cache directory, and files written
into it whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_directory() -> Path:
    """systemd's CacheDirectory= when set, else $XDG_CACHE_HOME/ragproxy (~/.cache/ragproxy)."""
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy"


def write_cache(path: Path, data: bytes) -> None:
    """Written whole or not at all; a cache that cannot be written is not an error (what it
    holds is made again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".ragproxy-", delete=False) as handle:
            written = Path(handle.name)
            handle.write(data)
        os.replace(written, path)
    except OSError:
        if "written" in locals():
            written.unlink(missing_ok=True)
