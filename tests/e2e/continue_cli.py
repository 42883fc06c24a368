"""End-to-end check, run by hand through continue_cli.sh: Continue's CLI ``cn``, with a config
file naming ragproxy as an OpenAI-compatible model (``provider: openai``, ``apiBase`` ragproxy's
``/v1``, the chat wire ``/v1/chat/completions``), answers tests/ragdocs.py's QUESTION through
``cn -p`` (headless).

``cn`` gets a fresh home with its global folder in it (``CONTINUE_GLOBAL_DIR``), the config file
given with ``--config`` (a local file: no hub, no login), its telemetry and metrics off
(``CONTINUE_CLI_ENABLE_TELEMETRY=0``, ``CONTINUE_METRICS_ENABLED=0``); headless it checks for
no update. It runs in an empty folder, and every connection but to loopback goes to a refusing
proxy.

See chat_agents.py for the servers and the five criteria. With ``--capture DIR`` the request
bodies ``cn`` sent are saved there as ``continue-<version>-<kind>-request.json``.

cn's output, the requests and ragproxy's log go to tests/e2e/output/continue-*.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.chat_agents import (  # noqa: E402
    CACHE,
    MODEL,
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


def continue_config(base_url: str, window: int) -> str:
    """The config file (YAML; JSON is YAML): one model, ragproxy's, for chat."""
    config = {
        "name": "ragproxy",
        "version": "0.0.1",
        "schema": "v1",
        "models": [
            {
                "name": "SmolLM2 135M",
                "provider": "openai",
                "model": MODEL,
                "apiBase": base_url + "/v1",
                "apiKey": "none",  # ragproxy has no keys here
                "roles": ["chat", "edit", "apply", "summarize"],
                "capabilities": ["tool_use"],
                "defaultCompletionOptions": {"contextLength": window, "maxTokens": OUTPUT_TOKENS},
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def continue_env(home: Path, refuser: str) -> dict[str, str]:
    env = base_env(home, refuser)
    global_dir = home / ".continue"
    global_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        CONTINUE_GLOBAL_DIR=str(global_dir),
        CONTINUE_CLI_ENABLE_TELEMETRY="0",
        CONTINUE_METRICS_ENABLED="0",
    )
    return env


def run(
    command: str, timeout: float, servers: Servers, home: Path, project: Path, refuser: str, result: Result
) -> None:
    config = home / "ragproxy.yaml"
    config.write_text(continue_config(servers.url, result.window))
    args = [command, "-p", QUESTION, "--config", str(config)]
    stdout, stderr = run_client("continue", args, continue_env(home, refuser), project, timeout, result)
    result.printed = stdout
    result.answer = stdout.strip()
    if stderr.strip():
        result.notes.append(f"cn's stderr: {stderr.strip()[:500]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cn", default=str(CACHE / "npm-continue" / "node_modules" / ".bin" / "cn"))
    parser.add_argument(
        "--window", type=int, choices=sorted(WINDOWS), default=8192, help="the model's window"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for cn -p")
    parser.add_argument("--capture", type=Path, help="save each chat request body cn sends here")
    args = parser.parse_args()
    done = subprocess.run([args.cn, "--version"], capture_output=True, text=True, timeout=60)
    version = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "unknown"
    return main_run(
        "continue",
        "Continue CLI (cn)",
        args.window,
        args.capture,
        version,
        lambda servers, home, project, refuser, result: run(
            args.cn, args.timeout, servers, home, project, refuser, result
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
