"""Embeddings from Ollama's ``/api/embed``, batched, with the task prefixes each known model
was trained with (nomic ``search_document:``/``search_query:``, e5 ``passage:``/``query:``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx

from proxy.hookspecs import hookimpl

# model name prefix -> (document prefix, query prefix)
PREFIXES = {
    "nomic-embed-text": ("search_document: ", "search_query: "),
    "nomic-embed": ("search_document: ", "search_query: "),
    "e5": ("passage: ", "query: "),
    "multilingual-e5": ("passage: ", "query: "),
    "mxbai-embed-large": ("", "Represent this sentence for searching relevant passages: "),
    "snowflake-arctic-embed": ("", "Represent this sentence for searching relevant passages: "),
}


def prefixes_for(model: str) -> tuple[str, str]:
    base = model.split("/")[-1].split(":")[0]
    for name in sorted(PREFIXES, key=len, reverse=True):
        if base.startswith(name) or f"-{name}" in base:
            return PREFIXES[name]
    return "", ""


class OllamaEmbedder:
    max_tokens = 512

    def __init__(
        self,
        url: str = "http://127.0.0.1:11434",
        model: str = "nomic-embed-text",
        batch: int = 64,
        timeout: float = 300,
    ) -> None:
        self.model = model
        self.name = f"ollama:{model}"
        self._documents, self._queries = prefixes_for(model)
        self._batch = batch
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)
        self.dim = len(self._embed(["dimension probe"])[0])

    def _embed(self, texts: list[str]) -> list[list[float]]:
        response = self._http.post("/api/embed", json={"model": self.model, "input": texts})
        response.raise_for_status()
        vectors: list[list[float]] = response.json()["embeddings"]
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self._batch):
            out += self._embed([self._documents + t for t in texts[i : i + self._batch]])
        return out

    def embed_query(self, text: str) -> list[float]:
        return self._embed([self._queries + text])[0]

    def close(self) -> None:
        self._http.close()


@hookimpl
def register_embedders(register: Callable[..., None]) -> None:
    def factory(
        *, upstream: str = "http://127.0.0.1:11434", model: str = "nomic-embed-text", **_: Any
    ) -> OllamaEmbedder:
        return OllamaEmbedder(upstream, model)

    register("ollama", factory)
