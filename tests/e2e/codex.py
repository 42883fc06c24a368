"""End-to-end check, run by hand through codex.sh: the real Codex CLI, with ragproxy as its model
provider (the Responses API), answers tests/ragdocs.py's QUESTION through ``codex exec``.

Everything runs on loopback (tests/e2e/common.py's servers): llama-server with the tiny test model
in one slot of ``--window`` tokens (32768, the default, stretched with YaRN: Codex's instructions
and tool list alone are about ten thousand tokens; or 8192, the model's own), the Ollama-behaving
test server in front of it (it records what reaches the model), ragproxy (in this process) over
tests/ragdocs.py's documents, a recording proxy between Codex and ragproxy, and ``codex exec``
with a fresh CODEX_HOME whose config.toml names ragproxy as the provider. ``--upstream ollama``
(the default): ragproxy talks to the Ollama-behaving server's native API, which reports
``--window`` as the model's window, so ragproxy learns it from /api/show and raises
``options.num_ctx`` to fit; ``--upstream openai``: its OpenAI-compatible /v1 (as Ollama serves
beside its own API), with ``context_window`` set. Codex is kept off the network: no plugins (they
are fetched from outside), no analytics; it needs no login for a provider without ``env_key``. It
runs read-only in an empty folder.

Passes when:
(i)   codex exits 0 with its turn completed;
(ii)  ragproxy logged the ``POST /v1/responses`` with status 200 and at least one passage sent
      (``rag_sources``);
(iii) the canary reached the upstream in the prompt;
(iv)  every named tool Codex sent reached the upstream (names and count), but those ragproxy
      logged as not offered (``tools_not_offered``: a built-in tool such as web_search, which
      a chat upstream cannot run);
(v)   the sources were shown: Codex's answer holds ragproxy's footnote ("Sources:" then
      "[1] ...zephyr.md"), or, when no passage could fit, ragproxy's note ("[ragproxy] ...");
(vi)  (``--upstream ollama`` only) ragproxy asked for a ``num_ctx`` of at least the prompt's tokens
      (as the model read them) and the room for the answer, with rag_sources >= 1.
Reported only: whether the answer states the fact (a 135M model, far past the context it was
trained on, may not), and any command Codex ran for the model.

What to expect at each window: at 32768 it fits, passages included. At 8192 it does not: Codex's
own instructions and tools take more than the whole window before any passage. ragproxy then
answers 400 ``context_length_exceeded`` where it can count the prompt, or forwards it with its note
and the upstream refuses it; the run is reported as "window too small for the client itself" (not
a failure) when ragproxy's or the upstream's 400 says so.

``--capture DIR`` saves the request Codex sent as ``codex-<version>-responses-request.json`` (and
any other beside it; tests/data/README.md). Codex's events, its stderr, what it sent, what reached
the upstream and ragproxy's log go to tests/e2e/output/.
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

from proxy.pipeline.render import NOTE_MARK  # noqa: E402
from tests.e2e.common import (  # noqa: E402
    CACHE,
    FOOTNOTE,
    OUTPUT,
    SOURCE_FILE,
    log_records,
    num_ctx_checked,
    offered_tools,
    save_request,
    servers,
    upstream_records,
    window_too_small,
)
from tests.ragdocs import CANARY, QUESTION  # noqa: E402

MODEL = "smollm2:135m"  # a name the Ollama-behaving server knows (its /v1 passes any to llama-server)
RESPONSES = "/v1/responses"
# Two shared cores: reading Codex's prompt (about 9,400 tokens) took the tiny model four minutes
# on a quiet machine and the answer one or two more; a busy machine takes several times longer.
CODEX_TIMEOUT = 1800.0


@dataclass
class Result:
    window: int
    upstream: str
    version: str = ""
    exit_code: int | None = None
    turn_completed: bool = False
    responses_logged: list[dict[str, Any]] = field(default_factory=list)
    canary_upstream: bool = False
    client_tools: list[str] = field(default_factory=list)
    client_builtin: list[str] = field(default_factory=list)
    upstream_tools: list[str] = field(default_factory=list)
    max_tokens: Any = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""
    failure: str = ""  # what Codex showed when its turn failed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rag_sent(self) -> bool:
        return any(r.get("status") == 200 and (r.get("rag_sources") or 0) >= 1 for r in self.responses_logged)

    @property
    def not_offered(self) -> set[str]:
        return {str(n) for r in self.responses_logged for n in r.get("tools_not_offered") or ()}

    @property
    def tools_reached(self) -> bool:
        return set(self.client_tools) - self.not_offered <= set(self.upstream_tools)

    @property
    def sources_shown(self) -> bool:
        return FOOTNOTE.search(self.answer) is not None or NOTE_MARK in self.answer

    @property
    def num_ctx_ok(self) -> bool:
        checked = [
            num_ctx_checked(r, self.max_tokens)[0] for r in self.responses_logged if r.get("status") == 200
        ]
        return bool(checked) and all(checked)

    @property
    def too_small(self) -> str | None:
        return window_too_small(self.responses_logged, f"{self.answer}\n{self.failure}")

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and self.turn_completed
            and self.rag_sent
            and self.canary_upstream
            and self.tools_reached
            and self.sources_shown
            and (self.upstream != "ollama" or self.num_ctx_ok)
        )

    @property
    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        return "WINDOW TOO SMALL FOR THE CLIENT ITSELF" if self.too_small else "FAIL"


def codex_config(proxy: str) -> str:
    """config.toml: ragproxy as the provider (no ``env_key``: ragproxy has no keys here, and Codex
    then sends no Authorization header and asks for no login); nothing reaches outside."""
    return f"""\
