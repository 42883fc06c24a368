"""Running as a systemd service: the hardened unit files ``ragproxy service install`` writes, and
the readiness notification (``Type=notify``)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from proxy.errors import ConfigError
from proxy.settings import Settings, env_name, setting_fields

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_CONFIG = Path("/etc/ragproxy/config.toml")
SYSTEM_ENV = Path("/etc/ragproxy/ragproxy.env")
SYSTEM_DB = "/var/lib/ragproxy/index.db"
PROXY_VARIABLES = "http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY"

SYSTEM_UNIT = """\
# ragproxy as a system service, sandboxed: `systemd-analyze security --offline=yes` rates this
# unit 1.1 (OK; 2.0 or less is the goal). Written by `ragproxy service install`: change the
# settings in /etc/ragproxy/config.toml and the secrets in /etc/ragproxy/ragproxy.env, not here;
# `ragproxy serve --help` describes them all.
[Unit]
Description=ragproxy: retrieval proxy in front of Ollama (OpenAI and Ollama APIs)
After=network-online.target ollama.service
Wants=network-online.target

[Service]
Type=notify
ExecStart={exec_start} serve --config {config}
EnvironmentFile=-{env_file}
Environment=RAGPROXY_DB={db}
UnsetEnvironment={proxy_variables}
# A user of its own, created when the service starts; the index lives in /var/lib/ragproxy.
DynamicUser=yes
StateDirectory=ragproxy
StateDirectoryMode=0700
# The embedder's graph and the gate's everyday vectors, made on the first start, in
# /var/cache/ragproxy ($CACHE_DIRECTORY).
CacheDirectory=ragproxy
CacheDirectoryMode=0700
UMask=0077
# The documents are readable, nothing else of /home is visible, and nothing at all is writable
# outside the state and cache directories.
ProtectSystem=strict
ProtectHome=tmpfs
{bind_docs}PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
PrivateIPC=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
DevicePolicy=closed
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @debug @cpu-emulation @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
# Only this machine: clients, and Ollama at 127.0.0.1. Widen both (and set --api-key) to serve
# a network.
IPAddressAllow=localhost
IPAddressDeny=any
MemoryMax={memory_max}
TasksMax=256
# SIGTERM: streams in flight get up to 30 s to finish, then the index is closed cleanly.
KillSignal=SIGTERM
TimeoutStopSec=40
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

USER_UNIT = """\
# ragproxy as a user service (no root needed). systemd applies fewer sandboxing options to user
# services: those that need privileges (capabilities, devices, IP filters, a dynamic user) are
# not available, so this unit is weaker than the system one. Written by
# `ragproxy service install --user`; edit ~/.config/ragproxy/config.toml, and the secrets in
# ~/.config/ragproxy/ragproxy.env, not this.
[Unit]
Description=ragproxy: retrieval proxy in front of Ollama (OpenAI and Ollama APIs)
After=network-online.target

[Service]
Type=notify
ExecStart={exec_start} serve --config {config}
EnvironmentFile=-{env_file}
UnsetEnvironment={proxy_variables}
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
MemoryMax={memory_max}
KillSignal=SIGTERM
TimeoutStopSec=40
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""


def executable() -> str:
    """The installed ``ragproxy`` command next to this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("ragproxy")
    if beside.exists():
        return str(beside)
    found = shutil.which("ragproxy")
    if found:
        return found
    raise ConfigError("cannot find the installed 'ragproxy' command; install the package first")


def installed_values(settings: Settings, *, user: bool) -> dict[str, Any]:
    """The settings that differ from the defaults, as the service reads them: API keys hashed,
    folders absolute (the service does not start where this command ran)."""
    from proxy.api.security import stored_form

    defaults = Settings()
    values: dict[str, Any] = {}
    for f in setting_fields():
        value = getattr(settings, f.name)
        if value == getattr(defaults, f.name) or f.name == "db" and not user:
            continue
        if f.name == "api_keys":
            value = [stored_form(entry) for entry in value]
        elif f.name == "docs":
            value = [  # absolute: the service does not start where this command ran
                f"{name}={folder.resolve()}" if name else str(folder.resolve())
                for name, folder in settings.doc_folders()
            ]
        elif isinstance(value, tuple):
            value = list(value)
        values[f.name] = value
    return values


