"""Stream framing: reading SSE and NDJSON from an upstream, writing SSE to a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import UpstreamError

DONE = b"data: [DONE]\n\n"


def choice_index(choice: dict[str, Any]) -> int:
    """A choice's ``index`` (``n`` above 1, several prompts); 0 if it has none, or an odd one."""
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


async def ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Whole lines, however the bytes were split in transit; blank lines skipped."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data`` payload of each SSE event. Comments (``: ping``) and other fields are skipped;
    multi-line data is joined with newlines as the SSE spec says."""
    data: list[bytes] = []
    async for line in _sse_lines(chunks):
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


async def _sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while True:
            cut = _line_end(buffer)
            if cut is None:
                break
            end, after = cut
            yield buffer[:end]
            buffer = buffer[after:]
    if buffer:
        yield buffer


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Position of the first line ending (CRLF, LF or CR) and where the next line starts."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr != -1 and (lf == -1 or cr < lf):
        if cr + 1 == len(buffer):
            return None  # a CR at the end may be the first half of CRLF
        return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)
    return lf, lf + 1


# Open WebUI's aiohttp reader fails on SSE lines over 128 KiB.
MAX_EVENT_BYTES = 120 * 1024
_TEXT_PIECE = 16 * 1024  # characters; up to 4 bytes each, JSON escaping aside


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_events(chunk: dict[str, Any]) -> bytes:
    """One chunk as SSE, split into several chunks if its line would be too long for some
    clients: long text fields and tool-call arguments are cut into consecutive deltas."""
    event = sse_event(chunk)
    choices = chunk.get("choices")
    if len(event) <= MAX_EVENT_BYTES or not choices or len(choices) != 1:
        return event
    choice = choices[0]
    delta = choice.get("delta") or {}
    pieces: list[dict[str, Any]] = []
    for key, value in delta.items():
        if isinstance(value, str) and len(value) > _TEXT_PIECE:
            pieces += [{key: value[i : i + _TEXT_PIECE]} for i in range(0, len(value), _TEXT_PIECE)]
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                arguments = (call.get("function") or {}).get("arguments") or ""
                head = {
                    **call,
                    "function": {**call.get("function", {}), "arguments": arguments[:_TEXT_PIECE]},
                }
                pieces.append({key: [head]})
                pieces += [
                    {
                        key: [
                            {
                                "index": call.get("index", 0),
                                "function": {"arguments": arguments[i : i + _TEXT_PIECE]},
                            }
                        ]
                    }
                    for i in range(_TEXT_PIECE, len(arguments), _TEXT_PIECE)
                ]
        else:
            pieces.append({key: value})
    last = len(pieces) - 1
    return b"".join(
        sse_event(
            {
                **chunk,
                "choices": [
                    {
                        **choice,
                        "delta": piece,
                        "finish_reason": choice.get("finish_reason") if i == last else None,
                    }
                ],
            }
        )
        for i, piece in enumerate(pieces)
    )


async def json_lines(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Ollama's NDJSON reply, one object per line."""
    async for line in ndjson_lines(raw):
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent a line that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("upstream sent a line that is not a JSON object")
        yield data
