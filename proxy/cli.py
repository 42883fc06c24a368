"""``ragproxy`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from proxy.errors import ConfigError
from proxy.settings import ENV_PREFIX, Settings, load_settings, setting_fields


def _version() -> str:
    try:
        return version("ragproxy")
    except PackageNotFoundError:
        return "unknown"


def _settings_table() -> str:
    lines = ["settings (flag / environment variable / default):"]
    for f in setting_fields():
        flag = "--" + f.name.replace("_", "-")
        lines.append(f"  {flag:<22} {ENV_PREFIX + f.name.upper():<30} {f.default!r}")
    lines.append("precedence: flag > environment > config file (--config, RAGPROXY_CONFIG) > default")
    return "\n".join(lines)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (keys as the flag names).")
    for f in setting_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [env {env}; default {default!r}]"
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                type=type(default),
                default=None,
                choices=f.metadata.get("choices"),
                metavar=None if f.metadata.get("choices") else f.name.split("_")[-1].upper(),
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragproxy",
        description="A local retrieval proxy in front of Ollama, speaking the OpenAI API.",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragproxy {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="Run the proxy server.",
        description="Run the proxy server.",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_setting_flags(serve)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in setting_fields()}
    return load_settings(cli=given, config_file=args.config)


def serve(settings: Settings) -> None:
    import uvicorn

    from proxy.app import create_asgi
    from proxy.logging import configure_logging, get_logger

    configure_logging(settings.log_level)
    get_logger("ragproxy").info(
        "starting",
        host=settings.host,
        port=settings.port,
        upstream=settings.upstream,
        upstream_api=settings.upstream_api,
        model=settings.model,
    )
    config = uvicorn.Config(
        create_asgi(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"ragproxy: error: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0
