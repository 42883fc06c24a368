"""What `ragproxy service install` leaves on disk: the unit, a config file anyone may read, and
the secrets in an environment file only its owner can read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.api.security import hash_key

ROOT = Path(__file__).parent.parent
UPSTREAM_KEY = 'upstream-2718 "q" $HOME `id` \\ end'
API_KEY = "client-key-3141"
MODEL = 'two\nlines, "quoted"'

# Reads the settings as the service does: the environment file's variables, then the config file.
# A POSIX shell takes `"...\\$..."` the way systemd's EnvironmentFile= does.
LOAD_AS_THE_SERVICE = """
set -a
. "$1/ragproxy.env"
exec "$2" -c '
import json, sys
from proxy.settings import load_settings
s = load_settings(config_file=sys.argv[1] + "/config.toml")
print(json.dumps([s.upstream_api_key, list(s.api_keys), s.model, list(s.docs)]))
' "$1"
"""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGPROXY_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("user", [False, True])
def test_secrets_go_to_an_owner_only_file_and_everything_reads_back(tmp_path: Path, user: bool) -> None:
    dest, docs = tmp_path / "etc", tmp_path / "docs"
    dest.mkdir()
    docs.mkdir()
    (dest / "ragproxy.env").write_text("OLD=1\n")
    (dest / "ragproxy.env").chmod(0o644)  # a file left readable by an older install
    install = [sys.executable, "-m", "proxy", "service", "install", "--dest", str(dest)]
    install += ["--upstream-api-key", UPSTREAM_KEY, "--api-key", f"{API_KEY}@notes", "--model", MODEL]
    install += ["--docs", f"notes={docs}", *(["--user"] if user else [])]
    # umask 0: the modes must not depend on the caller's umask
    result = subprocess.run(
        ["sh", "-c", 'umask 000; exec "$@"', "sh", *install], capture_output=True, text=True, env=clean_env()
    )
    assert result.returncode == 0, result.stderr

    env_file, config, unit = dest / "ragproxy.env", dest / "config.toml", dest / "ragproxy.service"
    assert mode(env_file) == 0o600
    assert mode(config) == (0o600 if user else 0o644)  # the system service's own user reads it
    assert mode(unit) == 0o644
    assert sorted(p.name for p in dest.iterdir()) == ["config.toml", "ragproxy.env", "ragproxy.service"]
    public = config.read_text() + unit.read_text()
    for secret in ("upstream_api_key", "api_keys", "upstream-2718", API_KEY, hash_key(API_KEY)):
        assert secret not in public, secret
    assert API_KEY not in env_file.read_text()  # stored hashed
    assert f"EnvironmentFile=-{env_file}" in unit.read_text()

    loaded = subprocess.run(
        ["sh", "-c", LOAD_AS_THE_SERVICE, "sh", str(dest), sys.executable],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == [
        UPSTREAM_KEY,
        [f"{hash_key(API_KEY)}@notes"],
        MODEL,
        [f"notes={docs.resolve()}"],
    ]
