"""End-to-end check, run by hand through claude_code.sh: the real Claude Code, in print mode
(``claude -p``), pointed at ragproxy with ``ANTHROPIC_BASE_URL``, answers a question only the
indexed documents can answer.

Everything runs on loopback (tests/e2e/common.py's servers): llama-server with the tiny test model
in one slot of ``--window`` tokens (32768, the default, stretched with YaRN; or 8192, the model's
own), the Ollama-behaving test server in front of it, ragproxy (in this process, with an API key)
over tests/ragdocs.py's documents, and a recording proxy between Claude Code and ragproxy.
``--upstream ollama`` (the default): ragproxy talks to the Ollama-behaving server's native API,
which reports ``--window`` as the model's window, so ragproxy learns it from /api/show and raises
``options.num_ctx`` to fit; ``--upstream openai``: its OpenAI-compatible /v1, with
``context_window`` set. Claude Code gets a fresh home of its own (nothing of the machine's user: no
login, settings or CLAUDE.md), the variables that turn off its updater, telemetry, error reports
and other non-essential traffic, and an HTTP(S) proxy on loopback that refuses and records every
connection it would open to anywhere but ragproxy. Each run asks tests/ragdocs.py's QUESTION:

  lean   ``--tools ""``: Claude Code's own system prompt, no tools (about 1,700 tokens)
  tools  (only with --tools) ``--tools Read,Glob,Grep``: its read-only tools as well (about
         3,500 tokens)
  full   (only with --full) every default tool (24 in 2.1), as a user gets them: about 17,000 to
         22,000 tokens, read in four to twenty minutes on two shared cores

Each run passes when:
(i)   ``claude`` exits 0;
(ii)  ragproxy logged ``/v1/messages`` requests, one of them with a passage sent (rag_sources);
(iii) the canary reached ragproxy's upstream in the prompt;
(iv)  every tool Claude Code sent reached the upstream (names and count);
(v)   the sources were shown: Claude Code's reply holds ragproxy's footnote ("Sources:" then
      "[1] ...zephyr.md"), or, when no passage could fit, ragproxy's note ("[ragproxy] ...");
(vi)  (``--upstream ollama`` only) the request ragproxy retrieved for asked for a ``num_ctx`` of
      at least the prompt's tokens (as the model read them) and the room for the answer, with
      rag_sources >= 1;
(vii) Claude Code tried to reach nothing else (the refusing proxy saw no connection).
Whether the reply states the fact is reported, not checked: a 135M model may not. With tools in
its prompt the tiny model may call one, or repeat itself until the output limit (Claude Code then
exits 1 with "response exceeded the 512 output token maximum"): (i) fails for the model, while the
others still tell whether ragproxy did its part.

What to expect at each window: at 32768 every run fits, passages included. At 8192 the lean and
tools runs fit, but the full run does not: Claude Code's own system prompt and 24 tools take
about 17,000 tokens, more than the whole window before any passage. ragproxy then answers 400
``context_length_exceeded`` where it can count the prompt, or forwards it with its note and the
upstream refuses it; the run is reported as "window too small for the client itself" (not a
failure) when ragproxy's or the upstream's 400 says so, and the passage criteria are not checked.

``--capture DIR`` saves each request Claude Code sent (tests/data/README.md): the main
``/v1/messages`` request as ``claude-code-<version>-messages-request.json``, its title request
(system prompt "Generate a concise, sentence-case title...") as ``-title-request.json``, and any
other as ``-<what>-request.json``; for it, Claude Code's non-essential traffic is left on (the
title request is part of it), and its connections outside loopback are refused, reported and not
counted against (vii).

Exits 1 if any run fails. Claude Code's output, its debug log, what it sent and what reached the
upstream, and ragproxy's log go to tests/e2e/output/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from proxy.pipeline.render import NOTE_MARK  # noqa: E402
from tests.e2e.common import (  # noqa: E402
    CACHE,
    FOOTNOTE,
    OUTPUT,
    SOURCE_FILE,
    Stack,
    log_records,
    num_ctx_checked,
    offered_tools,
    refusing_proxy,
    save_request,
    servers,
    upstream_records,
    window_too_small,
)
from tests.ragdocs import CANARY, QUESTION  # noqa: E402

MODEL = "smollm2:135m"  # a name the Ollama-behaving server knows (its /v1 passes any to llama-server)
# Two shared cores and one llama slot: Claude Code's prompts take minutes to read.
TIMEOUTS = {"lean": 600.0, "tools": 900.0, "full": 3600.0}
RUN_ARGS = {"lean": ["--tools", ""], "tools": ["--tools", "Read,Glob,Grep"], "full": []}
MESSAGES = "/v1/messages"
KEY = "sk-ragproxy-e2e"  # ragproxy's API key here: on loopback only, and the same in each capture
TITLE = "Generate a concise, sentence-case title"


@dataclass
class RunResult:
    name: str
    window: int
    upstream: str
    exit_code: int | None = None
    messages_logged: list[dict[str, Any]] = field(default_factory=list)
    canary_upstream: bool = False
    client_tools: list[str] = field(default_factory=list)
    upstream_tools: list[str] = field(default_factory=list)
    max_tokens: Any = None  # the main request's, for the answer's room
    outside: list[str] = field(default_factory=list)
    outside_allowed: bool = False  # --capture: non-essential traffic left on
    reply: str = ""
    seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passages_sent(self) -> bool:
        return any((r.get("rag_sources") or 0) >= 1 for r in self.messages_logged)

    @property
    def fact_in_reply(self) -> bool:
        return CANARY in self.reply

    @property
    def tools_reached(self) -> bool:
        return set(self.client_tools) <= set(self.upstream_tools)

    @property
    def sources_shown(self) -> bool:
        return FOOTNOTE.search(self.reply) is not None or NOTE_MARK in self.reply

    @property
    def retrieved(self) -> list[dict[str, Any]]:
        """ragproxy's records of the requests it retrieved for (not the title request)."""
        return [r for r in self.messages_logged if r.get("rag") and not r.get("rag_skipped")]

    @property
    def num_ctx_ok(self) -> bool:
        checked = [num_ctx_checked(r, self.max_tokens)[0] for r in self.retrieved if r.get("status") == 200]
        return bool(checked) and all(checked)

    @property
    def too_small(self) -> str | None:
        """ragproxy's (or the upstream's, relayed) refusal of a prompt larger than the window."""
        return window_too_small(self.messages_logged, self.reply)

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and self.passages_sent
            and self.canary_upstream
            and self.tools_reached
            and self.sources_shown
            and (self.upstream != "ollama" or self.num_ctx_ok)
            and (not self.outside or self.outside_allowed)
        )

    @property
    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        if self.too_small:
            return "WINDOW TOO SMALL FOR THE CLIENT ITSELF"
        return "FAIL"


