"""End-to-end check, run by hand through aider.sh: the real aider (``aider-chat`` from PyPI), with
ragproxy as its model server, answers tests/ragdocs.py's QUESTION non-interactively
(``--message``).

Two modes, as a user would point aider at a local server:
  openai  ``--model openai/smollm2`` with OPENAI_API_BASE=<ragproxy>/v1 (LiteLLM's OpenAI
          provider, through the official OpenAI library): ragproxy's /v1/chat/completions
  ollama  ``--model ollama_chat/smollm2`` with OLLAMA_API_BASE=<ragproxy> (LiteLLM's own
          Ollama client): ragproxy's /api/chat; aider sets ``options.num_ctx`` itself

aider runs in an empty project folder with a fresh HOME: no git (``--no-git``), no repo map, no
model warnings, no update check, release notes, analytics or browser, ``--yes-always``, plain
output (``--no-pretty``), in ask mode by default (``--edit-format``: a question about the
documents, not an edit; the default "whole" format asks the tiny model for files), with the
same model as its weak model (its summaries and commit messages, should it send any).

Passes on common.py's criteria (i) to (v). Everything aider sent (User-Agent, body) is recorded
in front of ragproxy and printed; ``--capture DIR`` saves it as
<DIR>/aider-<version>-<mode>-request.json (and any further request beside it). aider's output,
its chat history and ragproxy's log go to tests/e2e/output/aider-<mode>-*.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.common import (  # noqa: E402
    CACHE,
    MODEL,
    QUESTION,
    WINDOWS,
    Result,
    capture,
    client_env,
    collect,
    package_version,
    refusing_proxy,
    run_client,
    servers,
    summary,
)

# Two shared cores: aider's prompt (its system prompt, the passages) takes the tiny model a
# minute or more to read, and the answer may run on.
TIMEOUT = 1800.0


def aider_answer(history: Path) -> str:
    """The reply as aider kept it in its chat history: what follows the user's "#### " line,
    without aider's own "> " lines."""
    if not history.exists():
        return ""
    lines = history.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#### ")), None)
    if start is None:
        return ""
    return "\n".join(line for line in lines[start + 1 :] if not line.startswith(">")).strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--aider", default=str(CACHE / "venv-aider" / "bin" / "aider"))
    parser.add_argument("--mode", choices=("openai", "ollama"), default="openai")
    parser.add_argument("--window", type=int, choices=sorted(WINDOWS), default=8192)
    parser.add_argument("--edit-format", default="ask", help="aider's --edit-format (default: ask)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for aider")
    parser.add_argument("--capture", type=Path, help="save the requests aider sent into this folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean-ups stop llama-server
    stem = f"aider-{args.mode}"
    result = Result("aider", args.mode, args.window)
    result.version = package_version(Path(args.aider).parent / "python", "aider-chat")
    model = ("openai/" if args.mode == "openai" else "ollama_chat/") + MODEL
    with servers(stem, args.window) as stack, refusing_proxy() as (refuser, seen):
        home, project = stack.work / "home", stack.work / "project"
        project.mkdir()
        if args.mode == "openai":
            # Any key will do: ragproxy has none here; LiteLLM's OpenAI client wants one.
            extra = {"OPENAI_API_BASE": stack.url + "/v1", "OPENAI_API_KEY": "sk-ragproxy-e2e"}
        else:
            extra = {"OLLAMA_API_BASE": stack.url}
        command = [
            args.aider,
            "--model",
            model,
            "--weak-model",
            model,
            "--edit-format",
            args.edit_format,
            "--message",
            QUESTION,
            "--yes-always",
            "--no-git",
            "--no-auto-commits",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--analytics-disable",
            "--map-tokens",
            "0",
            "--no-show-model-warnings",
            "--no-check-model-accepts-settings",
            "--no-gui",
            "--disable-playwright",
            "--no-detect-urls",
            "--no-pretty",
            "--no-fancy-input",
            "--no-suggest-shell-commands",
            "--no-restore-chat-history",
            "--timeout",
            str(int(args.timeout)),
        ]
        run_client(command, client_env(home, refuser, **extra), project, args.timeout, result, stem)
        history = project / ".aider.chat.history.md"
        if history.exists():
            (stack.proxy_log.parent / f"{stem}-chat-history.md").write_bytes(history.read_bytes())
        result.answer = aider_answer(history)
        result.outside = list(seen)
        collect(stack, result, stem)
    if args.capture:
        for path in capture(result, args.capture):
            result.notes.append(f"captured {path.name}")
    return summary(result, "aider")


if __name__ == "__main__":
    sys.exit(main())
