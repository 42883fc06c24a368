"""The upstreams as one pool: which one serves a request (it has the model, it answers, it is the
least busy), the next one tried when it fails before the reply's first byte, and the health checks
that keep what the pool knows (up or down, model lists) fresh. Up means it answers HTTP: an error
status to one request is that request's fate, not the server's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx

from proxy.errors import ProxyError, UpstreamFailed, UpstreamOverloaded, UpstreamTimeout, UpstreamUnavailable
from proxy.logging import get_logger
from proxy.settings import Settings, UpstreamApi
from proxy.upstream.client import FRESH_BUDGET, Upstream
from proxy.upstream.ollama import OllamaUpstream
from proxy.upstream.openai import OpenAIUpstream

log = get_logger("ragproxy.upstream")

T = TypeVar("T")

# Failures after which another upstream may answer. One on an upstream that had the request (an
# HTTP 5xx or 429, a dropped connection, no first byte in time: ``_reached``) may be the request's
# own doing (a body the server chokes on): after it the request goes to one more, not to every one.
FAILOVER = (UpstreamUnavailable, UpstreamFailed, UpstreamOverloaded, UpstreamTimeout)
REACHED_FAILOVERS = 1  # more servers a request that reached one and failed there may go to
SLOW_FOR = 60.0  # seconds an upstream that timed out before its first byte is tried after the others
CHECK_TIMEOUT = 5.0  # seconds a health check waits for a model list
CHECK_GAP = 0.5  # at least this long between two rounds of checks, however many failures wake them


def _reached(exc: ProxyError) -> bool:
    """Whether the failed request reached the upstream (it answered an error, closed the
    connection on it, or kept it past the deadline): such a request may fail the same way on
    every upstream, so it goes to one more at most. One that could not connect goes on to all."""
    return not isinstance(exc, UpstreamUnavailable)


DIALECTS: dict[UpstreamApi, type[Upstream]] = {"ollama": OllamaUpstream, "openai": OpenAIUpstream}


def model_key(name: str, api: UpstreamApi) -> str:
    """A model name as a server of ``api`` compares it (``Upstream.model_key``)."""
    return DIALECTS[api].model_key(name)


class UpstreamPool:
    """Every ``--upstream``, each with its own client. With one, everything goes to it as before;
    with several, requests are routed by model and spread by load."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.members = tuple(
            DIALECTS[spec.api](settings, spec.url, transport) for spec in settings.upstreams()
        )
        self._turn = 0  # rotates the order among equally busy upstreams
        self._slow: dict[int, float] = {}  # id(member): until when it is tried after the others
        self._wake = anyio.Event()

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()

    def first_byte_deadline(self, since: float | None = None) -> float:
        return self.members[0].first_byte_deadline(since)

    # -- choosing --------------------------------------------------------------------------------
    def candidates(
        self, model: str | None = None, *, ollama: bool = False, rotate: bool = True
    ) -> list[Upstream]:
        """The upstreams to try for ``model``, best first: those whose model list has it (all, if
        none lists it: the one asked then answers 404 as a single upstream would), the ones known
        to be down last, the least busy first, ties taken in turn. ``ollama``: only those with
        Ollama's native API (``Upstream.native_ollama``)."""
        members = [m for m in self.members if m.native_ollama or not ollama]
        if model is not None:
            holders = [m for m in members if m.listed is not None and m.model_key(model) in m.listed]
            members = holders or members
        turn = self._turn
        if rotate:
            self._turn += 1
        count = len(self.members)
        position = {id(m): (i - turn) % count for i, m in enumerate(self.members)}
        now = time.monotonic()
        return sorted(
            members,
            key=lambda m: (m.up is False, self._slow.get(id(m), 0.0) > now, m.in_flight, position[id(m)]),
        )

    def preferred(self, model: str | None = None) -> Upstream:
        """The upstream a request for ``model`` would go to first (for what depends on it before
        the request is sent: its API, the model's window)."""
        return self.candidates(model, rotate=False)[0]

    def native_ollama(self) -> bool:
        """Whether an upstream has Ollama's native API (model management, raw prompts)."""
        return any(m.native_ollama for m in self.members)

    # -- asking, with failover -----------------------------------------------------------------------
    async def call(
        self, model: str | None, ask: Callable[[Upstream], Awaitable[T]], *, ollama: bool = False
    ) -> T:
        """``ask`` of the best upstream for ``model``; of the next if that one cannot answer."""
        members = self.candidates(model, ollama=ollama)
        reached = 0  # failures on an upstream that had the request
        for i, member in enumerate(members):
            member.in_flight += 1
            try:
                return await ask(member)
            except FAILOVER as exc:
                reached += _reached(exc)
                if i == len(members) - 1 or reached > REACHED_FAILOVERS:
                    raise
                self._failed(member, exc, members[i + 1])
            finally:
                member.in_flight -= 1
        raise ProxyError("no upstream has Ollama's native API", status=501)

    @asynccontextmanager
    async def open(
        self, model: str | None, opener: Callable[[Upstream], AbstractAsyncContextManager[AsyncIterator[T]]]
    ) -> AsyncIterator[AsyncIterator[T]]:
        """A streamed reply from the best upstream for ``model`` (``opener``: what opens it on one
        upstream). Until its first item the next upstream is tried on failure; after it, nothing
        is retried: the failure raises from the iterator, for the client's wire to report."""
        members = self.candidates(model)
        reached = 0  # failures on an upstream that had the request
        for i, member in enumerate(members):
            answered = False
            member.in_flight += 1
            try:
                async with opener(member) as items:
                    head: list[T] = []
                    async for item in items:  # the first item: the upstream has answered
                        head.append(item)
                        break
                    answered = True
                    yield _chained(head, items)
                    return
            except FAILOVER as exc:
                if answered:  # too late for another: the client has part of this reply
                    self._wake.set()
                    raise
                reached += _reached(exc)
                if i == len(members) - 1 or reached > REACHED_FAILOVERS:
                    raise
                self._failed(member, exc, members[i + 1])
            finally:
                member.in_flight -= 1

    async def gather(self, ask: Callable[[Upstream], Awaitable[T]], *, ollama: bool = False) -> list[T]:
        """``ask`` of every upstream at once (those known to be down left out while others are
        not), the answers in the pool's order; the first one's error if none answered."""
        members = [m for m in self.members if m.native_ollama or not ollama]
        members = [m for m in members if m.up is not False] or members
        answers = await _each(members, ask)
        answered = [a for a in answers if not isinstance(a, ProxyError)]
        if not answered and answers:
            first = answers[0]
            assert isinstance(first, ProxyError)
            raise first
        return answered

    async def probe_all(self, deadline: float | None = None) -> list[dict[str, Any] | ProxyError]:
        """Each upstream's answer to a cheap question (``Upstream.probe``), or its error."""
        return await _each(self.members, lambda member: member.probe(deadline))

    def _failed(self, member: Upstream, exc: ProxyError, then: Upstream) -> None:
        """One that could not be reached is already marked down; whether one that timed out or
        answered with an error still serves is for the health checks to say."""
        log.warning("upstream.failover", upstream=member.base, error=str(exc)[:200], next=then.base)
        self._wake.set()  # the health checks look again now
        if isinstance(exc, UpstreamTimeout):
            # It answers its health checks but not in time: the others first for a while, and the
            # next one gets a whole first-byte budget of its own.
            self._slow[id(member)] = time.monotonic() + SLOW_FOR
            FRESH_BUDGET.set(time.monotonic())

    # -- health checks ---------------------------------------------------------------------------------
    async def watch(self) -> None:
        """For the app's life: every upstream's health and model list, checked now, then every
        ``upstream_check_interval`` s, and at once when a request found one failing. A single
        upstream is not polled: there is nothing to choose."""
        interval = self.settings.upstream_check_interval
        if len(self.members) < 2 or interval <= 0:
            return
        while True:
            self._wake = anyio.Event()
            async with anyio.create_task_group() as tasks:
                for member in self.members:
                    tasks.start_soon(self.check, member)
            await anyio.sleep(min(CHECK_GAP, interval))
            with anyio.move_on_after(max(interval - CHECK_GAP, 0)):
                await self._wake.wait()

    async def check(self, member: Upstream) -> None:
        was = member.up
        try:
            names = await member.model_names(time.monotonic() + CHECK_TIMEOUT)
        except ProxyError as exc:
            if isinstance(exc, FAILOVER) and exc.upstream_status is None:  # no answer at all
                member.saw(False)
                if was is not False:
                    log.warning("upstream.down", upstream=member.base, error=str(exc)[:200])
            return
        except Exception as exc:  # a model list of another shape: it answers, what it has is unknown
            log.warning("upstream.models_unreadable", upstream=member.base, error=repr(exc)[:200])
            member.listed = None
            return
        member.listed = frozenset(member.model_key(name) for name in names)
        if was is False:
            log.info("upstream.up", upstream=member.base, models=len(names))

    def state(self) -> list[dict[str, Any]]:
        """What the pool knows of each upstream (the status page, /readyz)."""
        return [
            {
                "url": m.base,
                "api": m.api,
                "up": m.up,
                "in_flight": m.in_flight,
                "models": None if m.listed is None else sorted(m.listed),
            }
            for m in self.members
        ]


async def _each(members: Sequence[Upstream], ask: Callable[[Upstream], Awaitable[T]]) -> list[T | ProxyError]:
    """``ask`` of each upstream at once: the answers, or the errors, in ``members``' order."""
    answers: list[T | ProxyError] = [ProxyError("not asked")] * len(members)

    async def one(i: int, member: Upstream) -> None:
        try:
            answers[i] = await ask(member)
        except ProxyError as exc:
            answers[i] = exc

    async with anyio.create_task_group() as tasks:
        for i, member in enumerate(members):
            tasks.start_soon(one, i, member)
    return answers


async def _chained(head: list[T], rest: AsyncIterator[T]) -> AsyncIterator[T]:
    for item in head:
        yield item
    async for item in rest:
        yield item
