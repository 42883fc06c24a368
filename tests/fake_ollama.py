"""A local HTTP server that behaves like Ollama's documented native API (ollama/ollama
docs/api.md: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/embed, the legacy
/api/embeddings, /api/pull, /api/copy, /api/delete, /api/version, NDJSON streaming, durations in
nanoseconds, ``message.thinking``, loading and unloading a model with an empty request), generating
real tokens by translating each request to a real llama.cpp server. Ollama itself cannot be
installed here; this stands in for it. ``/api/pull``, ``/api/copy`` and ``/api/delete`` only pretend:
nothing is downloaded or removed (a copy does become a known model).

The "thinking" models are the same small model held by a grammar to DeepSeek-R1's shape,
``<think>\n…\n</think>\n\nanswer``: ``smollm2-think`` returns the reasoning in
``message.thinking`` (Ollama today), ``smollm2-r1-legacy`` leaves it inline in the content (older
builds). Through ``/v1`` the thinking model's reasoning arrives in ``delta.reasoning``, as from
Ollama's OpenAI-compatible layer.

It is strict: a request field Ollama does not document is refused with a 400, so a proxy that
leaks OpenAI-only fields into Ollama requests fails its tests. It records every request it gets
(``GET /_test/requests``) including when the client went away, and plays faults on demand through
a model-name suffix: ``name@delay=1.5``, ``@die-after=3`` (cut the connection after 3 lines),
``@hang-after=2``, ``@error-after=2`` (an ``{"error"}`` line, as Ollama sends mid-stream),
``@status=503`` (the faults work for the streamed replies of /api/chat, /api/generate and
/api/pull), and ``@show-delay=30`` (/api/show answers after 30 s, the chat at once). It also
serves ``/v1/*`` by passing it to llama.cpp, with the same faults and recording, as Ollama serves
its OpenAI-compatible API beside the native one.

Run: python tests/fake_ollama.py --port P --llama URL [--context-length N] [--tool-choice auto]
(``--context-length``: the window /api/show and /api/ps report for every model, 8192 unless given;
``--tool-choice auto``: the model may answer in text beside tools, as with Ollama itself, instead
of being steered to call one whenever it is offered any)
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
import uvicorn

CHAT_FIELDS = {
    "model",
    "messages",
    "tools",
    "format",
    "options",
    "stream",
    "keep_alive",
    "think",
    "truncate",
    "shift",
    "logprobs",
    "top_logprobs",
}
MESSAGE_FIELDS = {"role", "content", "images", "tool_calls", "thinking", "tool_name"}
ROLES = {"system", "user", "assistant", "tool"}
OPTIONS = {
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "penalize_newline",
    "stop",
    "numa",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
}
EMBED_FIELDS = {"model", "input", "truncate", "options", "keep_alive", "dimensions"}
GENERATE_FIELDS = {
    "model",
    "prompt",
    "suffix",
    "images",
    "think",
    "format",
    "options",
    "system",
    "template",
    "stream",
    "raw",
    "keep_alive",
    "context",
}
EMBEDDINGS_FIELDS = {"model", "prompt", "options", "keep_alive"}
PULL_FIELDS = {"model", "name", "insecure", "stream"}
DELETE_FIELDS = {"model", "name"}
COPY_FIELDS = {"source", "destination"}
PULL_STATUSES = ("pulling manifest", "verifying sha256 digest", "writing manifest", "success")
MODIFIED = "2025-01-28T10:00:00.000000000Z"
THINK_GRAMMAR = (
    'root ::= "<think>\\n" thought "\\n</think>\\n\\n" answer\n'
    "thought ::= [^<\\n]{10,300}\n"
    "answer ::= [^<]+\n"
)
OPEN, CLOSE = "<think>\n", "\n</think>"


class ThinkingSplit:
    """Splits the grammar-shaped text into thinking and content as it grows."""

    def __init__(self) -> None:
        self.text = ""
        self.sent_thinking = 0
        self.sent_content = 0

    def feed(self, piece: str) -> tuple[str, str]:
        self.text += piece
        body = self.text[len(OPEN) :] if self.text.startswith(OPEN) else ""
        end = body.find(CLOSE)
        if end < 0:
            keep = next((n for n in range(len(CLOSE), 0, -1) if body.endswith(CLOSE[:n])), 0)
            thinking, content = body[: len(body) - keep], ""
        else:
            thinking, content = body[:end], body[end + len(CLOSE) :].lstrip("\n")
        new = thinking[self.sent_thinking :], content[self.sent_content :]
        self.sent_thinking, self.sent_content = len(thinking), len(content)
        return new


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now(later: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=later)).isoformat().replace("+00:00", "Z")


def unloads(keep_alive: Any) -> bool:
    """Whether ``keep_alive`` is zero, which with an empty request unloads the model (Ollama
    reads a number as seconds and a string as a Go duration: ``0``, ``"0"``, ``"0s"``...)."""
    if isinstance(keep_alive, bool):
        return False
    if isinstance(keep_alive, int | float):
        return keep_alive == 0
    if isinstance(keep_alive, str):
        return re.fullmatch(r"[+-]?0*(\.0*)?(ns|us|µs|ms|s|m|h)?", keep_alive.strip()) is not None and any(
            c.isdigit() for c in keep_alive
        )
    return False


class FakeOllama:
    def __init__(self, llama_url: str, context_length: int = 8192, tool_choice: str = "required") -> None:
        self.llama = llama_url
        self.context_length = context_length
        self.tool_choice = tool_choice
        self.models: dict[str, dict[str, Any]] = {
            "smollm2:135m": {"thinking": None, "capabilities": ["completion", "tools"]},
            "smollm2-think:135m": {"thinking": "field", "capabilities": ["completion", "thinking"]},
            "smollm2-r1-legacy:135m": {"thinking": "inline", "capabilities": ["completion"]},
        }
        self.records: list[dict[str, Any]] = []
        # llama-server sends nothing until it has read the prompt: an agent's (20,000 tokens and
        # more) takes over ten minutes on two busy cores.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(3600, connect=5), trust_env=False)

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.http.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "started": time.time(),
            "disconnected_at": None,
            "finished": None,
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        }
        if not path.startswith("/_test"):
            self.records.append(record)
        try:
            data = orjson.loads(body) if body else None
            record["body"] = data
            await self.route(method, path, data, record, receive, send)
        except Refused as exc:
            await self.send_json(send, exc.status, {"error": exc.message})
        except orjson.JSONDecodeError:
            await self.send_json(send, 400, {"error": "invalid character in request body"})
        finally:
            record["finished"] = time.time()

    async def route(
        self, method: str, path: str, data: Any, record: dict[str, Any], receive: Any, send: Any
    ) -> None:
        if path == "/_test/requests":
            if method == "DELETE":
                self.records.clear()
            await self.send_json(send, 200, self.records)
        elif method == "GET" and path == "/":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Ollama is running"})
        elif method == "GET" and path == "/api/version":
            await self.send_json(send, 200, {"version": "0.12.6"})
        elif method == "GET" and path == "/api/tags":
            await self.send_json(send, 200, {"models": [self.tag(name) for name in self.models]})
        elif method == "POST" and path == "/api/show":
            name, faults = self.model(data)
            if "show-delay" in faults:  # silent until then, or until the client gives up
                await self.watching(receive, record, anyio.sleep(float(faults["show-delay"])))
                if record["disconnected_at"]:
                    return
            await self.send_json(
                send,
                200,
                {
                    "modelfile": "",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "modified_at": MODIFIED,
                    "details": self.tag(name)["details"],
                    "model_info": {
                        "general.architecture": "llama",
                        "llama.context_length": self.context_length,
                    },
                    "capabilities": self.models[name]["capabilities"],
                },
            )
        elif method == "GET" and path == "/api/ps":
            await self.send_json(send, 200, {"models": [self.running(next(iter(self.models)))]})
        elif method == "POST" and path == "/api/chat":
            await self.chat(data, record, receive, send)
        elif method == "POST" and path == "/api/generate":
            await self.generate(data, record, receive, send)
        elif method == "POST" and path == "/api/embed":
            await self.embed(data, send)
        elif method == "POST" and path == "/api/embeddings":
            await self.embeddings(data, send)
        elif method == "POST" and path == "/api/pull":
            await self.pull(data, record, receive, send)
        elif method == "POST" and path == "/api/copy":
            await self.copy(data, send)
        elif method == "DELETE" and path == "/api/delete":
            await self.delete(data, send)
        elif path.startswith("/v1/"):
            await self.openai_passthrough(method, path, data, record, receive, send)
        else:
            await send(
                {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"404 page not found"})

    @staticmethod
    async def send_empty(send: Any) -> None:
        """A 200 with no body, as Ollama answers /api/copy and /api/delete."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def send_json(send: Any, status: int, payload: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(payload)})

    # -- models ----------------------------------------------------------------------------
    def tag(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": MODIFIED,
            "size": 98362432,
            "digest": "0" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "135M",
                "quantization_level": "Q4_1",
            },
        }

    def running(self, name: str) -> dict[str, Any]:
        """``name`` as /api/ps lists a loaded model."""
        tag = self.tag(name)
        return {
            "name": name,
            "model": name,
            "size": tag["size"],
            "digest": tag["digest"],
            "details": tag["details"],
            "expires_at": now(later=300),
            "size_vram": 0,
            "context_length": self.context_length,
        }

    @staticmethod
    def canonical(name: str) -> str:
        """``name`` with Ollama's default tag when it has none (``x`` is ``x:latest``)."""
        return name if ":" in name.rpartition("/")[2] else name + ":latest"

    def model(self, data: Any) -> tuple[str, dict[str, str]]:
        """The model a request names, and the faults asked for with ``@``."""
        if not isinstance(data, dict):
            raise Refused(400, "invalid request body")
        raw = data.get("model") or data.get("name")
        if not isinstance(raw, str) or not raw:
            raise Refused(400, "model is required")
        name, _, fault_text = raw.partition("@")
        faults = dict(item.split("=", 1) for item in fault_text.split(",") if "=" in item)
        if name not in self.models and self.canonical(name) in self.models:
            name = self.canonical(name)
        if name not in self.models:
            raise Refused(404, f'model "{name}" not found, try pulling it first')
        if "status" in faults:
            raise Refused(
                int(faults["status"]), "server busy, please try again.  maximum pending requests exceeded"
            )
        return name, faults

    # -- /api/chat ---------------------------------------------------------------------------
    def check_chat(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise Refused(400, "invalid request body")
        unknown = set(data) - CHAT_FIELDS
        if unknown:
            raise Refused(400, f"unknown request fields: {sorted(unknown)}")
        if not isinstance(data.get("messages", []), list):
            raise Refused(400, "messages must be an array")
        for message in data.get("messages", []):
            if not isinstance(message, dict) or set(message) - MESSAGE_FIELDS:
                raise Refused(400, f"invalid message: {message!r}")
            if message.get("role") not in ROLES:
                raise Refused(400, f"invalid role {message.get('role')!r}")
            if not isinstance(message.get("content", ""), str):
                raise Refused(400, "message content must be a string")
            for call in message.get("tool_calls") or ():
                if not isinstance((call.get("function") or {}).get("arguments"), dict):
                    raise Refused(400, "tool call arguments must be an object")
        self.check_options(data)

    @staticmethod
    def check_options(data: dict[str, Any]) -> None:
        """The checks /api/chat and /api/generate share: ``options`` and ``think``."""
        options = data.get("options") or {}
        if not isinstance(options, dict) or set(options) - OPTIONS:
            raise Refused(400, f"invalid options: {sorted(set(options) - OPTIONS)}")
        if "think" in data and not isinstance(data["think"], bool | str):
            raise Refused(400, "think must be a boolean or a level")

    def check_tools(self, name: str, data: dict[str, Any]) -> None:
        """Ollama refuses tools for a model whose capabilities lack them, naming it in full."""
        if data.get("tools") and "tools" not in self.models[name]["capabilities"]:
            raise Refused(400, f"registry.ollama.ai/library/{name} does not support tools")

    @staticmethod
    def loaded(data: dict[str, Any], kind: str) -> dict[str, Any]:
        """Ollama's one-object answer to an empty request: it only loads (or, with
        ``keep_alive`` 0, unloads) the model."""
        reply: dict[str, Any] = {"model": data["model"], "created_at": now()}
        if kind == "chat":
            reply["message"] = {"role": "assistant", "content": ""}
        else:
            reply["response"] = ""
        reply["done"] = True
        reply["done_reason"] = "unload" if unloads(data.get("keep_alive")) else "load"
        return reply

    def llama_body(self, data: dict[str, Any], thinking: str | None) -> dict[str, Any]:
        messages = []
        for message in data["messages"]:
            out = {"role": message["role"], "content": message.get("content", "")}
            if message.get("tool_calls"):
                out["tool_calls"] = [
                    {
                        "id": call.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {
                            "name": call["function"]["name"],
                            "arguments": orjson.dumps(call["function"]["arguments"]).decode(),
                        },
                    }
                    for i, call in enumerate(message["tool_calls"])
                ]
            messages.append(out)
        options = data.get("options") or {}
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if thinking:
            body["grammar"] = THINK_GRAMMAR
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "seed",
            "stop",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            if name in options:
                body[name] = options[name]
        if options.get("num_predict", -1) >= 0:
            body["max_tokens"] = options["num_predict"]
        if data.get("format") == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(data.get("format"), dict):
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": data["format"]}}
        if data.get("tools") and self.tool_choice == "auto":
            body["tools"] = data["tools"]  # the model's own choice, as with Ollama
        elif data.get("tools"):
            # A tool-capable model that calls a tool whenever it is offered one: the tiny model
            # is steered to start with "<" (token 44) and stopped after its first call.
            body.update(
                tools=data["tools"], tool_choice="required", logit_bias={"44": 5}, stop=["</tool_call>"]
            )
        return body

    async def chat(self, data: Any, record: dict[str, Any], receive: Any, send: Any) -> None:
        name, faults = self.model(data)
        self.check_chat(data)
        if not data.get("messages") and unloads(data.get("keep_alive")):
            await self.send_json(send, 200, self.loaded(data, "chat"))
            return
        self.check_tools(name, data)
        if not data.get("messages"):
            await self.send_json(send, 200, self.loaded(data, "chat"))
            return
        thinking = self.models[name]["thinking"] if data.get("think", True) is not False else None
        body = self.llama_body(data, thinking)
        await self.complete(data, faults, body, thinking, record, receive, send, kind="chat")

    # -- /api/generate -----------------------------------------------------------------------
    def check_generate(self, data: dict[str, Any]) -> None:
        unknown = set(data) - GENERATE_FIELDS
        if unknown:
            raise Refused(400, f"unknown request fields: {sorted(unknown)}")
        for field in ("prompt", "suffix", "system", "template"):
            if not isinstance(data.get(field, ""), str):
                raise Refused(400, f"{field} must be a string")
        images = data.get("images") or []
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise Refused(400, "images must be an array of base64-encoded strings")
        context = data.get("context") or []
        if not isinstance(context, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in context
        ):
            raise Refused(400, "context must be an array of integers")
        if not isinstance(data.get("raw", False), bool):
            raise Refused(400, "raw must be a boolean")
        self.check_options(data)

    async def generate(self, data: Any, record: dict[str, Any], receive: Any, send: Any) -> None:
        name, faults = self.model(data)
        self.check_generate(data)
        if not data.get("prompt"):
            await self.send_json(send, 200, self.loaded(data, "generate"))
            return
        messages = [{"role": "system", "content": data["system"]}] if data.get("system") else []
        messages.append({"role": "user", "content": data["prompt"]})
        thinking = self.models[name]["thinking"] if data.get("think", True) is not False else None
        body = self.llama_body(
            {"messages": messages, "options": data.get("options"), "format": data.get("format")}, thinking
        )
        await self.complete(data, faults, body, thinking, record, receive, send, kind="generate")

    # -- generation shared by /api/chat and /api/generate ---------------------------------------
    async def complete(
        self,
        data: dict[str, Any],
        faults: dict[str, str],
        body: dict[str, Any],
        thinking: str | None,
        record: dict[str, Any],
        receive: Any,
        send: Any,
        *,
        kind: str,
    ) -> None:
        """Generates on llama.cpp and answers as /api/chat (``message``) or /api/generate
        (``response``) does, streamed as NDJSON or, with ``stream: false``, in one object."""
        split = ThinkingSplit() if thinking == "field" else None
        stream = data.get("stream", True)
        started = time.monotonic_ns()
        lines: list[dict[str, Any]] = []

        def line(content: str, thought: str, **extra: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"model": data["model"], "created_at": now()}
            if kind == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if thought:
                    message["thinking"] = thought
                out["message"] = message
            else:
                out["response"] = content
                if thought:
                    out["thinking"] = thought
            return out | extra

        async def produce(emit: Any) -> None:
            await anyio.sleep(float(faults.get("delay", 0)))
            async with self.http.stream("POST", self.llama + "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise Refused(response.status_code, (await response.aread()).decode())
                usage: dict[str, Any] = {}
                timings: dict[str, Any] = {}
                finish = "stop"
                calls: list[dict[str, Any]] = []
                async for text in response.aiter_lines():
                    if not text.startswith("data: ") or text == "data: [DONE]":
                        continue
                    chunk = orjson.loads(text[6:])
                    usage = chunk.get("usage") or usage
                    timings = chunk.get("timings") or timings
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content, thought = delta.get("content") or "", ""
                        if split is not None:
                            thought, content = split.feed(content)
                        for call in delta.get("tool_calls") or ():
                            if call.get("function", {}).get("name"):
                                calls.append(
                                    {"function": {"name": call["function"]["name"], "arguments": ""}}
                                )
                            if calls:
                                calls[-1]["function"]["arguments"] += (
                                    call.get("function", {}).get("arguments") or ""
                                )
                        finish = choice.get("finish_reason") or finish
                        if content or thought:
                            await emit(line(content, thought, done=False))
                final = line("", "", done=True, done_reason="length" if finish == "length" else "stop")
                if calls:
                    final["message"]["tool_calls"] = [
                        {
                            "function": {
                                "name": c["function"]["name"],
                                "arguments": orjson.loads(c["function"]["arguments"] or "{}"),
                            }
                        }
                        for c in calls
                    ]
                prompt_tokens = usage.get("prompt_tokens", 0)
                eval_tokens = usage.get("completion_tokens", 0)
                if kind == "generate" and not data.get("raw"):
                    # Ollama's (deprecated) encoding of the conversation, to send back as
                    # ``context``: here a short stand-in the size of neither prompt nor answer.
                    final["context"] = list(range(1, min(prompt_tokens + eval_tokens, 8) + 1))
                final |= {
                    "total_duration": time.monotonic_ns() - started,
                    "load_duration": 1_000_000,
                    "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": int(timings.get("prompt_ms", 0) * 1e6),
                    "eval_count": eval_tokens,
                    "eval_duration": int(timings.get("predicted_ms", 0) * 1e6),
                }
                await emit(final)

        if not stream:

            async def collect(item: dict[str, Any]) -> None:
                lines.append(item)

            await self.watching(receive, record, produce(collect))
            if lines:
                final = lines[-1]
                if kind == "chat":
                    final["message"]["content"] = "".join(item["message"]["content"] for item in lines)
                    thought = "".join(item["message"].get("thinking", "") for item in lines)
                    if thought:
                        final["message"]["thinking"] = thought
                else:
                    thought = "".join(item.get("thinking", "") for item in lines)
                    head = {
                        "model": final["model"],
                        "created_at": final["created_at"],
                        "response": "".join(item["response"] for item in lines),
                    }
                    rest = {key: value for key, value in final.items() if key not in head}
                    final = head | ({"thinking": thought} if thought else {}) | rest
                await self.send_json(send, 200, final)
            return
        await self.stream_lines(produce, faults, record, receive, send, ndjson=True)

    async def stream_lines(
        self,
        produce: Any,
        faults: dict[str, str],
        record: dict[str, Any],
        receive: Any,
        send: Any,
        *,
        ndjson: bool,
    ) -> None:
        started = False
        count = 0

        async def emit(item: Any) -> None:
            nonlocal started, count
            if not started:
                content_type = b"application/x-ndjson" if ndjson else b"text/event-stream"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", content_type)],
                    }
                )
                started = True
            if "error-after" in faults and count == int(faults["error-after"]):
                payload = {"error": "an error was encountered while running the model"}
                await send(
                    {
                        "type": "http.response.body",
                        "more_body": False,
                        "body": orjson.dumps(payload) + b"\n"
                        if ndjson
                        else b"data: " + orjson.dumps(payload) + b"\n\n",
                    }
                )
                raise _Stop
            if "die-after" in faults and count == int(faults["die-after"]):
                raise ConnectionAbortedError("fault: upstream died mid-stream")
            if "hang-after" in faults and count == int(faults["hang-after"]):
                await anyio.sleep(3600)
            body = orjson.dumps(item) + b"\n" if ndjson else item
            await send({"type": "http.response.body", "body": body, "more_body": True})
            count += 1

        try:
            await self.watching(receive, record, produce(emit))
        except _Stop:
            return
        except Refused as exc:
            if started:
                raise
            await self.send_json(send, exc.status, {"error": exc.message})
            return
        if started:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def watching(receive: Any, record: dict[str, Any], work: Any) -> None:
        """Runs ``work``; if the client disconnects first, notes when and cancels it (closing
        the request to llama.cpp, which then stops generating)."""
        tasks: anyio.abc.TaskGroup

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            record["disconnected_at"] = time.time()
            tasks.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                try:
                    await work
                finally:
                    tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    # -- /api/embed --------------------------------------------------------------------------
    async def embed(self, data: Any, send: Any) -> None:
        name, _ = self.model(data)
        if set(data) - EMBED_FIELDS:
            raise Refused(400, f"unknown request fields: {sorted(set(data) - EMBED_FIELDS)}")
        texts = data.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise Refused(400, "invalid input type")
        started = time.monotonic_ns()
        response = await self.http.post(self.llama + "/v1/embeddings", json={"input": texts})
        reply = response.json()
        vectors = [item["embedding"] for item in sorted(reply["data"], key=lambda item: item["index"])]
        if data.get("dimensions"):
            vectors = [v[: data["dimensions"]] for v in vectors]
        await self.send_json(
            send,
            200,
            {
                "model": data["model"],
                "embeddings": vectors,
                "total_duration": time.monotonic_ns() - started,
                "load_duration": 1000,
                "prompt_eval_count": reply.get("usage", {}).get("prompt_tokens", 0),
            },
        )

    # -- /api/embeddings (legacy) ------------------------------------------------------------
    async def embeddings(self, data: Any, send: Any) -> None:
        self.model(data)
        if set(data) - EMBEDDINGS_FIELDS:
            raise Refused(400, f"unknown request fields: {sorted(set(data) - EMBEDDINGS_FIELDS)}")
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            raise Refused(400, "prompt must be a string")
        self.check_options(data)
        if not prompt:
            # As Ollama: an empty prompt only loads the model.
            await self.send_json(send, 200, {"embedding": []})
            return
        response = await self.http.post(self.llama + "/v1/embeddings", json={"input": [prompt]})
        if response.status_code != 200:
            raise Refused(response.status_code, response.text)
        await self.send_json(send, 200, {"embedding": response.json()["data"][0]["embedding"]})

    # -- /api/pull, /api/copy, /api/delete ---------------------------------------------------
    async def pull(self, data: Any, record: dict[str, Any], receive: Any, send: Any) -> None:
        """Pretends to pull a model it already has; one it does not know is not in the registry."""
        try:
            _, faults = self.model(data)
        except Refused as exc:
            if exc.status == 404:
                raise Refused(404, "pull model manifest: file does not exist") from None
            raise
        if set(data) - PULL_FIELDS:
            raise Refused(400, f"unknown request fields: {sorted(set(data) - PULL_FIELDS)}")
        if not data.get("stream", True):
            await self.send_json(send, 200, {"status": "success"})
            return

        async def produce(emit: Any) -> None:
            await anyio.sleep(float(faults.get("delay", 0)))
            for status in PULL_STATUSES:
                await emit({"status": status})

        await self.stream_lines(produce, faults, record, receive, send, ndjson=True)

    async def delete(self, data: Any, send: Any) -> None:
        """Answers as Ollama does for a model it has, but keeps the model."""
        try:
            self.model(data)
        except Refused as exc:
            if exc.status == 404:
                raise Refused(404, f"model '{data.get('model') or data.get('name')}' not found") from None
            raise
        if set(data) - DELETE_FIELDS:
            raise Refused(400, f"unknown request fields: {sorted(set(data) - DELETE_FIELDS)}")
        await self.send_empty(send)

    async def copy(self, data: Any, send: Any) -> None:
        """Makes ``destination`` a known model with the properties of ``source``."""
        if not isinstance(data, dict):
            raise Refused(400, "invalid request body")
        if set(data) - COPY_FIELDS:
            raise Refused(400, f"unknown request fields: {sorted(set(data) - COPY_FIELDS)}")
        source, destination = data.get("source"), data.get("destination")
        if not isinstance(source, str) or not isinstance(destination, str) or not source or not destination:
            raise Refused(400, "source and destination are required")
        if "@" in destination or any(c.isspace() for c in destination):
            raise Refused(400, f'destination "{destination}" is invalid')
        try:
            name, _ = self.model({"model": source})
        except Refused as exc:
            if exc.status == 404:
                raise Refused(404, f'model "{source}" not found') from None
            raise
        model = self.models[name]
        self.models[self.canonical(destination)] = {**model, "capabilities": list(model["capabilities"])}
        await self.send_empty(send)

    # -- /v1/* ---------------------------------------------------------------------------------
    async def openai_passthrough(
        self, method: str, path: str, data: Any, record: dict[str, Any], receive: Any, send: Any
    ) -> None:
        faults: dict[str, str] = {}
        url = self.llama
        split = None
        if isinstance(data, dict) and isinstance(data.get("model"), str) and "@" in data["model"]:
            name, faults = self.model(data)
            data = {**data, "model": name}
        if isinstance(data, dict) and str(data.get("model", "")).startswith("smollm2-think"):
            data = {**data, "grammar": THINK_GRAMMAR}
            split = ThinkingSplit()
        if not (isinstance(data, dict) and data.get("stream")):

            async def plain() -> None:
                await anyio.sleep(float(faults.get("delay", 0)))
                response = await self.http.request(method, url + path, json=data)
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": response.content})

            await self.watching(receive, record, plain())
            return

        async def produce(emit: Any) -> None:
            await anyio.sleep(float(faults.get("delay", 0)))
            async with self.http.stream(method, url + path, json=data) as response:
                if response.status_code != 200:
                    raise Refused(response.status_code, (await response.aread()).decode())
                async for line in response.aiter_lines():
                    if split is not None and line.startswith("data: {"):
                        chunk = orjson.loads(line[6:])
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta") or {}
                            if isinstance(delta.get("content"), str):
                                thought, delta["content"] = split.feed(delta["content"])
                                if thought:
                                    delta["reasoning"] = thought
                        line = "data: " + orjson.dumps(chunk).decode()
                    if line.startswith("data: "):
                        await emit(line.encode() + b"\n\n")

        await self.stream_lines(produce, faults, record, receive, send, ndjson=False)


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llama", required=True, help="URL of the llama-server that generates")
    parser.add_argument("--context-length", type=int, default=8192, help="the window /api/show reports")
    parser.add_argument(
        "--tool-choice",
        choices=("required", "auto"),
        default="required",
        help="with tools offered: always call one (the default), or let the model choose",
    )
    args = parser.parse_args()
    app = FakeOllama(args.llama, context_length=args.context_length, tool_choice=args.tool_choice)
    uvicorn.run(app, host=args.host, port=args.port, log_level="critical", lifespan="on")


if __name__ == "__main__":
    main()
