"""End-to-end check, run by hand through opencode.sh: the real opencode, with ragproxy as an
OpenAI-compatible provider (``/v1/chat/completions``), answers tests/ragdocs.py's QUESTION through
``opencode run``.

opencode gets a fresh home and a config file of its own (``OPENCODE_CONFIG``) naming ragproxy as
the provider ``ragproxy`` (``npm: @ai-sdk/openai-compatible``, bundled in opencode, with
``baseURL`` ragproxy's ``/v1``) and the test model as both its model and its small model (the one
that writes session titles). Nothing reaches outside: no autoupdate, no sharing, no models.dev
fetch, no LSP downloads, no external or default plugins, and every other connection goes to a
refusing proxy (opencode 1.18.33 still tries to install its plugin package into its config folder
in the background: the proxy refuses it, the summary reports it, opencode carries on). It runs
in an empty folder. ``opencode run`` quotes a message with spaces in it: the question reaches
ragproxy in double quotes.

See chat_agents.py for the servers and the five criteria. With ``--capture DIR`` the request
bodies opencode sent are saved there as ``opencode-<version>-<kind>-request.json``.

opencode's output, its log, the requests and ragproxy's log go to tests/e2e/output/opencode-*.
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


def opencode_config(base_url: str, window: int, timeout: float) -> dict[str, object]:
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": f"ragproxy/{MODEL}",
        "small_model": f"ragproxy/{MODEL}",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            "ragproxy": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "ragproxy",
                "options": {
                    "baseURL": base_url + "/v1",
                    "apiKey": "none",  # ragproxy has no keys here
                    # ragproxy's first byte comes once the upstream has read the prompt: minutes
                    "timeout": int(timeout * 1000),
                },
                "models": {
                    MODEL: {
                        "name": "SmolLM2 135M",
                        "tool_call": True,
                        "limit": {"context": window, "output": OUTPUT_TOKENS},
                    }
                },
            }
        },
    }


def opencode_env(home: Path, refuser: str, config: Path) -> dict[str, str]:
    env = base_env(home, refuser)
    env.update(
        OPENCODE_CONFIG=str(config),
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_SHARE="1",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_DEFAULT_PLUGINS="1",
        OPENCODE_DISABLE_EXTERNAL_SKILLS="1",
        OPENCODE_DISABLE_CLAUDE_CODE="1",
    )
    return env


def run(
    command: str, timeout: float, servers: Servers, home: Path, project: Path, refuser: str, result: Result
) -> None:
    config = home / "opencode.json"
    config.write_text(json.dumps(opencode_config(servers.url, result.window, timeout), indent=2))
    args = [
        command,
        "run",
        "--pure",
        "--print-logs",
        "--log-level",
        "INFO",
        "-m",
        f"ragproxy/{MODEL}",
        QUESTION,
    ]
    stdout, stderr = run_client(
        "opencode", args, opencode_env(home, refuser, config), project, timeout, result
    )
    # opencode run prints the answer as it streams, tool calls and their output as lines of their own
    result.printed = stdout
    result.answer = stdout.strip()
    errors = [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    for line in errors[:5]:
        result.notes.append(f"opencode's log: {line[:400]}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--opencode", default=str(CACHE / "npm-opencode" / "node_modules" / ".bin" / "opencode")
    )
    parser.add_argument(
        "--window", type=int, choices=sorted(WINDOWS), default=8192, help="the model's window"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for opencode run")
    parser.add_argument("--capture", type=Path, help="save each chat request body opencode sends here")
    args = parser.parse_args()
    version = subprocess.run(
        [args.opencode, "--version"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    OUTPUT.mkdir(exist_ok=True)
    return main_run(
        "opencode",
        "opencode",
        args.window,
        args.capture,
        version,
        lambda servers, home, project, refuser, result: run(
            args.opencode, args.timeout, servers, home, project, refuser, result
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