def claude_env(proxy: str, key: str, home: Path, refuser: str, essential_only: bool) -> dict[str, str]:
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
        # No updater, telemetry, error reports or feature flags; without these Claude Code opens
        # connections to its vendor.
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
        # Without it (2.1), the request itself times out after 300 s whatever API_TIMEOUT_MS says
        # ("Request timed out", then a retry from the start): its runtime's fetch default, which
        # this turns off for Claude Code's own idle watchdog (capped at 30 minutes).
        "API_FORCE_IDLE_TIMEOUT": "0",
        # Anything Claude Code would still open goes to the refusing proxy; ragproxy is direct.
        "HTTPS_PROXY": refuser,
        "HTTP_PROXY": refuser,
        "https_proxy": refuser,
        "http_proxy": refuser,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if essential_only:
        # The other background requests too, the title request among them.
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    (home / "tmp").mkdir(parents=True)
    return env


def system_text(body: Any) -> str:
    system = body.get("system") if isinstance(body, dict) else None
    if isinstance(system, list):
        return "\n".join(str(block.get("text") or "") for block in system if isinstance(block, dict))
    return str(system or "")


def kind_of(record: dict[str, Any]) -> str:
    """What a request Claude Code sent is, for its capture's name."""
    body = record.get("body")
    if record["path"].split("?")[0] == MESSAGES:
        if TITLE in system_text(body):
            return "title"
        if isinstance(body, dict) and body.get("tools") is not None or QUESTION in json.dumps(body):
            return "messages"
        return "messages-other"
    return f"{record['method'].lower()}-" + re.sub(r"[^a-z0-9]+", "-", record["path"].lower()).strip("-")


