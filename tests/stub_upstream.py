"""A small OpenAI-compatible upstream on a real socket, with faults on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Self

import orjson


def _chat_events(model: str, n: int = 1) -> bytes:
    """A streamed chat reply: "Hello there"; with ``n`` above 1, choice ``i`` says "Answer i.",
    each choice's first delta in a chunk of its own, then one chunk with every choice's last
    words and finish reason (a chunk may carry several choices)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    texts = [["Hello", " there"]] if n == 1 else [["Answer", f" {i}."] for i in range(n)]
    events = [
        {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": text[0]}}]}
        for i, text in enumerate(texts)
    ]
    last = [
        {"index": i, "delta": {"content": text[1]}, "finish_reason": "stop"} for i, text in enumerate(texts)
    ]
    events.append({**base, "choices": last})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2 * n}})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


REPLIES: dict[str, tuple[bytes, bytes]] = {  # path: (content type, body)
    "/v1/models": (b"application/json", orjson.dumps({"object": "list", "data": [{"id": "tiny"}]})),
    "/props": (b"application/json", orjson.dumps({"default_generation_settings": {"n_ctx": 4096}})),
    "/v1/chat/completions": (b"text/event-stream", _chat_events("tiny")),
    "/v1/completions": (
        b"text/event-stream",
        b"data: "
        + orjson.dumps(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": "tiny",
                "choices": [{"text": "x)", "index": 0, "finish_reason": "stop"}],
            }
        )
        + b"\n\ndata: [DONE]\n\n",
    ),
    "/v1/embeddings": (
        b"application/json",
        orjson.dumps({"data": [{"index": 0, "embedding": [0.5, 0.5]}], "usage": {"prompt_tokens": 1}}),
    ),
}


class SocketServer:
    """An HTTP server of the tests' own on a real socket, each connection served by ``_serve``
    in a thread of its own; ``url`` is where it listens."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so the accepting thread sees the stop flag
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.paths: list[str] = []  # every request it read
        self.connections = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self: Self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self._open:
            connection.close()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError


class SilentUpstream(SocketServer):
    """An HTTP server that takes every request and never answers, as a hung upstream does. It
    records the path of each request it was sent."""

    def _serve(self, connection: socket.socket) -> None:
        # The request line is enough; nothing is ever sent back, so the client sends no second one.
        with contextlib.suppress(OSError, IndexError):
            self.paths.append(connection.makefile("rb").readline().split()[1].decode())


class StubUpstream(SocketServer):
    """A small OpenAI-compatible server with fixed replies, for what a real one cannot be made
    to do on demand. ``answers``: how many requests it answers on a connection (saying
    ``Connection: keep-alive``) before it reads the next and closes the socket without a word,
    as llama-server does now and then right after a streamed reply (None: no limit).
    ``chat_status``: the HTTP status of its chat replies (a server failing every chat);
    ``chat_hold``: how long a chat waits for its reply (a slow server); ``chat_drop``: chats read,
    then the connection closed (a prompt that crashes the server). ``unanswered``: the requests
    it closed the connection on."""

    def __init__(
        self,
        answers: int | None = None,
        chat_status: int = 200,
        chat_hold: float = 0.0,
        chat_drop: bool = False,
    ) -> None:
        super().__init__()
        self.answers = answers
        self.chat_drop = chat_drop
        self.chat_status = chat_status
        self.chat_hold = chat_hold
        self.unanswered: list[str] = []
        self.bodies: list[dict[str, Any]] = []  # the JSON body of each request ({} if none)

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection, connection.makefile("rb") as reader:
            answered = 0
            while request := _read_request(reader):
                path, sent = request
                self.paths.append(path)
                self.bodies.append(sent)
                if answered == self.answers or (self.chat_drop and path.endswith("/completions")):
                    self.unanswered.append(path)
                    return  # closed with the request read and nothing sent
                if path.endswith("/completions") and self._stop.wait(self.chat_hold):
                    return
                content_type, body = REPLIES.get(path, (b"application/json", b'{"error": "not found"}'))
                status = b"200 OK" if path in REPLIES else b"404 Not Found"
                if path == "/v1/chat/completions" and isinstance(sent.get("n"), int):
                    body = _chat_events("tiny", sent["n"])
                if path.endswith("/completions") and self.chat_status != 200:
                    content_type = b"application/json"
                    body = b'{"error": {"message": "the model failed", "type": "server_error"}}'
                    status = b"%d Failed" % self.chat_status
                head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                    status,
                    content_type,
                    len(body),
                )
                connection.sendall(head + b"Connection: keep-alive\r\n\r\n" + body)
                answered += 1


def _read_request(reader: Any) -> tuple[str, dict[str, Any]] | None:
    """The path and JSON body of the next request on the connection, None at its end."""
    line = reader.readline()
    if not line:
        return None
    length = 0
    while (header := reader.readline()) not in (b"\r\n", b""):
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    content = reader.read(length)
    body = orjson.loads(content) if content else {}
    return str(line.split()[1].decode()), body if isinstance(body, dict) else {}
