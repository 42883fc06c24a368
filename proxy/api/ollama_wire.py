"""The Ollama API as ragproxy serves it: requests in Ollama's shape get the same retrieval as
on the OpenAI path, and replies go back as Ollama's NDJSON lines, whichever API the upstream
speaks. With an Ollama upstream the lines are relayed (the sources footnote added before the
last one); with an OpenAI-compatible upstream the request and the reply are translated."""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.api.schemas import check_images, check_message_count, check_tools
from proxy.errors import BadRequest, UpstreamError
from proxy.pipeline import controls
from proxy.pipeline.call import ChatCall
from proxy.pipeline.chat import open_chat, timed_first
from proxy.settings import Settings
from proxy.upstream.client import Upstream
from proxy.upstream.frames import json_lines

OLLAMA_VERSION = "0.12.6"  # reported when the upstream is not Ollama (clients parse it)

_OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "top_k": "top_k",  # llama.cpp and vLLM accept these as extensions
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def validate(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The checks Ollama itself makes, with its messages."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model is required")
    if kind == "chat":
        messages = body.get("messages", [])
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages must be an array of objects")
        check_message_count(messages)
        for message in messages:
            if not isinstance(message.get("role", ""), str):
                raise BadRequest("message role must be a string")
            if not isinstance(message.get("content", ""), str):
                raise BadRequest("message content must be a string")
            check_images(message.get("images"))
            _check_tool_calls(message.get("tool_calls"))
        check_tools(body.get("tools"))
    else:
        for field in ("prompt", "system", "suffix", "template"):
            if not isinstance(body.get(field) or "", str):
                raise BadRequest(f"{field} must be a string")
        check_images(body.get("images"))
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("options must be an object")
    predict = (options or {}).get("num_predict")
    if predict is not None and (not isinstance(predict, int) or isinstance(predict, bool)):
        raise BadRequest("num_predict must be an integer")
    return body


def _check_tool_calls(calls: Any) -> None:
    """Ollama's calls: ``{"function": {"name", "arguments": {...}}}``, an ``id`` a string if given
    (an OpenAI-compatible upstream is sent them, and a llama.cpp server fails with 500 on others)."""
    if calls is None:
        return
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise BadRequest("tool_calls must be an array of objects")
    for call in calls:
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("tool_calls[].function must be an object with a name")
        if not isinstance(function.get("arguments") or {}, dict):
            raise BadRequest("tool_calls[].function.arguments must be an object")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise BadRequest("tool_calls[].id must be a string")


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A /api/generate body in /api/chat form, so retrieval treats both alike: ``system`` and
    ``prompt`` become messages."""
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    user: dict[str, Any] = {"role": "user", "content": body.get("prompt", "")}
    if body.get("images"):
        user["images"] = body["images"]
    messages.append(user)
    return {
        **{k: v for k, v in body.items() if k not in ("prompt", "system", "images")},
        "messages": messages,
    }


def back_to_generate(chat_body: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """The generate body again, with the context retrieval put into the messages."""
    messages = chat_body["messages"]
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
    prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    body = {k: v for k, v in chat_body.items() if k != "messages"}
    body["prompt"] = prompt
    if system:
        body["system"] = system
    if original.get("images"):
        body["images"] = original["images"]
    return body


def load_reply(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """Ollama's answer to a request that only loads (or, with ``keep_alive: 0``, unloads) a
    model."""
    unload = str(body.get("keep_alive")) in ("0", "0s", "0m", "0h", "0.0")
    out: dict[str, Any] = {"model": body["model"], "created_at": now()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return {**out, "done": True, "done_reason": "unload" if unload else "load"}


# -- relaying an Ollama upstream ---------------------------------------------------------------------
@asynccontextmanager
async def relay(
    upstream: Upstream, path: str, body: dict[str, Any], call: ChatCall, kind: str
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """The upstream's lines, the footnote added as one more line before the ``done`` line."""
    call.stats.upstream, sent = upstream.base, time.perf_counter()
    async with upstream.stream(path, {**body, "stream": True}, deadline=call.deadline(upstream)) as raw:
        yield _relayed(timed_first(raw, sent, call.stats), call, kind)


async def _relayed(raw: AsyncIterator[bytes], call: ChatCall, kind: str) -> AsyncIterator[dict[str, Any]]:
    tool_calls = False  # a turn of tool calls is not the answer yet: it gets no footnote
    async for data in json_lines(raw):
        if "error" in data:
            raise UpstreamError(str(data["error"]))
        tool_calls = tool_calls or bool((data.get("message") or {}).get("tool_calls"))
        if data.get("done"):
            if note := call.closing_text("tool_calls" if tool_calls else data.get("done_reason")):
                extra: dict[str, Any] = {"model": data.get("model"), "created_at": now()}
                if kind == "chat":
                    extra["message"] = {"role": "assistant", "content": note}
                else:
                    extra["response"] = note
                yield {**extra, "done": False}
            call.stats.finish_reason = data.get("done_reason")
            call.counted(data.get("prompt_eval_count"), data.get("eval_count"))
            yield data
            return
        yield data
    raise UpstreamError("upstream ended the reply before it was done")


