"""DeepSeek-R1-style reasoning: split inline ``<think>…</think>`` from content as it streams,
render it in the form the client asked for, and strip it from earlier turns."""

from __future__ import annotations

import re
from typing import Any

OPEN = "<think>"
CLOSE = "</think>"
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)\s*", re.DOTALL)


class ThinkSplitter:
    """Feeds on content deltas; returns (reasoning, content) for each, holding back only the
    few characters that might be the start of a tag split across chunks."""

    def __init__(self) -> None:
        self._state = "start"  # start -> think -> after_think -> content
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        buffer = self._buffer + text
        self._buffer = ""
        while buffer:
            if self._state == "start":
                stripped = buffer.lstrip()
                if not stripped or (OPEN.startswith(stripped) and len(stripped) < len(OPEN)):
                    self._buffer = buffer
                    break
                if stripped.startswith(OPEN):
                    self._state = "think_start"
                    buffer = stripped[len(OPEN) :]
                else:
                    self._state = "content"
            elif self._state == "think_start":
                buffer = buffer.lstrip()
                if buffer:
                    self._state = "think"
            elif self._state == "think":
                end = buffer.find(CLOSE)
                if end >= 0:
                    reasoning.append(buffer[:end])
                    buffer = buffer[end + len(CLOSE) :]
                    self._state = "after_think"
                    continue
                keep = _partial_suffix(buffer, CLOSE)
                reasoning.append(buffer[: len(buffer) - keep])
                self._buffer = buffer[len(buffer) - keep :]
                break
            elif self._state == "after_think":
                buffer = buffer.lstrip()
                if buffer:
                    self._state = "content"
            else:
                content.append(buffer)
                break
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """What is still held back when the stream ends."""
        buffer, self._buffer = self._buffer, ""
        if self._state == "think":
            return buffer, ""
        if self._state == "start":
            return "", buffer
        return "", ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningRenderer:
    """Turns the canonical ``reasoning_content`` of deltas into the client's chosen form."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._open = False

    def render(self, delta: dict[str, Any]) -> None:
        reasoning = delta.pop("reasoning_content", None)
        if self.mode == "reasoning_content":
            if reasoning:
                delta["reasoning_content"] = reasoning
        elif self.mode == "reasoning":
            if reasoning:
                delta["reasoning"] = reasoning
        elif self.mode == "inline":
            content = delta.get("content")
            text = ""
            if reasoning:
                text = (OPEN if not self._open else "") + reasoning
                self._open = True
            if content:
                if self._open:
                    text += CLOSE + "\n\n"
                    self._open = False
                text += content
            if text:
                delta["content"] = text

    def close(self) -> str:
        """Text that must still be sent before the stream ends (an unclosed inline think tag)."""
        if self.mode == "inline" and self._open:
            self._open = False
            return CLOSE
        return ""


def strip_reasoning(content: str) -> str:
    """Content of an earlier assistant turn without its reasoning."""
    if CLOSE in content and OPEN not in content:
        content = content.split(CLOSE, 1)[1].lstrip()  # a template opened the think block
    return _THINK_BLOCK.sub("", content)


def _has_reasoning(message: dict[str, Any]) -> bool:
    """A quick look first: most turns have nothing to strip, and agents send thousands."""
    if any(key in message for key in REASONING_KEYS):
        return True
    content = message.get("content")
    if isinstance(content, str):
        return OPEN in content or CLOSE in content  # strip_reasoning changes nothing else
    return isinstance(content, list)


def strip_reasoning_from_history(messages: list[Any]) -> list[Any]:
    """Assistant turns lose ``<think>`` blocks and reasoning fields before going upstream."""
    out: list[Any] = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant" and _has_reasoning(message):
            message = {k: v for k, v in message.items() if k not in REASONING_KEYS}
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = strip_reasoning(content)
            elif isinstance(content, list):
                message["content"] = [
                    {**part, "text": strip_reasoning(part["text"])}
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                    else part
                    for part in content
                ]
        out.append(message)
    return out
