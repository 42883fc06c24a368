"""The Anthropic Messages wire (Claude Code, Claude Desktop, the ``anthropic`` SDK), translated to
the one internal chat form and back: a request body becomes a chat body; the chat's chunks become
Messages stream events (or one message).

The model's thinking becomes ``thinking`` blocks when the request asks for thinking, and is left
out otherwise. Server tools (web search, code execution, ...) are not offered to the model.
Claude model names (what Claude Code sends unless told otherwise) mean the default model."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.api.schemas import is_base64
from proxy.errors import BadRequest

SIGNATURE = "ragproxy"  # thinking blocks need one; nothing checks it, ragproxy drops them from history


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Wire:
    model: str  # as the client named it
    thinking: bool  # whether thinking blocks are wanted
    dropped_tools: list[str]


def to_chat(body: dict[str, Any], default_model: str) -> tuple[dict[str, Any], Wire]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a string")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _system_text(system, "system")})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("'messages' must be a non-empty array")
    for i, turn in enumerate(turns):
        _add_turn(messages, turn, f"messages.{i}")
    thinking = body.get("thinking")
    wants_thinking = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    wire = Wire(model, wants_thinking, [])
    chat: dict[str, Any] = {
        "model": default_model if model.startswith("claude") else model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if isinstance(thinking, dict) and thinking.get("type") == "disabled":
        chat["reasoning_effort"] = "none"
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if isinstance(body.get("top_k"), int):
        chat["top_k"] = body["top_k"]
    if body.get("stop_sequences") is not None:
        chat["stop"] = body["stop_sequences"]
    if (response_format := _response_format(body)) is not None:
        chat["response_format"] = response_format
    tools = _tools(body.get("tools"), wire)
    if tools:
        chat["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind in ("auto", "none"):
                chat["tool_choice"] = kind
            elif kind == "any":
                chat["tool_choice"] = "required"
            elif kind == "tool" and isinstance(choice.get("name"), str):
                chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            if choice.get("disable_parallel_tool_use") is True:
                chat["parallel_tool_calls"] = False
    return chat, wire


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Structured outputs: ``output_config.format`` (Claude Code's titles and ``--json-schema``)
    or the beta's ``output_format``, ``{"type": "json_schema", "schema": ...}``."""
    config = body.get("output_config")
    form = (config.get("format") if isinstance(config, dict) else None) or body.get("output_format")
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return None
    if not isinstance(form.get("schema"), dict):
        raise BadRequest("'output_config.format.schema' must be a JSON schema object")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": form["schema"]}}


