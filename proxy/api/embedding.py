"""What every embeddings endpoint (OpenAI's /v1/embeddings, Ollama's /api/embed and
/api/embeddings) shares: the caps on one request's inputs, and the work done in bounded steps
that stop when the client leaves, whether the embedder is the index's (in threads) or an
upstream's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from litestar import Request

from proxy.api.requestlog import request_record
from proxy.errors import BadRequest, ProxyError
from proxy.text import estimate_tokens

MAX_INPUTS = 2048  # OpenAI's own limit per request
MAX_TOKENS = 300_000  # estimated tokens of all inputs together; OpenAI's own limit too
# Inputs per step: what a client that has left may still cost. The in-process embedder takes
# about a tenth of a second per input on two cores; an upstream is asked in batches, as the
# ollama embedder does.
LOCAL_STEP = 8
UPSTREAM_STEP = 64

Vectors = list[list[float]]
EmbedStep = Callable[[list[Any]], Awaitable[tuple[Vectors, int]]]


class ClientLeft(ProxyError):
    """The client disconnected before the reply: nobody reads this status, the log does."""

    status = 499
    type = "client_closed_request"


def check_inputs(inputs: list[Any], param: str = "input") -> None:
    """A request's inputs (each a text, or a token array) within the caps, else 400."""
    if len(inputs) > MAX_INPUTS:
        raise BadRequest(f"'{param}' has {len(inputs)} items; at most {MAX_INPUTS} per request", param=param)
    tokens = sum(estimate_tokens(item) if isinstance(item, str) else len(item) for item in inputs)
    if tokens > MAX_TOKENS:
        raise BadRequest(
            f"'{param}' holds about {tokens} tokens; at most {MAX_TOKENS} per request", param=param
        )


async def embed_in_steps(
    request: Request[Any, Any, Any], inputs: list[Any], step: EmbedStep, size: int
) -> tuple[Vectors, int]:
    """``step`` over ``inputs``, ``size`` at a time, until all are done or the client leaves
    (then ``ClientLeft``): the step under way finishes, no other starts."""
    vectors: Vectors = []
    tokens = 0
    left = False
    try:
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                nonlocal left
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                left = True
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            for start in range(0, len(inputs), size):
                done, counted = await step(inputs[start : start + size])
                vectors += done
                tokens += counted
            tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # a step's own error (the upstream down...), as it was raised
        raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
    if left:
        request_record(request.scope)["client_disconnected"] = True
        raise ClientLeft("the client left before the embeddings were done")
    return vectors, tokens
