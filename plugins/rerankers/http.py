"""A reranking server's ``POST /v1/rerank`` (the Jina/Cohere shape: ``query`` and ``documents``
in, ``results`` of ``index`` and ``relevance_score`` out), as served by llama.cpp's server with
``--reranking``, vLLM, Infinity and others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx

from proxy.hookspecs import hookimpl


class HttpReranker:
    def __init__(self, url: str, model: str, timeout: float = 30) -> None:
        self.model = model
        self.name = f"http:{model}" if model else "http"
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        response = self._http.post(
            "/v1/rerank",
            json={"model": self.model, "query": query, "documents": list(texts), "top_n": len(texts)},
        )
        response.raise_for_status()
        scores = [float("-inf")] * len(texts)
        for result in response.json()["results"]:
            scores[int(result["index"])] = float(result["relevance_score"])
        return scores

    def close(self) -> None:
        self._http.close()


@hookimpl
def register_rerankers(register: Callable[..., None]) -> None:
    def factory(*, url: str, model: str = "", **_: Any) -> HttpReranker:
        return HttpReranker(url, model)

    register("http", factory)