def capture(requests: list[dict[str, Any]], version: str, directory: Path) -> list[Path]:
    """Each request Claude Code sent, once (a retry is not saved again; of several main requests,
    as the turns of a tool call, the first)."""
    written: list[Path] = []
    seen: dict[str, int] = {}
    for record in requests:
        kind = kind_of(record)
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] > 1:
            continue
        written.append(save_request(record, directory / f"claude-code-{version}-{kind}-request.json"))
    return written


def run(name: str, claude: str, stack: Stack, key: str, args: argparse.Namespace) -> RunResult:
    result = RunResult(name, args.window, args.upstream, outside_allowed=bool(args.capture))
    home = stack.work / f"home-{name}"
    cwd = stack.work / f"project-{name}"  # an empty folder: no CLAUDE.md, no git repository
    cwd.mkdir()
    httpx.delete(stack.ollama + "/_test/requests", timeout=10)
    stack.recorder.records.clear()
    log_offset = stack.proxy_log.stat().st_size
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
        env = claude_env(stack.url, key, home, refuser, essential_only=not args.capture)
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

    upstream = upstream_records(stack.ollama)
    (OUTPUT / f"claude-code-{name}-upstream.json").write_text(json.dumps(upstream, indent=1))
    result.canary_upstream = any(CANARY in json.dumps(r.get("body"), ensure_ascii=False) for r in upstream)
    result.upstream_tools = sorted({n for r in upstream for n in offered_tools(r.get("body"))[0]})
    result.requests = list(stack.recorder.records)
    (OUTPUT / f"claude-code-{name}-client-requests.json").write_text(
        json.dumps(result.requests, indent=1, ensure_ascii=False)
    )
    for record in result.requests:
        if kind_of(record) == "messages":
            names, others = offered_tools(record.get("body"))
            result.client_tools = sorted(set(result.client_tools) | set(names))
            if others:
                result.notes.append(f"tools without a name (not checked): {others}")
            if result.max_tokens is None:
                result.max_tokens = record["body"].get("max_tokens")
    result.messages_logged = log_records(stack.proxy_log, (MESSAGES,), log_offset)
    return result


