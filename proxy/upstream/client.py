"""One upstream: its pooled HTTP client, timeouts and error mapping, and the interface every
upstream dialect implements (``Upstream``). The dialects are ``OllamaUpstream`` (Ollama's native
API, ``ollama.py``) and ``OpenAIUpstream`` (OpenAI-compatible servers, ``openai.py``): callers ask
an upstream for a chat, its models, a model's window, embeddings or a completion, never which API
it speaks."""

from __future__ import annotations

import contextvars
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import httpx
import orjson

from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    NotFound,
    ProxyError,
    UpstreamError,
    UpstreamFailed,
    UpstreamOverloaded,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.logging import get_logger
from proxy.settings import Settings, UpstreamApi

log = get_logger("ragproxy.upstream")

_JSON = {"content-type": "application/json"}
KEEPALIVE = 32  # idle connections kept per upstream
# How a request fails on a kept-alive connection the upstream closed just as it was reused
# (llama-server closes some after a streamed reply while advertising keep-alive): nothing read.
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    window: int | None  # context length the upstream reports; None if it cannot say
    capabilities: tuple[str, ...] | None  # Ollama's /api/show capabilities; None if unknown


UNKNOWN = ModelInfo(None, None)
Chunks = AsyncIterator[dict[str, Any]]


class Upstream(ABC):
    """One model server in the dialect it speaks: owns its httpx client. Paths are fixed by the
    proxy; nothing a client sends picks the host (``base``: one of the settings' upstreams)."""

    api: ClassVar[UpstreamApi]  # the ``--upstream-api`` name, for the status page and logs
    # The context window is chosen per request (Ollama's ``num_ctx``); else it is the server's own.
    sizes_window: ClassVar[bool]
    reports_capabilities: ClassVar[bool]  # ``model_info`` says what a model can do (tools, vision)
    # Ollama's own /api answers here: model management, raw prompts, the Ollama wire relayed as is.
    native_ollama: ClassVar[bool]
    window_advice: ClassVar[str]  # what a user does for a longer window than the server reports

    def __init__(
        self, settings: Settings, base: str, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.base = base
        headers = {"user-agent": "ragproxy"}
        if settings.upstream_api_key:
            headers["authorization"] = f"Bearer {settings.upstream_api_key}"
        backstop = max(settings.first_byte_timeout, settings.idle_timeout) + 5
        self.http = httpx.AsyncClient(
            base_url=self.base,
            headers=headers,
            trust_env=False,  # proxy variables must not reroute private prompts
            follow_redirects=False,
            timeout=httpx.Timeout(backstop, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=KEEPALIVE),
            transport=transport,
        )
        # What the last exchange said of the upstream: True (it answered, whatever the HTTP
        # status: a 500 to one request says nothing of the next), False (no answer), None
        # (nothing asked yet); and when, in time.monotonic().
        self.up: bool | None = None
        self.seen_at = 0.0
        # What the pool knows of it: the model names its last health check listed (None: not
        # listed yet), and how many requests it is serving now.
        self.listed: frozenset[str] | None = None
        self.in_flight = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    def saw(self, up: bool) -> None:
        self.up, self.seen_at = up, time.monotonic()

    async def probe(self, deadline: float | None = None) -> dict[str, Any]:
        """A cheap question (Ollama's version, or the model list) that says whether it answers;
        no answer by ``deadline`` counts as down."""
        try:
            return await self._probe(deadline)
        except UpstreamTimeout:
            self.saw(False)
            raise

    # -- what each dialect answers in its own way -----------------------------------------------------
    @abstractmethod
    async def _probe(self, deadline: float | None) -> dict[str, Any]: ...

    @staticmethod
    def model_key(name: str) -> str:
        """A model name as the server compares it (exactly, unless the dialect says otherwise)."""
        return name

    @abstractmethod
    async def model_names(self, deadline: float | None = None) -> list[str]:
        """Every name the server answers to, for the pool's routing."""

    @abstractmethod
    async def models(self, deadline: float | None = None) -> list[dict[str, Any]]:
        """The server's models as OpenAI model entries."""

    @abstractmethod
    async def model_entry(self, name: str) -> dict[str, Any]:
        """One model as an OpenAI model entry (404 if the server has no such model)."""

    @abstractmethod
    async def model_info(self, model: str, deadline: float) -> ModelInfo:
        """The model's window and capabilities, as far as the server tells them."""

    async def require_model(self, model: str, deadline: float | None = None) -> None:  # noqa: B027
        """NotFound unless the server has ``model``, for a server that would answer any name
        (one that 404s an unknown model itself need not check)."""

    @abstractmethod
    def chat_request(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An OpenAI chat body as this server's streamed chat request: its path and body."""

    @abstractmethod
    def chat_chunks(self, raw: AsyncIterator[bytes], model: str, split_inline_think: bool) -> Chunks:
        """The server's streamed chat reply as OpenAI ``chat.completion.chunk`` dicts."""

    @abstractmethod
    async def embed(
        self, body: dict[str, Any], native: Mapping[str, Any] | None = None
    ) -> tuple[list[list[float]], int]:
        """An OpenAI embeddings body's vectors, in input order, and the tokens the server counted.
        ``native``: fields of an Ollama embed request passed on where the server reads them."""

    @abstractmethod
    async def embedding(self, body: dict[str, Any]) -> list[float]:
        """Ollama's legacy ``/api/embeddings`` (``model``, ``prompt``): one vector."""

    @abstractmethod
    def complete(self, body: dict[str, Any], deadline: float) -> AbstractAsyncContextManager[Chunks]:
        """A legacy completion (``/v1/completions`` body), streamed as ``text_completion`` chunks."""

    @abstractmethod
    async def ollama_tags(self) -> dict[str, Any]:
        """The models in Ollama's ``/api/tags`` shape."""

    @abstractmethod
    async def ollama_show(
        self, body: dict[str, Any], model: str, info: Callable[[], Awaitable[ModelInfo]]
    ) -> dict[str, Any]:
        """Ollama's ``/api/show`` for ``model`` (``body``: the client's request; ``info``: the
        model's window and capabilities as the chats learn them, for a server that has no
        ``/api/show`` of its own)."""

    async def count_prompt(self, body: dict[str, Any], *, deadline: float) -> int:
        """The prompt tokens of an OpenAI chat body, counted by the server itself. NotFound from
        a server that cannot count."""
        raise NotFound(f"{self.base} has no endpoint that counts a prompt's tokens")

    # -- the transport ---------------------------------------------------------------------------------

    def first_byte_deadline(self, since: float | None = None) -> float:
        """When the first byte must have come back for a request that arrived at ``since``
        (``time.monotonic()``; now if None): one ``first_byte_timeout`` for all it asks upstream,
        counted again from the failover when another upstream of a pool is tried after one that
        timed out (``FRESH_BUDGET``), so the next one has the time the first one took."""
        start = time.monotonic() if since is None else since
        return max(start, FRESH_BUDGET.get()) + self.settings.first_byte_timeout

    async def get_json(self, path: str, *, deadline: float | None = None) -> Any:
        return await self._json_request("GET", path, None, deadline)

    async def post_json(self, path: str, body: Any, *, deadline: float | None = None) -> Any:
        return await self._json_request("POST", path, body, deadline)

    async def _json_request(self, method: str, path: str, body: Any, deadline: float | None) -> Any:
        """``deadline``: when the whole reply must have come (``first_byte_deadline()`` if None)."""
        if deadline is None:
            deadline = self.first_byte_deadline()
        limit = max(deadline - time.monotonic(), 0.0)
        content = None if body is None else orjson.dumps(body)
        request = self.http.build_request(
            method, path, content=content, headers=_JSON if content is not None else None
        )
        try:
            with anyio.fail_after(limit):
                response = await self.send(request)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream did not answer {path} in {round(limit, 2):g} s") from None
        except httpx.HTTPError as exc:
            self.saw(False)
            raise map_transport_error(exc, self.base) from None
        self.saw(True)
        if response.status_code >= 400:
            raise map_status(response.status_code, response.content, response.headers)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream sent invalid JSON for {path}") from None

    @asynccontextmanager
    async def stream(
        self, path: str, body: Any, *, deadline: float | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Opens a streamed POST; errors before the first byte raise as mapped ``ProxyError``s.
        ``deadline``: when the first byte must have come (``first_byte_deadline()``; the request's,
        so what was asked upstream before this counts too). Leaving the block, normally or by
        cancellation, closes the upstream connection."""
        if deadline is None:
            deadline = self.first_byte_deadline()
        timed_out = UpstreamTimeout(
            f"upstream sent nothing within {self.settings.first_byte_timeout:g} s (first_byte_timeout)"
        )
        if deadline <= time.monotonic():  # the budget went on what was asked upstream before
            raise timed_out
        request = self.http.build_request(
            "POST", path, content=orjson.dumps(body), headers={**_JSON, "accept-encoding": "identity"}
        )
        try:
            with anyio.fail_after(deadline - time.monotonic()):
                response = await self.send(request, stream=True)
        except TimeoutError:
            raise timed_out from None
        except httpx.HTTPError as exc:
            self.saw(False)
            raise map_transport_error(exc, self.base) from None
        self.saw(True)
        try:
            if response.status_code >= 400:
                with anyio.move_on_after(self.settings.idle_timeout):
                    await response.aread()
                raise map_status(response.status_code, response.content, response.headers)
            chunks = _timed_chunks(response, deadline, self.settings.idle_timeout)
            yield chunks
            # The reply is complete (the consumer saw its end marker): read the little that
            # follows, so the connection goes back to the pool instead of being closed.
            with anyio.move_on_after(0.25):
                async for _ in chunks:
                    pass
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """``request`` sent; sent again if it failed before any byte of a reply on a reused
        connection (the upstream had closed it: the request was never read, so sending it again
        is safe). A failure on a new connection, or after the reply began, raises."""
        for _ in range(KEEPALIVE):  # each reused connection that fails is dropped from the pool
            events: list[str] = []
            request.extensions = {**request.extensions, "trace": _recorder(events)}
            try:
                return await self.http.send(request, stream=stream)
            except _STALE as exc:
                if not _reused_and_unanswered(events):
                    raise
                log.info("upstream.resent", upstream=self.base, path=request.url.path, error=repr(exc))
        return await self.http.send(request, stream=stream)


def _recorder(events: list[str]) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpx ``trace`` callback noting the name of each connection event."""

    async def record(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    return record


def _reused_and_unanswered(events: list[str]) -> bool:
    """The request went out on a connection already open (no connect event; an injected
    transport traces nothing, so no request event either) and no reply header came back."""
    sent = any(name.startswith("http11.send_request") for name in events)
    opened = any(name.startswith("connection.connect_") for name in events)
    return sent and not opened and "http11.receive_response_headers.complete" not in events


async def _timed_chunks(response: httpx.Response, deadline: float, idle: float) -> AsyncIterator[bytes]:
    """Body chunks, failing if the first comes after ``deadline`` or a later one after ``idle`` s."""
    chunks = response.aiter_raw()
    first = True
    while True:
        limit = max(deadline - time.monotonic(), 0.0) if first else idle
        try:
            with anyio.fail_after(limit):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            what = "first token" if first else f"next chunk (idle_timeout {idle:g} s)"
            raise UpstreamTimeout(f"upstream stopped sending: no {what} in time") from None
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, str(response.request.url)) from None
        first = False
        yield chunk


# When the pool passed over an upstream that timed out, for this request (its task): the next one's
# first-byte budget counts from then, not from the request's arrival.
FRESH_BUDGET: contextvars.ContextVar[float] = contextvars.ContextVar("fresh_budget", default=0.0)


def map_transport_error(exc: httpx.HTTPError, where: str) -> ProxyError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return UpstreamUnavailable(f"cannot connect to upstream {where}: {exc or type(exc).__name__}")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream timed out: {exc or type(exc).__name__}")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return UpstreamFailed(f"upstream closed the connection: {exc or type(exc).__name__}")
    return UpstreamError(f"upstream request failed: {exc or type(exc).__name__}")


def upstream_message(content: bytes) -> str:
    """The message inside an upstream error body, whichever shape it has."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace").strip()[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    return str(data)[:500]


def map_status(status: int, content: bytes, headers: httpx.Headers | None = None) -> ProxyError:
    error = _status_error(status, upstream_message(content) or f"upstream answered HTTP {status}")
    error.upstream_status = status
    return error


def _status_error(status: int, message: str) -> ProxyError:
    if status in (400, 422):
        return BadRequest(message)
    if status == 404:
        return NotFound(message, code="model_not_found" if "model" in message.lower() else None)
    if status == 413:
        return BodyTooLarge(message)
    if status in (429, 503):
        return UpstreamOverloaded(f"upstream is busy: {message}")
    if status in (408, 504):
        return UpstreamTimeout(f"upstream timed out: {message}")
    if status in (401, 403):
        return UpstreamError(f"upstream refused the proxy (HTTP {status}): {message}")
    if status >= 500:
        return UpstreamFailed(f"upstream failed (HTTP {status}): {message}")
    return BadRequest(message, status=status)
