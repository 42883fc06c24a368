"""End-to-end check, run by hand through claude_code.sh: the real Claude Code, in print mode
(``claude -p``), pointed at ragproxy with ``ANTHROPIC_BASE_URL``, answers a question only the
indexed documents can answer.

Everything runs on loopback: llama-server with the tiny test model (a 65,536-token window: Claude
Code's system prompt and tools are long), the Ollama-behaving test server in front of it, and
ragproxy (in this process, with an API key) over tests/ragdocs.py's documents. Claude Code gets a
fresh home of its own (nothing of the machine's user: no login, settings or CLAUDE.md), the
variables that turn off its updater, telemetry, error reports and other non-essential traffic,
and an HTTP(S) proxy on loopback that refuses and records every connection it would open to
anywhere but ragproxy. Each run asks tests/ragdocs.py's QUESTION:

  lean   ``--tools ""``: Claude Code's own system prompt, no tools (about 1,700 tokens)
  tools  (only with --tools) ``--tools Read,Glob,Grep``: its read-only tools as well (about
         3,500 tokens)
  full   (only with --full) every default tool, as a user gets them: about 22,000 tokens, read
         at about 1,000 tokens a minute on two shared cores (20 minutes or more)

Each run passes when:
(i)   ``claude`` exits 0;
(ii)  ragproxy logged ``/v1/messages`` requests, one of them with a passage sent (rag_sources);
(iii) the canary reached ragproxy's upstream in the prompt;
(iv)  Claude Code tried to reach nothing else (the refusing proxy saw no connection).
Whether the reply states the fact is reported, not checked: a 135M model may not. With tools in
its prompt the tiny model tends to repeat itself until the output limit, and Claude Code then
exits 1 with "response exceeded the 512 output token maximum" (after asking it to go on three
times): (i) fails for the model, while (ii) to (iv) still tell whether ragproxy did its part.

Exits 1 if any run fails. Claude Code's output, its debug log and ragproxy's log go to
tests/e2e/output/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from proxy.logging import configure_logging  # noqa: E402
from tests.ragdocs import CANARY, QUESTION, build_docs_index  # noqa: E402
from tests.servers import HERE, fake_ollama, llama_server, ragproxy  # noqa: E402

MODEL = "smollm2:135m"
OUTPUT = Path(__file__).parent / "output"
CACHE = Path(
    os.environ.get("RAGPROXY_E2E_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy-e2e"
)
WINDOW = 65536
# Two shared cores and one llama slot: Claude Code's prompts take minutes to read.
TIMEOUTS = {"lean": 600.0, "tools": 900.0, "full": 3600.0}
RUN_ARGS = {"lean": ["--tools", ""], "tools": ["--tools", "Read,Glob,Grep"], "full": []}


@dataclass
class RunResult:
    name: str
    exit_code: int | None = None
    messages_requests: int = 0
    passages_sent: bool = False
    canary_upstream: bool = False
    outside: list[str] = field(default_factory=list)
    reply: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def fact_in_reply(self) -> bool:
        return CANARY in self.reply

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and self.messages_requests > 0
            and self.passages_sent
            and self.canary_upstream
            and not self.outside
        )


class Refuser(BaseHTTPRequestHandler):
    """An HTTP(S) proxy that opens nothing: every request (``CONNECT host:443`` for HTTPS, an
    absolute URL for HTTP) is recorded and answered 403."""

    seen: list[str]

    def refuse(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    do_CONNECT = do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def refusing_proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Refuser,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def claude_env(proxy: str, key: str, home: Path, refuser: str) -> dict[str, str]:
    """Claude Code's whole environment: ragproxy as its API, the test model for every role, a
    home of its own, and nothing that would reach outside."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": str(home / "tmp"),
        "ANTHROPIC_BASE_URL": proxy,
        # Sent as "Authorization: Bearer"; with it Claude Code asks for no login.
        "ANTHROPIC_AUTH_TOKEN": key,
        # The names Claude Code sends for each role (main, its background "haiku" calls, agents).
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
        "CLAUDE_CODE_SUBAGENT_MODEL": MODEL,
        # No updater, telemetry, error reports, feature flags or other background requests (the
        # title request among them); without these Claude Code opens connections to its vendor.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_UPDATES": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_GROWTHBOOK": "1",
        # A short answer on two shared cores, but room to finish it: Claude Code counts a reply
        # cut at the limit as an error (after asking the model to go on, three times).
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "512",
        # ragproxy sends its first byte once the upstream has read the prompt, which takes
        # minutes here; Claude Code gives a request 10 minutes by default.
        "API_TIMEOUT_MS": str(int(TIMEOUTS["full"] * 1000)),
        "CLAUDE_STREAM_IDLE_TIMEOUT_MS": str(int(TIMEOUTS["full"] * 1000)),
        # Anything Claude Code would still open goes to the refusing proxy; ragproxy is direct.
        "HTTPS_PROXY": refuser,
        "HTTP_PROXY": refuser,
        "https_proxy": refuser,
        "http_proxy": refuser,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    (home / "tmp").mkdir(parents=True)
    return env


def upstream_prompts(ollama_url: str, name: str) -> list[str]:
    """The message texts of every chat request the Ollama-behaving server received (the
    requests saved beside Claude Code's output)."""
    records = httpx.get(ollama_url + "/_test/requests", timeout=10).json()
    (OUTPUT / f"claude-code-{name}-upstream.json").write_text(json.dumps(records, indent=1))
    texts: list[str] = []
    for record in records:
        body = record.get("body")
        if isinstance(body, dict):
            texts.extend(str(m.get("content") or "") for m in body.get("messages") or [])
    return texts