# -- translating for an OpenAI-compatible upstream ------------------------------------------------------
def openai_body(body: dict[str, Any]) -> dict[str, Any]:
    """An Ollama chat body as an OpenAI chat body."""
    out: dict[str, Any] = {"model": body["model"], "messages": [], "stream": True}
    calls_by_name: dict[str, str] = {}
    for message in body.get("messages", []):
        role = message.get("role", "user")
        converted: dict[str, Any] = {"role": role, "content": message.get("content", "")}
        if message.get("images"):
            converted["content"] = [{"type": "text", "text": message.get("content", "")}] + [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                for image in message["images"]
            ]
        if message.get("tool_calls"):
            converted["tool_calls"] = []
            for i, call in enumerate(message["tool_calls"]):
                function = call.get("function") or {}
                call_id = call.get("id") or f"call_{len(calls_by_name)}_{i}"
                calls_by_name[function.get("name", "")] = call_id
                converted["tool_calls"].append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": function.get("name", ""),
                            "arguments": orjson.dumps(function.get("arguments") or {}).decode(),
                        },
                    }
                )
        if role == "tool":
            converted["tool_call_id"] = calls_by_name.get(message.get("tool_name", ""), "call_0")
        out["messages"].append(converted)
    for option, value in (body.get("options") or {}).items():
        if option == "num_predict" and value < 1:
            continue  # Ollama's "no limit" (-1, 0) and "fill the window" (-2): the server's own end
        if option in _OPTION_FIELDS:
            out[_OPTION_FIELDS[option]] = value
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


@asynccontextmanager
async def translated(
    upstream: Upstream, settings: Settings, call: ChatCall, kind: str
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    model = call.body["model"]
    translated_call = ChatCall(
        body=openai_body(call.body), include_usage=True, stats=call.stats, rag=call.rag, arrived=call.arrived
    )
    started = time.perf_counter_ns()
    async with open_chat(upstream, settings, translated_call) as chunks:
        yield _as_lines(chunks, model, kind, started)


async def _as_lines(
    chunks: AsyncIterator[dict[str, Any]], model: str, kind: str, started: int
) -> AsyncIterator[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    finish = "stop"
    first_token: int | None = None
    usage: dict[str, Any] = {}

    def line(
        content: str, thinking: str = "", tool_calls: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": now()}
        if kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            out["message"] = message
        else:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
        out["done"] = False
        return out

    async for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or ():
                into = calls.setdefault(call.get("index", len(calls)), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                into["name"] += function.get("name") or ""
                into["arguments"] += function.get("arguments") or ""
            content = delta.get("content") or ""
            thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if content or thinking:
                first_token = first_token or time.perf_counter_ns()
                yield line(content, thinking)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if calls:
        tool_calls = []
        for index in sorted(calls):
            try:
                arguments = orjson.loads(calls[index]["arguments"] or "{}")
            except orjson.JSONDecodeError:
                arguments = {"_raw": calls[index]["arguments"]}
            tool_calls.append({"function": {"name": calls[index]["name"], "arguments": arguments}})
        yield line("", tool_calls=tool_calls)
    ended = time.perf_counter_ns()
    final = line("")
    final.update(
        done=True,
        done_reason="length" if finish == "length" else "stop",
        total_duration=ended - started,
        load_duration=0,
        prompt_eval_count=int(usage.get("prompt_tokens") or 0),
        prompt_eval_duration=(first_token or ended) - started,
        eval_count=int(usage.get("completion_tokens") or 0),
        eval_duration=ended - (first_token or ended),
    )
    yield final


# -- one reply for stream: false --------------------------------------------------------------------------
def whole(lines: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The whole reply as one object, as Ollama answers ``stream: false``."""
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[Any] = []
    last: dict[str, Any] = {}
    for line in lines:
        last = line
        if kind == "chat":
            message = line.get("message") or {}
            texts.append(message.get("content") or "")
            thinking.append(message.get("thinking") or "")
            tool_calls += message.get("tool_calls") or []
        else:
            texts.append(line.get("response") or "")
            thinking.append(line.get("thinking") or "")
    out = dict(last)
    if kind == "chat":
        message = {**(last.get("message") or {"role": "assistant"}), "content": "".join(texts)}
        if any(thinking):
            message["thinking"] = "".join(thinking)
        if tool_calls:
            message["tool_calls"] = tool_calls
        out["message"] = message
    else:
        out["response"] = "".join(texts)
        if any(thinking):
            out["thinking"] = "".join(thinking)
    return out


# -- models ----------------------------------------------------------------------------------------------
def tags_with_aliases(tags: dict[str, Any], collections: list[str]) -> dict[str, Any]:
    models = []
    for entry in tags.get("models") or []:
        models.append(entry)
        for alias in controls.aliases(str(entry.get("name") or entry.get("model")), collections):
            models.append({**entry, "name": alias, "model": alias})
    return {**tags, "models": models}
