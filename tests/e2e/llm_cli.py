"""End-to-end check, run by hand through llm_cli.sh: Simon Willison's ``llm`` command-line tool
(``llm`` from PyPI), with ragproxy as an OpenAI-compatible model, answers tests/ragdocs.py's
QUESTION: ``llm -m ragproxy-smollm2 "<question>"`` (``--tool llm_time`` adds ``-T llm_time``:
one of llm's own tools offered to the model, so that criterion (iv) has tools to follow).

llm gets a fresh LLM_USER_PATH whose extra-openai-models.yaml names the model with ragproxy's
/v1 as its ``api_base`` and tools allowed (llm then sends no key of its own: the official OpenAI
library with a placeholder key), and a fresh HOME. It streams the answer to its stdout, as a user sees it.

Passes on common.py's criteria (i) to (v). Everything llm sent (User-Agent, body) is recorded in
front of ragproxy and printed; ``--capture DIR`` saves it as
<DIR>/llm-<version>-openai-request.json. llm's output and ragproxy's log go to
tests/e2e/output/llm-*.
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

MODEL_ID = "ragproxy-smollm2"
TIMEOUT = 1800.0


def models_yaml(proxy: str) -> str:
    """extra-openai-models.yaml: ragproxy's /v1 as an OpenAI-compatible server."""
    return f"""\
- model_id: {MODEL_ID}
  model_name: "{MODEL}"
  api_base: "{proxy}/v1"
  supports_tools: true
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm", default=str(CACHE / "venv-llm" / "bin" / "llm"))
    parser.add_argument("--window", type=int, choices=sorted(WINDOWS), default=8192)
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        help="offer one of llm's own tools to the model (llm -T), e.g. llm_time; may repeat",
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for llm")
    parser.add_argument("--capture", type=Path, help="save the requests llm sent into this folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean-ups stop llama-server
    stem = "llm"
    # "openai-tools": a run with tools is saved (--capture) beside the plain one.
    result = Result("llm", "openai-tools" if args.tool else "openai", args.window)
    result.version = package_version(Path(args.llm).parent / "python", "llm")
    with servers(stem, args.window) as stack, refusing_proxy() as (refuser, seen):
        home, user_path, project = stack.work / "home", stack.work / "llm-user", stack.work / "project"
        user_path.mkdir()
        project.mkdir()
        (user_path / "extra-openai-models.yaml").write_text(models_yaml(stack.url), encoding="utf-8")
        env = client_env(home, refuser, LLM_USER_PATH=str(user_path))
        command = [args.llm, "-m", MODEL_ID, *(f"--tool={tool}" for tool in args.tool), QUESTION]
        run_client(command, env, project, args.timeout, result, stem)
        result.answer = result.output
        result.outside = list(seen)
        collect(stack, result, stem)
    if args.capture:
        for path in capture(result, args.capture):
            result.notes.append(f"captured {path.name}")
    return summary(result, "llm")


if __name__ == "__main__":
    sys.exit(main())