def report(r: RunResult) -> None:
    facts = ("status", "stream", "rag_found", "rag_sources", "context_window", "num_ctx", "prompt_estimate")
    facts += ("prompt_tokens", "completion_tokens", "tools_dropped", "error")
    print(f"[{r.verdict}] {r.name} run, window {r.window}, upstream {r.upstream} ({r.seconds:.0f} s)")
    print(f"  (i)   claude exit code: {r.exit_code}")
    sent = "yes" if r.passages_sent else "NO"
    print(f"  (ii)  /v1/messages requests logged: {len(r.messages_logged)}; a passage sent: {sent}")
    for record in r.messages_logged:
        print("          " + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record))
    print(f"  (iii) canary in the upstream prompt: {'yes' if r.canary_upstream else 'NO'}")
    missing = sorted(set(r.client_tools) - set(r.upstream_tools))
    print(
        f"  (iv)  tools reached the upstream: {'yes' if r.tools_reached else 'NO'} "
        f"(Claude Code sent {len(r.client_tools)}, the upstream got {len(r.upstream_tools)}"
        + (f"; missing {missing}" if missing else "")
        + ")"
    )
    how = "footnote" if FOOTNOTE.search(r.reply) else "note" if NOTE_MARK in r.reply else "neither"
    print(
        f"  (v)   sources shown to the user: {'yes' if r.sources_shown else 'NO'} ({how}; "
        f"'{SOURCE_FILE}' anywhere in the reply: {'yes' if SOURCE_FILE in r.reply else 'no'})"
    )
    if r.upstream == "ollama":
        print(f"  (vi)  num_ctx holds the prompt and the answer's room: {'yes' if r.num_ctx_ok else 'NO'}")
        for record in r.retrieved:
            print(f"          {num_ctx_checked(record, r.max_tokens)[1]}")
    else:
        print("  (vi)  num_ctx: not asked for (OpenAI-compatible upstream)")
    allowed = " (non-essential traffic on for --capture: not counted)" if r.outside_allowed else ""
    print(f"  (vii) connections refused outside loopback: {r.outside or 'none'}{allowed}")
    if r.too_small:
        print(f"  window too small for the client itself: {r.too_small[:300]}")
    print(f"  fact in the reply (not checked): {'yes' if r.fact_in_reply else 'no'}")
    print(f"  Claude Code said: {r.reply[:600]!r}")
    for record in r.requests:
        body = record.get("body")
        print(
            f"  Claude Code sent: {record['method']} {record['path']} -> {record.get('status')} "
            f"({kind_of(record)}; {len(offered_tools(body)[0])} tools; "
            f"max_tokens {body.get('max_tokens') if isinstance(body, dict) else None})"
        )
    for note in r.notes:
        print(f"  note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claude", default=str(CACHE / "npm-claude" / "node_modules" / ".bin" / "claude"))
    parser.add_argument("--only", choices=list(RUN_ARGS), help="this run alone")
    parser.add_argument("--tools", action="store_true", help="add the run with the read-only tools")
    parser.add_argument("--full", action="store_true", help="add the run with every default tool")
    parser.add_argument("--window", type=int, choices=(8192, 32768), default=32768)
    parser.add_argument("--upstream", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--capture", type=Path, metavar="DIR", help="save the requests Claude Code sent")
    args = parser.parse_args()
    # A plain SIGTERM would skip the clean-ups and leave llama-server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    version_text = subprocess.run([args.claude, "--version"], capture_output=True, text=True, timeout=60)
    version_line = version_text.stdout.strip() or version_text.stderr.strip()
    version = version_line.split()[0] if version_line else "unknown"
    print(f"Claude Code {version_line}", flush=True)
    names = (
        [args.only]
        if args.only
        else ["lean", *(["tools"] if args.tools else []), *(["full"] if args.full else [])]
    )
    results: list[RunResult] = []
    key = KEY
    # Claude Code sends no temperature, so the upstream's default applies (as an Ollama
    # Modelfile's would): greedy, so that a run repeats.
    with servers(
        "claude-code",
        args.window,
        args.upstream,
        model=MODEL,
        llama_args=("--temp", "0"),
        api_keys=(key,),
        first_byte_timeout=TIMEOUTS["full"],  # the prompt is read before the first token
    ) as stack:
        for name in names:
            print(f"{name} run ...", flush=True)
            try:
                result = run(name, args.claude, stack, key, args)
            except Exception as exc:  # report the failure and go on with the other run
                result = RunResult(name, args.window, args.upstream)
                result.notes.append(f"run failed: {type(exc).__name__}: {exc}")
            results.append(result)
            if args.capture:
                for path in capture(result.requests, version, args.capture):
                    print(f"  saved {path} ({path.stat().st_size} bytes)")

    print(f"\nClaude Code {version} end-to-end summary")
    for r in results:
        report(r)
    print(f"output: {OUTPUT}")
    return 0 if results and all(r.verdict != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