def _system_text(system: Any, where: str) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(
            block["text"]
            for block in system
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    raise BadRequest(f"'{where}' must be a string or an array of text blocks")


def _add_turn(messages: list[dict[str, Any]], turn: Any, where: str) -> None:
    if not isinstance(turn, dict):
        raise BadRequest(f"'{where}' must be an object")
    role = turn.get("role")
    content = turn.get("content")
    if role == "system":  # mid-conversation instructions (Claude Code sends them)
        messages.append({"role": "system", "content": _system_text(content, f"{where}.content")})
        return
    if role not in ("user", "assistant"):
        raise BadRequest(f"'{where}.role' must be user or assistant")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be a string or an array of blocks")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            url = _image_url(block, f"{where}.content.{j}")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise BadRequest(f"'{where}.content.{j}' needs 'id' and 'name'")
            function = {"name": name, "arguments": arguments}
            calls.append({"id": call_id, "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise BadRequest(f"'{where}.content.{j}.tool_use_id' must be a string")
            text = _result_text(block.get("content"))
            if block.get("is_error") is True:
                text = "Error: " + text
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        elif kind == "document" and isinstance((block.get("source") or {}).get("data"), str):
            if (block.get("source") or {}).get("type") == "text":
                parts.append({"type": "text", "text": block["source"]["data"]})
        # thinking (ragproxy keeps no reasoning in history) and server tools' blocks: left out
    messages.extend(results)  # tool results answer the assistant's calls: they come first
    if role == "assistant":
        text = "".join(part["text"] for part in parts if part["type"] == "text")
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        if text or calls:
            messages.append(message)
    elif parts:
        messages.append({"role": "user", "content": parts})


def _image_url(block: dict[str, Any], where: str) -> str:
    given = block.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        if not is_base64(source["data"]):
            raise BadRequest(f"'{where}.source.data' must be base64 data")
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        if not source["url"][:8].lower().startswith(("http://", "https://")):
            raise BadRequest(f"'{where}.source.url' must be an http(s) URL")
        return str(source["url"])
    raise BadRequest(f"'{where}.source' must be a base64 or url image source")


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _tools(tools: Any, wire: Wire) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array")
    chat = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(f"'tools.{i}.name' must be a string")
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            wire.dropped_tools.append(str(tool.get("type") or tool["name"]))  # a server tool
            continue
        if not isinstance(tool["input_schema"], dict):
            raise BadRequest(f"'tools.{i}.input_schema' must be a JSON schema object")
        chat.append(
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": tool["input_schema"],
                },
            }
        )
    return chat


# -- reply ------------------------------------------------------------------------------------------
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class Encoder:
    """Chat chunks in, Messages stream events out: ``message_start``, then each content block
    started, filled and stopped in order (thinking, text, tool use), then ``message_delta``
    with the stop reason and usage, and ``message_stop``."""

    def __init__(self, wire: Wire, input_estimate: Callable[[], int] = lambda: 0) -> None:
        self.wire = wire
        self.id = new_id("msg")
        self.content: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self._input_estimate = input_estimate  # known once retrieval has run
        self.input_tokens = 0
        self.output_tokens = 0
        self.extra: dict[str, Any] = {}

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        self.input_tokens = self._input_estimate()  # the upstream's count comes at the end
        message = self.message(final=False)
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def feed(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if usage := chunk.get("usage"):
            self.input_tokens = int(usage.get("prompt_tokens") or self.input_tokens)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        for key in ("sources", "rag"):
            if key in chunk:
                self.extra[key] = chunk[key]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if (thought := delta.get("reasoning_content")) and self.wire.thinking:
                events += self._delta("thinking", {"type": "thinking_delta", "thinking": thought})
            if text := delta.get("content"):
                events += self._delta("text", {"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        events = self._stop()
        delta = {"stop_reason": self.stop_reason(), "stop_sequence": None}
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def fail(self, kind: str, message: str) -> list[tuple[str, dict[str, Any]]]:
        return [("error", {"type": "error", "error": {"type": kind, "message": message}})]

    def stop_reason(self) -> str:
        if any(block["type"] == "tool_use" for block in self.content):
            return "tool_use"
        return STOP_REASONS.get(self.finish or "stop", "end_turn")

    def message(self, *, final: bool = True) -> dict[str, Any]:
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.wire.model,
            "content": [_public(block) for block in self.content] if final else [],
            "stop_reason": self.stop_reason() if final else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens if final else 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if final:
            message.update(self.extra)
        return message

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = []
        block = self._open
        if block is None or block["type"] != kind:
            events += self._stop()
            start: dict[str, Any] = {"type": kind, kind: ""}
            if kind == "thinking":
                start["signature"] = ""
            block = self._started(dict(start))
            events.append(_block("content_block_start", block, content_block=start))
        block[kind] += delta[kind]
        events.append(_block("content_block_delta", block, delta=delta))
        return events

    def _call(self, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = []
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        block = self._calls.get(index)
        if block is None:
            events += self._stop()
            start: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": function.get("name") or "",
                "input": {},
            }
            block = self._started({**start, "_json": ""})
            self._calls[index] = block
            events.append(_block("content_block_start", block, content_block=start))
        piece = function.get("arguments") or ""
        if piece and block is self._open:
            block["_json"] += piece
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(_block("content_block_delta", block, delta=delta))
        return events

    def _started(self, block: dict[str, Any]) -> dict[str, Any]:
        block["_index"] = len(self.content)
        self.content.append(block)
        self._open = block
        return block

    def _stop(self) -> list[tuple[str, dict[str, Any]]]:
        block, self._open = self._open, None
        if block is None:
            return []
        events = []
        if block["type"] == "thinking":
            block["signature"] = SIGNATURE
            delta = {"type": "signature_delta", "signature": SIGNATURE}
            events.append(_block("content_block_delta", block, delta=delta))
        elif block["type"] == "tool_use":
            try:
                value = orjson.loads(block["_json"] or "{}")
            except orjson.JSONDecodeError:
                value = {}
            block["input"] = value if isinstance(value, dict) else {}
        events.append(_block("content_block_stop", block))
        return events


def _block(kind: str, block: dict[str, Any], **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, "index": block["_index"], **fields}


def _public(block: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in block.items() if not key.startswith("_")}
