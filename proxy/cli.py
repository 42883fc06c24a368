"""``ragproxy`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy import version
from proxy.errors import ConfigError
from proxy.index.store.sqlite import Error as DatabaseError
from proxy.index.store.sqlite import database_message
from proxy.settings import ENV_PREFIX, Settings, load_settings, sample_config, setting_fields


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
        elif isinstance(default, tuple) or f.metadata.get("repeatable"):
            flags = [flag, f.metadata["alias"]] if f.metadata.get("alias") else [flag]
            parser.add_argument(
                *flags,
                dest=f.name,
                action="append",
                default=None,
                metavar=f.metadata["metavar"],
                help=help_text,
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
    parser.add_argument("--version", action="version", version=f"ragproxy {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = _command(commands, "serve", "Run the proxy server (indexing and watching --docs folders).")
    index = _command(commands, "index", "Index folders once (new, changed and deleted files), then embed.")
    index.add_argument("dirs", nargs="+", metavar="DIR", help="Folders to index.")
    index.add_argument(
        "--collection",
        help="Collection name for the one folder given (default: the name the index knows the folder "
        "by, else the folder's name, with its parents' names in front if another folder holds it).",
    )
    index.add_argument(
        "--move",
        action="store_true",
        help="Let --collection move to this folder (its files are matched again under the new root).",
    )
    index.add_argument(
        "--verify",
        action="store_true",
        help="Also read every indexed file and re-index those whose content differs from the index's "
        "(an edit that kept the size and modification time); unchanged files are not re-embedded.",
    )
    index.add_argument(
        "--json",
        action="store_true",
        help="No progress; one JSON summary line per folder on standard output (collection, indexed, "
        "unchanged, skipped, removed, embedded).",
    )
    search = _command(commands, "search", "Search the index.")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="How many chunks (default 5).")
    search.add_argument("--json", action="store_true", help="JSON output.")
    search.add_argument("--collection", action="append", help="Only this collection (repeatable).")
    search.add_argument("--mode", choices=("hybrid", "keyword", "vector"), default="hybrid")
    status = _command(commands, "status", "Show what the index holds and what is pending or skipped.")
    status.add_argument("--json", action="store_true", help="JSON output.")
    mcp = _command(
        commands,
        "mcp",
        "Serve the index to MCP clients (editors, agents) over stdio: tools search, fetch and "
        "list_collections. No API key: whoever can start it can read the index file.",
    )
    service = _command(
        commands, "service", "Install ragproxy as a systemd service from the current settings."
    )
    service.add_argument("action", choices=("install",))
    service.add_argument(
        "--user", action="store_true", help="A user service (no root needed; weaker sandbox)."
    )
    service.add_argument("--dest", type=Path, help="Write the unit and config into this folder instead.")
    service.add_argument(
        "--print", action="store_true", dest="dry_run", help="Print the unit; write nothing."
    )
    doctor = _command(
        commands,
        "doctor",
        "Check the set-up (upstream, model, embedder, index, folders, port, keys): one line per "
        "check, OK, WARN or FAIL, with what to do; exit status 1 if any check fails.",
    )
    doctor.add_argument(
        "--json", action="store_true", help="JSON output: a list of {check, status, detail, fix}."
    )
    commands.add_parser(
        "sample-config", help="Print a config file holding every setting at its default, each described."
    )
    hash_key = commands.add_parser(
        "hash-key", help="Print the hash of an API key, to store in the config file instead of the key."
    )
    hash_key.add_argument("key", nargs="?", help="The key (default: read from standard input).")
    for sub in (serve, index, search, status, mcp, service, doctor):
        _add_setting_flags(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in setting_fields()}
    return load_settings(cli=given, config_file=args.config)


def serve(settings: Settings) -> None:
    import uvicorn

    from proxy.api.security import check_bind
    from proxy.api.server import one_line_startup_errors, uvicorn_config
    from proxy.app import create_asgi
    from proxy.logging import configure_logging, get_logger

    check_bind(settings)
    for _, folder in settings.doc_folders():
        if not folder.is_dir():
            raise ConfigError(f"--docs {folder}: not a directory")
    if settings.docs:  # names that clash with the index's collections fail here, not in the server
        from proxy.index.service import check_folders

        check_folders(settings)
    configure_logging(settings.log_level)
    get_logger("ragproxy").info(
        "starting",
        host=settings.host,
        port=settings.port,
        upstream=settings.upstream,
        upstream_api=settings.upstream_api,
        model=settings.model,
    )
    from proxy.doctor import upstream_failure

    failure = upstream_failure(settings)  # the server starts anyway: the upstream may come later
    if failure is not None:
        get_logger("ragproxy").warning(
            "upstream.not_ready",
            problem=failure.detail,
            fix=failure.fix,
            effect="chats fail until it answers; 'ragproxy doctor' checks the whole set-up",
        )
    from proxy.systemd import notify

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                notify("READY=1")  # systemd Type=notify: listening now

        async def shutdown(self, sockets: Any = None) -> None:
            notify("STOPPING=1")
            await super().shutdown(sockets)

    config = uvicorn_config(
        one_line_startup_errors(create_asgi(settings)), settings, timeout_graceful_shutdown=30
    )
    Server(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "hash-key":
            from proxy.api.security import hash_key

            key = args.key if args.key is not None else sys.stdin.readline().strip()
            if not key:
                raise ConfigError("no key given")
            print(hash_key(key))
            return 0
        if args.command == "sample-config":
            sys.stdout.write(sample_config())
            return 0
        settings = settings_from_args(args)
        if args.command == "doctor":
            from proxy import doctor

            return doctor.run(settings, as_json=args.json)
        if args.command == "service":
            from proxy.systemd import install

            print(install(settings, user=args.user, dest=args.dest, dry_run=args.dry_run).rstrip("\n"))
            return 0
        if args.command == "serve":
            serve(settings)
            return 0
        from proxy import commands

        run: dict[str, Any] = {
            "index": commands.index,
            "search": commands.search,
            "status": commands.status,
            "mcp": commands.mcp,
        }
        return int(run[args.command](settings, args))
    except ConfigError as exc:
        print(f"ragproxy: error: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:  # one line, not a traceback: what is wrong and what to do
        print(f"ragproxy: error: {database_message(settings.db_path, exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "ragproxy: interrupted; the index is consistent, pending work resumes next time", file=sys.stderr
        )
        return 130
