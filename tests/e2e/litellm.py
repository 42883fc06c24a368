"""End-to-end check, run by hand through litellm.sh: LiteLLM as a library (``litellm`` from PyPI),
pointed at ragproxy, answers tests/ragdocs.py's QUESTION in a short program that prints the
reply to its stdout, as a script using LiteLLM would:

  openai  ``litellm.completion(model="openai/smollm2", api_base=<ragproxy>/v1, api_key=...)``
          (LiteLLM's OpenAI provider, through the official OpenAI library): /v1/chat/completions
  ollama  ``litellm.completion(model="ollama_chat/smollm2", api_base=<ragproxy>)`` (LiteLLM's
          own Ollama client): /api/chat

``--stream`` asks for a streamed reply (printed as it comes); by default the whole reply at once.
``--tools`` offers the model one function (``lookup_part``), so that criterion (iv) has tools to
follow.
The program runs in LiteLLM's own venv, in an empty folder, with a fresh HOME.

Passes on common.py's criteria (i) to (v). Everything LiteLLM sent (User-Agent, body) is
recorded in front of ragproxy and printed; ``--capture DIR`` saves it as
<DIR>/litellm-<version>-<mode>-request.json (and any further request beside it). The program's
output and ragproxy's log go to tests/e2e/output/litellm-<mode>-*.
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

TIMEOUT = 1800.0
# The program a user of the library would write: one completion, its text printed.
# With "tools", one function is offered; a call the model makes is printed to stderr (it is not
# an answer).
PROGRAM = """\
import sys

import litellm

model, api_base, question, stream, tools, timeout = sys.argv[1:7]
kwargs = {"model": model, "api_base": api_base, "timeout": float(timeout)}
if model.startswith("openai/"):
    kwargs["api_key"] = "sk-ragproxy-e2e"  # any key: ragproxy has none here
if tools == "tools":
    kwargs["tools"] = [
        {
            "type": "function",
            "function": {
                "name": "lookup_part",
                "description": "Look a part up in the parts catalogue by its name.",
                "parameters": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
        }
    ]
messages = [{"role": "user", "content": question}]
if stream == "stream":
    for chunk in litellm.completion(messages=messages, stream=True, **kwargs):
        delta = chunk.choices[0].delta
        print(delta.content or "", end="", flush=True)
        for call in getattr(delta, "tool_calls", None) or ():
            print("tool call:", call.function.name, call.function.arguments, file=sys.stderr)
    print()
else:
    message = litellm.completion(messages=messages, **kwargs).choices[0].message
    print(message.content or "")
    for call in message.tool_calls or ():
        print("tool call:", call.function.name, call.function.arguments, file=sys.stderr)
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default=str(CACHE / "venv-litellm" / "bin" / "python"))
    parser.add_argument("--mode", choices=("openai", "ollama"), default="openai")
    parser.add_argument("--window", type=int, choices=sorted(WINDOWS), default=8192)
    parser.add_argument("--stream", action="store_true", help="ask for a streamed reply")
    parser.add_argument("--tools", action="store_true", help="offer the model one function")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for the program")
    parser.add_argument("--capture", type=Path, help="save the requests LiteLLM sent into this folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean-ups stop llama-server
    stem = f"litellm-{args.mode}"
    # "<mode>-tools": a run with tools is saved (--capture) beside the plain one.
    result = Result("litellm", args.mode + ("-tools" if args.tools else ""), args.window)
    result.version = package_version(Path(args.python), "litellm")
    if args.stream:
        result.notes.append("streamed reply (--stream)")
    with servers(stem, args.window) as stack, refusing_proxy() as (refuser, seen):
        home, project = stack.work / "home", stack.work / "project"
        project.mkdir()
        program = project / "ask.py"
        program.write_text(PROGRAM, encoding="utf-8")
        if args.mode == "openai":
            model, api_base = "openai/" + MODEL, stack.url + "/v1"
        else:
            model, api_base = "ollama_chat/" + MODEL, stack.url
        command = [args.python, str(program), model, api_base, QUESTION]
        command += [
            "stream" if args.stream else "whole",
            "tools" if args.tools else "none",
            str(args.timeout),
        ]
        run_client(command, client_env(home, refuser), project, args.timeout, result, stem)
        result.answer = result.output
        result.outside = list(seen)
        collect(stack, result, stem)
    if args.capture:
        for path in capture(result, args.capture):
            result.notes.append(f"captured {path.name}")
    return summary(result, "LiteLLM")


if __name__ == "__main__":
    sys.exit(main())
