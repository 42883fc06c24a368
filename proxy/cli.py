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
        elif isinstance(default, tuple):
            parser.add_argument(
                flag, dest=f.name, action="append", default=None, metavar="[NAME=]DIR", help=help_text
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


def _command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragproxy",
        description="A local retrieval proxy in front of Ollama, speaking the OpenAI API.",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragproxy {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = _command(commands, "serve", "Run the proxy server (indexing and watching --docs folders).")
    index = _command(commands, "index", "Index folders once (new, changed and deleted files), then embed.")
    index.add_argument("dirs", nargs="+", metavar="DIR", help="Folders to index.")
    index.add_argument("--collection", help="Collection name (default: each folder's name).")
    search = _command(commands, "search", "Search the index.")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="How many chunks (default 5).")
    search.add_argument("--json", action="store_true", help="JSON output.")
    search.add_argument("--collection", action="append", help="Only this collection (repeatable).")
    search.add_argument("--mode", choices=("hybrid", "keyword", "vector"), default="hybrid")
    status = _command(commands, "status", "Show what the index holds and what is pending or skipped.")
    status.add_argument("--json", action="store_true", help="JSON output.")
    for sub in (serve, index, search, status):
        _add_setting_flags(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in setting_fields()}
    return load_settings(cli=given, config_file=args.config)


def serve(settings: Settings) -> None:
    import uvicorn

    from proxy.app import create_asgi
    from proxy.logging import configure_logging, get_logger

    for name, folder in settings.doc_folders():
        if not folder.is_dir():
            raise ConfigError(f"--docs {name}={folder}: not a directory")
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
        if args.command == "serve":
            serve(settings)
            return 0
        from proxy import commands

        run: dict[str, Any] = {"index": commands.index, "search": commands.search, "status": commands.status}
        return int(run[args.command](settings, args))
    except ConfigError as exc:
        print(f"ragproxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "ragproxy: interrupted; the index is consistent, pending work resumes next time", file=sys.stderr
        )
        return 130