def proxy_records(log: Path, offset: int) -> list[dict[str, Any]]:
    """ragproxy's request log records from ``offset`` on."""
    records = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            record = json.loads(line)
            if record.get("event") == "request":
                records.append(record)
    return records


def run(
    name: str, claude: str, proxy: str, key: str, ollama_url: str, work: Path, proxy_log: Path
) -> RunResult:
    result = RunResult(name)
    home = work / f"home-{name}"
    cwd = work / f"project-{name}"  # an empty folder: no CLAUDE.md, no git repository
    cwd.mkdir()
    httpx.delete(ollama_url + "/_test/requests", timeout=10)
    log_offset = proxy_log.stat().st_size
    debug_log = OUTPUT / f"claude-code-{name}-debug.log"
    debug_log.unlink(missing_ok=True)  # Claude Code appends to it
    command = [
        claude,
        "-p",
        QUESTION,
        "--output-format",
        "json",
        "--no-session-persistence",
        "--max-turns",
        "3",  # the model may call a tool; each call is one more turn
        "--debug-file",
        str(debug_log),
        *RUN_ARGS[name],
    ]
    with refusing_proxy() as (refuser, seen):
        env = claude_env(proxy, key, home, refuser)
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUTS[name]
            )
            result.exit_code = done.returncode
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            result.notes.append(f"claude did not finish within {TIMEOUTS[name]:.0f} s")
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        result.seconds = time.monotonic() - started
        result.outside = list(seen)
    (OUTPUT / f"claude-code-{name}.json").write_text(stdout)
    if stderr.strip():
        result.notes.append(f"claude's stderr: {stderr.strip()[:500]!r}")
    try:
        output = json.loads(stdout)
        result.reply = str(output.get("result") or "")
        result.notes.append(
            "claude's result: "
            + ", ".join(f"{k}={output.get(k)}" for k in ("subtype", "is_error", "num_turns", "stop_reason"))
        )
    except json.JSONDecodeError:
        result.reply = stdout.strip()
    result.canary_upstream = any(CANARY in text for text in upstream_prompts(ollama_url, name))
    facts = ("status", "stream", "rag_found", "rag_sources", "num_ctx", "prompt_tokens", "completion_tokens")
    for record in proxy_records(proxy_log, log_offset):
        result.notes.append(
            f"ragproxy: {record.get('method')} {record.get('path')} "
            + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record)
        )
        if record.get("path") == "/v1/messages":
            result.messages_requests += 1
            result.passages_sent = result.passages_sent or (record.get("rag_sources") or 0) >= 1
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claude", default=str(CACHE / "npm-claude" / "node_modules" / ".bin" / "claude"))
    parser.add_argument("--only", choices=list(RUN_ARGS), help="this run alone")
    parser.add_argument("--tools", action="store_true", help="add the run with the read-only tools")
    parser.add_argument("--full", action="store_true", help="add the run with every default tool")
    args = parser.parse_args()
    # A plain SIGTERM would skip the clean-ups and leave llama-server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    version = subprocess.run([args.claude, "--version"], capture_output=True, text=True, timeout=60)
    print(f"Claude Code {version.stdout.strip() or version.stderr.strip()}", flush=True)
    names = (
        [args.only]
        if args.only
        else ["lean", *(["tools"] if args.tools else []), *(["full"] if args.full else [])]
    )
    results: list[RunResult] = []
    key = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragproxy-e2e-")))
        # ragproxy runs in this process: its JSON log goes to a file beside Claude Code's output.
        proxy_log = OUTPUT / "claude-code-ragproxy.log"
        configure_logging("info", stack.enter_context(proxy_log.open("w")))
        folder, db = build_docs_index(work)
        # llama-server caps a slot at the model's training window (8,192 tokens) unless the
        # model says it has more.
        template = HERE / "upstream" / "chatml-tools.jinja"
        llama = stack.enter_context(
            llama_server(
                "--jinja",
                "--chat-template-file",
                str(template),
                "-c",
                str(WINDOW),
                "--override-kv",
                f"llama.context_length=int:{WINDOW}",
                # Claude Code sends no temperature, so the upstream's default applies (as an
                # Ollama Modelfile's would): greedy, so that a run repeats.
                "--temp",
                "0",
                slots=1,
            )
        )
        ollama = stack.enter_context(fake_ollama(llama.url))
        proxy = stack.enter_context(
            ragproxy(
                upstream=ollama.url,
                upstream_api="ollama",
                model=MODEL,
                docs=(f"manuals={folder}",),
                db=str(db),
                api_keys=(key,),
                context_window=WINDOW,  # the Ollama-behaving server reports 8,192 whatever llama holds
                num_ctx_max=WINDOW,
            )
        )
        for name in names:
            print(f"{name} run ...", flush=True)
            try:
                result = run(name, args.claude, proxy, key, ollama.url, work, proxy_log)
            except Exception as exc:  # report the failure and go on with the other run
                result = RunResult(name, notes=[f"run failed: {type(exc).__name__}: {exc}"])
            results.append(result)

    print("\nClaude Code end-to-end summary")
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        print(f"[{verdict}] {r.name} run ({r.seconds:.0f} s)")
        print(f"  (i)   claude exit code: {r.exit_code}")
        sent = "yes" if r.passages_sent else "NO"
        print(f"  (ii)  /v1/messages requests: {r.messages_requests}; a passage sent: {sent}")
        print(f"  (iii) canary in the upstream prompt: {'yes' if r.canary_upstream else 'NO'}")
        print(f"  (iv)  connections refused outside loopback: {r.outside or 'none'}")
        print(f"  fact in the reply (not checked): {'yes' if r.fact_in_reply else 'no'}")
        print(f"  Claude Code said: {r.reply[:600]!r}")
        for note in r.notes:
            print(f"  note: {note}")
    print(f"output: {OUTPUT}")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
