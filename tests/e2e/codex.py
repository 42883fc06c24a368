"""End-to-end check, run by hand through codex.sh: the real Codex CLI, with ragproxy as its model
provider (the Responses API), answers tests/ragdocs.py's QUESTION through ``codex exec``.

Everything runs on loopback: llama-server with the tiny test model and a context large enough for
Codex's prompt (its instructions and tool list alone are over ten thousand tokens), the
Ollama-behaving test server in front of it (for its OpenAI-compatible API, as Ollama serves
beside its own; it records what reaches the model), ragproxy (in this process) over
tests/ragdocs.py's documents with ``--upstream-api openai``, and ``codex exec`` with a fresh
CODEX_HOME whose config.toml names ragproxy as the provider. Codex is kept off the network: no
plugins (they are fetched from outside), no analytics; it needs no login for a provider without
``env_key``. It runs read-only in an empty folder.

Passes when:
(i)   codex exits 0 with its turn completed;
(ii)  ragproxy logged the ``POST /v1/responses`` with status 200 and at least one passage sent
      (``rag_sources``);
(iii) the canary reached the upstream in the prompt.
Reported only: whether the answer states the fact (a 135M model, far past the context it was
trained on, may not), and any command Codex ran for the model.

Codex's events, its stderr and ragproxy's log go to tests/e2e/output/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
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
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragproxy-e2e"
# One llama slot holding all of Codex's prompt, the passages and the answer: the model was trained
# on 8192 tokens, so llama-server stretches it with YaRN (without, it caps the slot at 8192).
CONTEXT = 32768
LLAMA_ARGS = ("-c", str(CONTEXT), "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "8192")
# Two shared cores: reading Codex's prompt (about 9,400 tokens) took the tiny model four minutes
# on a quiet machine and the answer one or two more; a busy machine takes several times longer.
CODEX_TIMEOUT = 1800.0


@dataclass
class Result:
    exit_code: int | None = None
    turn_completed: bool = False
    responses_logged: list[dict[str, Any]] = field(default_factory=list)
    canary_upstream: bool = False
    answer: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rag_sent(self) -> bool:
        return any(r.get("status") == 200 and (r.get("rag_sources") or 0) >= 1 for r in self.responses_logged)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.turn_completed and self.rag_sent and self.canary_upstream


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
        elif kind == "item.completed" and item.get("type") == "error":
            result.notes.append(f"codex warned: {item.get('message')}")
        elif kind == "item.completed" and item.get("type") == "agent_message" and not result.answer:
            result.answer = str(item.get("text") or "")
        elif kind == "item.completed" and item.get("type") not in ("agent_message", "reasoning"):
            result.notes.append(f"codex item: {json.dumps(item, ensure_ascii=False)[:300]}")


def responses_records(log: Path) -> list[dict[str, Any]]:
    """ragproxy's log lines for ``POST /v1/responses``."""
    records = []
    for line in log.read_bytes().splitlines():
        record = json.loads(line)
        if record.get("event") == "request" and record.get("path") == "/v1/responses":
            records.append(record)
    return records


def upstream_bodies(ollama_url: str) -> list[str]:
    """Every chat request the upstream received, as JSON text."""
    records = httpx.get(ollama_url + "/_test/requests", timeout=10).json()
    return [json.dumps(r.get("body"), ensure_ascii=False) for r in records if "chat" in str(r.get("path"))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codex", default=str(CACHE / "npm" / "node_modules" / ".bin" / "codex"))
    parser.add_argument("--timeout", type=float, default=CODEX_TIMEOUT, help="seconds for codex exec")
    args = parser.parse_args()
    # A plain SIGTERM would skip the clean-ups and leave llama-server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUTPUT.mkdir(exist_ok=True)
    result = Result()
    proxy_log = OUTPUT / "codex-ragproxy.log"  # its own: the other scripts may run meanwhile
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragproxy-e2e-")))
        configure_logging("info", stack.enter_context(proxy_log.open("w")))
        folder, db = build_docs_index(work)
        # As tests/conftest.py's llama fixture: a ChatML template that declares tools, since
        # Codex always sends its own. One slot with the whole context.
        template = HERE / "upstream" / "chatml-tools.jinja"
        llama = stack.enter_context(
            llama_server("--jinja", "--chat-template-file", str(template), *LLAMA_ARGS, slots=1)
        )
        ollama = stack.enter_context(fake_ollama(llama.url))
        proxy = stack.enter_context(
            ragproxy(
                upstream=ollama.url,
                upstream_api="openai",
                model=MODEL,
                docs=(f"manuals={folder}",),
                db=str(db),
                context_window=CONTEXT,  # Ollama's /v1 has no /props to ask
            )
        )
        home, workdir = work / "codex-home", work / "project"
        home.mkdir()
        workdir.mkdir()
        (home / "config.toml").write_text(codex_config(proxy), encoding="utf-8")
        events = run_codex(args.codex, home, workdir, args.timeout, result)
        read_events(events, result)
        result.canary_upstream = any(CANARY in body for body in upstream_bodies(ollama.url))
    result.responses_logged = responses_records(proxy_log)

    facts = ("status", "stream", "rag_sources", "rag_found", "tools_not_offered", "prompt_tokens")
    facts += ("completion_tokens", "finish_reason", "error", "duration_ms")
    verdict = "PASS" if result.passed else "FAIL"
    print(f"\nCodex end-to-end summary: {verdict} ({result.seconds:.0f} s for codex exec)")
    print(f"  (i)   codex exit code: {result.exit_code}; turn completed: {result.turn_completed}")
    print(f"  (ii)  ragproxy logged {len(result.responses_logged)} POST /v1/responses:")
    for record in result.responses_logged:
        print("          " + ", ".join(f"{k}={record.get(k)}" for k in facts if k in record))
    print(f"  (iii) canary in the upstream prompt: {'yes' if result.canary_upstream else 'NO'}")
    print(f"  fact in the answer: {'yes' if CANARY in result.answer else 'no'} (reported only)")
    print(f"  answer: {result.answer[:600]!r}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  output: {OUTPUT}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
