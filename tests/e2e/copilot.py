"""End-to-end check, run by hand through copilot.sh: the real GitHub Copilot CLI, offline and
with ragproxy as its own model provider ("bring your own key", the OpenAI chat wire
``/v1/chat/completions``), answers tests/ragdocs.py's QUESTION through ``copilot -p``.

Copilot is configured only by its documented environment (``copilot help environment``):
``COPILOT_OFFLINE=true`` (no GitHub login, telemetry, web tools, GitHub MCP server or
auto-update; it requires a provider of one's own), ``COPILOT_PROVIDER_BASE_URL`` ragproxy's
``/v1`` with ``COPILOT_PROVIDER_TYPE=openai`` and ``COPILOT_PROVIDER_WIRE_API=completions``,
``COPILOT_MODEL`` the test model, and an output limit in ``COPILOT_PROVIDER_MAX_OUTPUT_TOKENS``.
The prompt budget is left at Copilot's own default, as a user who names only a model has it:
with ``COPILOT_PROVIDER_MAX_PROMPT_TOKENS`` at an 8,192-token window, Copilot 1.0.102 sends
nothing ("Static system messages and tool definitions exceed the model's usable context
budget"), and fitting the request to the window is ragproxy's part anyway. It gets a fresh
home (``COPILOT_HOME`` in it), runs in an empty folder with its tools allowed (it needs that
without a terminal to ask in) and without asking the user, and every connection but to loopback
goes to a refusing proxy.

See chat_agents.py for the servers and the five criteria. With ``--capture DIR`` the request
bodies Copilot sent are saved there as ``copilot-<version>-<kind>-request.json``.

Copilot's output, its logs, the requests and ragproxy's log go to tests/e2e/output/copilot-*.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.chat_agents import (  # noqa: E402
    CACHE,
    MODEL,
    OUTPUT,
    TIMEOUT,
    WINDOWS,
    Result,
    Servers,
    base_env,
    main_run,
    run_client,
)
from tests.ragdocs import QUESTION  # noqa: E402

OUTPUT_TOKENS = 512
LOGS = OUTPUT / "copilot-logs"


def copilot_env(base_url: str, home: Path, refuser: str, output_tokens: int) -> dict[str, str]:
    env = base_env(home, refuser)
    env.update(
        COPILOT_HOME=str(home / ".copilot"),
        COPILOT_OFFLINE="true",
        COPILOT_AUTO_UPDATE="false",
        COPILOT_PROVIDER_BASE_URL=base_url + "/v1",
        COPILOT_PROVIDER_TYPE="openai",
        COPILOT_PROVIDER_WIRE_API="completions",
        COPILOT_MODEL=MODEL,
        COPILOT_PROVIDER_MAX_OUTPUT_TOKENS=str(output_tokens),
    )
    return env


def run(
    command: str,
    timeout: float,
    output_tokens: int,
    servers: Servers,
    home: Path,
    project: Path,
    refuser: str,
    result: Result,
) -> None:
    shutil.rmtree(LOGS, ignore_errors=True)
    args = [command, "-p", QUESTION, "--allow-all-tools", "--no-ask-user", "--no-auto-update"]
    args += ["--disable-client-telemetry", "--no-custom-instructions", "--no-remote", "--no-color"]
    args += ["--log-dir", str(LOGS), "--log-level", "debug"]
    env = copilot_env(servers.url, home, refuser, output_tokens)
    stdout, stderr = run_client("copilot", args, env, project, timeout, result)
    # The answer on stdout; Copilot's summary (changes, duration, tokens) goes to stderr.
    result.printed = stdout
    result.answer = stdout.strip()
    if stderr.strip():
        result.notes.append(f"copilot's stderr: {stderr.strip()[:500]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copilot", default=str(CACHE / "npm-copilot" / "node_modules" / ".bin" / "copilot"))
    parser.add_argument(
        "--window", type=int, choices=sorted(WINDOWS), default=8192, help="the model's window"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for copilot -p")
    parser.add_argument("--capture", type=Path, help="save each chat request body Copilot sends here")
    parser.add_argument(
        "--output-tokens",
        type=int,
        default=OUTPUT_TOKENS,
        help="COPILOT_PROVIDER_MAX_OUTPUT_TOKENS (a small one cuts the answer: Copilot asks to go on)",
    )
    args = parser.parse_args()
    done = subprocess.run([args.copilot, "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"\d+\.\d+\.\d+\S*", done.stdout)
    version = found.group(0).rstrip(".") if found else "unknown"
    return main_run(
        "copilot",
        "GitHub Copilot CLI",
        args.window,
        args.capture,
        version,
        lambda servers, home, project, refuser, result: run(
            args.copilot, args.timeout, args.output_tokens, servers, home, project, refuser, result
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