def config_toml(settings: Settings, *, user: bool) -> str:
    """The settings the unit reads from its config file: all but the secrets."""
    secret = {f.name for f in setting_fields() if f.metadata["secret"]}
    values = {k: v for k, v in installed_values(settings, user=user).items() if k not in secret}
    header = (
        "# ragproxy settings (keys as the flag names); see `ragproxy serve --help`.\n"
        "# Secrets are in ragproxy.env beside this file.\n"
    )
    return header + tomli_w.dumps(values)


def environment_file(settings: Settings, *, user: bool) -> str:
    """The secret settings as ``RAGPROXY_<NAME>="value"`` lines for systemd's ``EnvironmentFile=``.
    Inside double quotes systemd, like a POSIX shell, takes \\ " $ ` after a backslash literally
    and everything else (newlines included) as it stands."""
    values = installed_values(settings, user=user)
    lines = ["# ragproxy's secret settings, read by its systemd unit; readable only by the owner."]
    for f in setting_fields():
        if not f.metadata["secret"] or f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, list):  # the environment holds a list comma-separated
            if any("," in item for item in value):
                raise ConfigError(f"{f.name}: an entry with a comma cannot be stored in the environment")
            value = ",".join(value)
        quoted = "".join("\\" + c if c in '\\"$`' else c for c in value)
        lines.append(f'{env_name(f.name)}="{quoted}"')
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str, mode: int) -> None:
    """Replaces ``path`` at once by a file with ``mode``. It is written under a temporary name
    created readable by its owner only, so a secret is never in a file others could open."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def render_unit(settings: Settings, *, user: bool, exec_start: str, config: Path, env_file: Path) -> str:
    folders = [str(Path(folder).expanduser().resolve()) for _, folder in settings.doc_folders()]
    common = {
        "exec_start": exec_start,
        "config": config,
        "env_file": env_file,
        "proxy_variables": PROXY_VARIABLES,
        "memory_max": "4G",
    }
    if user:
        return USER_UNIT.format(**common)
    bind = "".join(f"BindReadOnlyPaths={folder}\n" for folder in folders)
    return SYSTEM_UNIT.format(**common, bind_docs=bind, db=SYSTEM_DB)


def install(settings: Settings, *, user: bool, dest: Path | None, dry_run: bool) -> str:
    """Writes the unit and its config file; returns what to run next."""
    home = Path.home()
    if user:
        unit_dir = dest or home / ".config" / "systemd" / "user"
        config = home / ".config" / "ragproxy" / "config.toml"
        env_file = home / ".config" / "ragproxy" / "ragproxy.env"
    else:
        unit_dir = dest or SYSTEM_UNIT_DIR
        config, env_file = SYSTEM_CONFIG, SYSTEM_ENV
    if dest is not None:
        config, env_file = dest / "config.toml", dest / "ragproxy.env"
    if user and dest is None:  # the unit names them the systemd way, valid for whoever runs it
        unit = render_unit(
            settings,
            user=True,
            exec_start=executable(),
            config=Path("%h/.config/ragproxy/config.toml"),
            env_file=Path("%h/.config/ragproxy/ragproxy.env"),
        )
    else:
        unit = render_unit(settings, user=user, exec_start=executable(), config=config, env_file=env_file)
    if dry_run:
        return unit
    unit_dir.mkdir(parents=True, exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    # The system service's dynamic user reads the config file itself; systemd reads the
    # environment file, as root, before it starts the service.
    write_file(config, config_toml(settings, user=user), 0o600 if user else 0o644)
    write_file(env_file, environment_file(settings, user=user), 0o600)
    write_file(unit_dir / "ragproxy.service", unit, 0o644)
    systemctl = "systemctl --user" if user else "sudo systemctl"
    return "\n".join(
        [
            f"wrote {unit_dir / 'ragproxy.service'}, {config} and {env_file} (secrets, owner only)",
            "next:",
            f"  {systemctl} daemon-reload",
            f"  {systemctl} enable --now ragproxy",
            f"  {systemctl} status ragproxy",
            f"  journalctl {'--user ' if user else ''}-u ragproxy -f",
        ]
    )


def notify(state: str) -> None:
    """sd_notify: tells systemd the service is ready (``READY=1``) or stopping."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            pass
