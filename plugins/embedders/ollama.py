"""Embeddings from Ollama's ``/api/embed``, batched, with the task prefixes each known model
was trained with (nomic ``search_document:``/``search_query:``, e5 ``passage:``/``query:``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from proxy.errors import ConfigError
from proxy.hookspecs import hookimpl
from proxy.settings import parse_upstreams

# Waits before each new try of the first request while Ollama is still starting (about 30 s in
# all): a service started with the machine may come up before Ollama does.
STARTUP_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

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
        startup_waits: Sequence[float] = STARTUP_RETRIES,
    ) -> None:
        self.model = model
        self.name = f"ollama:{model}"
        self._documents, self._queries = prefixes_for(model)
        self._batch = batch
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)
        try:
            self.dim = len(self._first_embedding(url, startup_waits)[0])
        except BaseException:
            self._http.close()
            raise

    def _first_embedding(self, url: str, waits: Sequence[float]) -> list[list[float]]:
        """The dimension probe, tried again with growing waits while Ollama is not up yet (no
        connection, or 503 while it loads); then one clear error, not a traceback."""
        for wait in (*waits, None):
            try:
                return self._embed(["dimension probe"])
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    raise ConfigError(
                        f"the ollama embedder's model {self.model!r} is not on {url}: "
                        f"'ollama pull {self.model}', or set --embed-model"
                    ) from None
                if exc.response.status_code != 503 or wait is None:
                    raise ConfigError(
                        f"the ollama embedder at {url} failed (HTTP {exc.response.status_code}): "
                        f"{exc.response.text[:200]}"
                    ) from None
            except (httpx.TransportError, ValueError) as exc:
                if wait is None:
                    raise ConfigError(
                        f"the ollama embedder at {url} does not answer ({exc or type(exc).__name__}): "
                        "start Ollama, or set --upstream, or use --embedder e5"
                    ) from None
            time.sleep(wait)
        raise AssertionError("unreachable")

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
        # ``upstream`` is the setting as given: with a pool, the first server not marked openai+
        pool = parse_upstreams(upstream, "ollama")
        return OllamaEmbedder(next((s.url for s in pool if s.api == "ollama"), pool[0].url), model)

    register("ollama", factory)