model = "{MODEL}"
model_provider = "ragproxy"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.ragproxy]
name = "ragproxy"
base_url = "{proxy}/v1"
wire_api = "responses"
# a failure shows at once instead of being retried behind our back
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = {int(CODEX_TIMEOUT * 1000)}

[features]
# plugins and their marketplace are fetched from outside at start-up
plugins = false

[analytics]
enabled = false
"""


def codex_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def run_codex(
    command: str, home: Path, workdir: Path, timeout: float, result: Result
) -> list[dict[str, Any]]:
    """``codex exec --json`` with QUESTION: its events (also saved), its answer and exit code."""
    events_file, last_file = OUTPUT / "codex-events.jsonl", OUTPUT / "codex-last-message.txt"
    last_file.unlink(missing_ok=True)
    args = [command, "exec", "--json", "--skip-git-repo-check", "--ephemeral", "--strict-config"]
    args += ["--sandbox", "read-only", "--color", "never", "-o", str(last_file), QUESTION]
    started = time.monotonic()
    with events_file.open("wb") as out, (OUTPUT / "codex-stderr.log").open("wb") as err:
        # Its own session: the npm launcher runs the real binary as a child, and a timeout must
        # stop both, so the connection to ragproxy closes and the upstream stops generating.
        process = subprocess.Popen(
            args,
            env=codex_env(home),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            result.exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            result.notes.append(f"codex exec still running after {timeout:.0f} s: stopped")
    result.seconds = time.monotonic() - started
    events = []
    for line in events_file.read_bytes().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            result.notes.append(f"not an event: {line[:200]!r}")
    if last_file.exists():
        result.answer = last_file.read_text(encoding="utf-8")
    return events


def read_events(events: list[dict[str, Any]], result: Result) -> None:
    for event in events:
        kind = event.get("type")
        item = event.get("item") or {}
        if kind == "turn.completed":
            result.turn_completed = True
            result.notes.append(f"codex usage: {event.get('usage')}")
        elif kind in ("turn.failed", "error"):
            result.notes.append(f"codex {kind}: {json.dumps(event)[:500]}")
            message = (
                (event.get("error") or {}).get("message") if kind == "turn.failed" else event.get("message")
            )
            result.failure = result.failure or str(message or "")
        elif kind == "item.completed" and item.get("type") == "error":
            result.notes.append(f"codex warned: {item.get('message')}")
        elif kind == "item.completed" and item.get("type") == "agent_message" and not result.answer:
            result.answer = str(item.get("text") or "")
        elif kind == "item.completed" and item.get("type") not in ("agent_message", "reasoning"):
            result.notes.append(f"codex item: {json.dumps(item, ensure_ascii=False)[:300]}")


def capture(result: Result, directory: Path) -> list[Path]:
    """Each request Codex sent, once: the first ``/v1/responses`` as
    codex-<version>-responses-request.json, a further different one -responses-2..., any other
    path as -<method>-<path>-request.json."""
    written: list[Path] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for record in result.requests:
        key = json.dumps([record["method"], record["path"], record["body"]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        path = record["path"].split("?")[0]
        kind = (
            "responses"
            if path == RESPONSES
            else f"{record['method'].lower()}-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        )
        counts[kind] = counts.get(kind, 0) + 1
        number = "" if counts[kind] == 1 else f"-{counts[kind]}"
        name = f"codex-{result.version}-{kind}{number}-request.json"
        written.append(save_request(record, directory / name))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codex", default=str(CACHE / "npm" / "node_modules" / ".bin" / "codex"))
    parser.add_argument("--timeout", type=float, default=CODEX_TIMEOUT, help="seconds for codex exec")
    parser.add_argument("--window", type=int, choices=(8192, 32768), default=32768)
    parser.add_argument("--upstream", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--capture", type=Path, metavar="DIR", help="save the requests Codex sent")
    args = parser.parse_args()
    # A plain SIGTERM would skip the clean-ups and leave llama-server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    result = Result(args.window, args.upstream)
    version = subprocess.run([args.codex, "--version"], capture_output=True, text=True, timeout=60)
    version_line = version.stdout.strip() or version.stderr.strip()
    result.version = version_line.split()[-1] if version_line else "unknown"
    print(f"Codex {version_line}", flush=True)
    # ragproxy waits for the first token as long as codex is given: the prompt is read before it.
    with servers("codex", args.window, args.upstream, model=MODEL, first_byte_timeout=args.timeout) as stack:
        home, workdir = stack.work / "codex-home", stack.work / "project"
        home.mkdir()
        workdir.mkdir()
        (home / "config.toml").write_text(codex_config(stack.url), encoding="utf-8")
        events = run_codex(args.codex, home, workdir, args.timeout, result)
        read_events(events, result)
        upstream = upstream_records(stack.ollama)
        (OUTPUT / "codex-upstream.json").write_text(json.dumps(upstream, indent=1, ensure_ascii=False))
        result.canary_upstream = any(
            CANARY in json.dumps(r.get("body"), ensure_ascii=False) for r in upstream
        )
        result.upstream_tools = sorted({n for r in upstream for n in offered_tools(r.get("body"))[0]})
        result.requests = list(stack.recorder.records)
        (OUTPUT / "codex-client-requests.json").write_text(
            json.dumps(result.requests, indent=1, ensure_ascii=False)
        )
        for record in result.requests:
            if record["path"].split("?")[0] == RESPONSES and isinstance(record.get("body"), dict):
                names, builtin = offered_tools(record["body"])
                result.client_tools = sorted(set(result.client_tools) | set(names))
                result.client_builtin = sorted(set(result.client_builtin) | set(builtin))
                if result.max_tokens is None:
                    result.max_tokens = record["body"].get("max_output_tokens")
        result.responses_logged = log_records(stack.proxy_log, (RESPONSES,))
    if args.capture:
        for path in capture(result, args.capture):
            print(f"  saved {path} ({path.stat().st_size} bytes)")

    facts = ("status", "stream", "rag_sources", "rag_found", "tools_not_offered", "context_window")
    facts += ("num_ctx", "prompt_estimate", "prompt_tokens", "completion_tokens", "finish_reason", "error")
    facts += ("duration_ms",)
    print(
        f"\nCodex {result.version} end-to-end summary: {result.verdict} (window {result.window}, upstream "
        f"{result.upstream}, {result.seconds:.0f} s for codex exec)"
    )
    print(f"  (i)   codex exit code: {result.exit_code}; turn completed: {result.turn_completed}")
    print(
        f"  (ii)  ragproxy logged {len(result.responses_logged)} POST /v1/responses; a passage sent: "
        f"{'yes' if result.rag_sent else 'NO'}"
    )
    for record in result.responses_logged:
        print("          " + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record))
    print(f"  (iii) canary in the upstream prompt: {'yes' if result.canary_upstream else 'NO'}")
    missing = sorted(set(result.client_tools) - result.not_offered - set(result.upstream_tools))
    print(
        f"  (iv)  tools reached the upstream: {'yes' if result.tools_reached else 'NO'} (Codex sent "
        f"{len(result.client_tools)} named {result.client_tools} and built-in {result.client_builtin}; "
        f"the upstream got {len(result.upstream_tools)}; not offered: {sorted(result.not_offered)}"
        + (f"; missing {missing}" if missing else "")
        + ")"
    )
    how = (
        "footnote" if FOOTNOTE.search(result.answer) else "note" if NOTE_MARK in result.answer else "neither"
    )
    print(
        f"  (v)   sources shown to the user: {'yes' if result.sources_shown else 'NO'} ({how}; "
        f"'{SOURCE_FILE}' anywhere in the answer: {'yes' if SOURCE_FILE in result.answer else 'no'})"
    )
    if result.upstream == "ollama":
        print(
            f"  (vi)  num_ctx holds the prompt and the answer's room: {'yes' if result.num_ctx_ok else 'NO'}"
        )
        for record in result.responses_logged:
            print(f"          {num_ctx_checked(record, result.max_tokens)[1]}")
    else:
        print("  (vi)  num_ctx: not asked for (OpenAI-compatible upstream)")
    if result.too_small:
        print(f"  window too small for the client itself: {result.too_small[:300]}")
    print(f"  fact in the answer: {'yes' if CANARY in result.answer else 'no'} (reported only)")
    print(f"  answer: {result.answer[:600]!r}")
    if result.failure:
        print(f"  Codex showed: {result.failure[:600]!r}")
    for record in result.requests:
        body = record.get("body")
        print(
            f"  Codex sent: {record['method']} {record['path']} -> {record.get('status')}; "
            f"{len(offered_tools(body)[0])} named tools; User-Agent {record['headers'].get('user-agent')!r}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  output: {OUTPUT}")
    return 0 if result.verdict != "FAIL" else 1


if __name__ == "__main__":
    sys.exit(main())
