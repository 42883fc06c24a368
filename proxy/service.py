"""Running as a systemd service: the hardened unit files ``ragproxy service install`` writes, and
the readiness notification (``Type=notify``)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from proxy.errors import ConfigError
from proxy.settings import Settings

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_CONFIG = Path("/etc/ragproxy/config.toml")
SYSTEM_ENV = Path("/etc/ragproxy/ragproxy.env")
SYSTEM_DB = "/var/lib/ragproxy/index.db"
PROXY_VARIABLES = "http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY"

SYSTEM_UNIT = """\
# ragproxy as a system service, sandboxed: `systemd-analyze security --offline=yes` rates this
# unit 1.1 (OK; 2.0 or less is the goal). Written by `ragproxy service install`: change the
# settings in /etc/ragproxy/config.toml, not here; `ragproxy serve --help` describes them all.
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
UMask=0077
# The documents are readable, nothing else of /home is visible, and nothing at all is writable
# outside the state directory.
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
# `ragproxy service install --user`; edit ~/.config/ragproxy/config.toml, not this.
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


def config_toml(settings: Settings, *, user: bool) -> str:
    """The settings that differ from the defaults, as the TOML the unit reads (API keys are
    stored hashed)."""
    import dataclasses

    from proxy.api.security import stored_form

    defaults = Settings()
    lines = ["# ragproxy settings (keys as the flag names); see `ragproxy serve --help`."]
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value == getattr(defaults, f.name) or f.name == "db" and not user:
            continue
        if f.name == "api_keys":
            value = tuple(stored_form(entry) for entry in value)
        elif f.name == "docs":  # absolute: the service does not start where this command ran
            value = tuple(
                f"{name}={folder.resolve()}" if name else str(folder.resolve())
                for name, folder in settings.doc_folders()
            )
        lines.append(f"{f.name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


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
    (unit_dir / "ragproxy.service").write_text(unit, encoding="utf-8")
    config.write_text(config_toml(settings, user=user), encoding="utf-8")
    os.chmod(config, 0o600 if user else 0o644)
    systemctl = "systemctl --user" if user else "sudo systemctl"
    return "\n".join(
        [
            f"wrote {unit_dir / 'ragproxy.service'} and {config}",
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
