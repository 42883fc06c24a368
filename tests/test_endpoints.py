"""/v1/models, /v1/embeddings, /healthz and /readyz in both upstream modes."""

from __future__ import annotations

import base64
import math
from array import array

import httpx
import openai
import pytest

from tests.conftest import sdk
from tests.servers import Server


def test_models_ollama_mode(proxy_ollama: str) -> None:
    listing = httpx.get(proxy_ollama + "/v1/models").json()
    assert listing["object"] == "list"
    ids = [m["id"] for m in listing["data"]]
    assert "smollm2:135m" in ids and "smollm2-think:135m" in ids
    entry = listing["data"][0]
    assert entry["object"] == "model" and entry["owned_by"] == "library" and entry["created"] > 1_700_000_000
    client = sdk(proxy_ollama, max_retries=0)
    assert client.models.retrieve("smollm2:135m").id == "smollm2:135m"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("absent:7b")


def test_models_openai_mode(proxy_openai: str, llama: Server) -> None:
    direct = httpx.get(llama.url + "/v1/models").json()
    listing = httpx.get(proxy_openai + "/v1/models").json()
    # llama.cpp stamps "created" with the current time: compare the rest.
    strip = [{k: v for k, v in m.items() if k != "created"} for m in direct["data"]]
    assert listing["object"] == "list"
    assert [{k: v for k, v in m.items() if k != "created"} for m in listing["data"]] == strip
    client = sdk(proxy_openai)
    assert [m.id for m in client.models.list()] == [m["id"] for m in direct["data"]]


def direct_vectors(llama: Server, texts: list[str]) -> list[list[float]]:
    reply = httpx.post(llama.url + "/v1/embeddings", json={"input": texts}, timeout=60).json()
    return [item["embedding"] for item in reply["data"]]


TEXTS = ["The lighthouse keeper slept.", "熊猫吃竹子。"]


@pytest.mark.parametrize("model", ["smollm2:135m"])
def test_embeddings_float_and_base64(proxy_any: str, llama: Server, model: str) -> None:
    expected = direct_vectors(llama, TEXTS)
    response = httpx.post(
        proxy_any + "/v1/embeddings",
        json={"model": model, "input": TEXTS, "encoding_format": "float"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "list" and data["model"] == model
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in data["data"])
    for got, want in zip(data["data"], expected, strict=True):
        assert len(got["embedding"]) == 576
        assert all(
            math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
            for a, b in zip(got["embedding"], want, strict=True)
        )
    assert (
        data["usage"]["prompt_tokens"] > 0 and data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"]
    )

    encoded = httpx.post(
        proxy_any + "/v1/embeddings",
        json={"model": model, "input": TEXTS[0], "encoding_format": "base64"},
        timeout=60,
    ).json()
    vector = array("f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert len(vector) == 576
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(vector, expected[0], strict=True)
    )

    # The SDK asks for base64 by default and decodes it itself.
    client = sdk(proxy_any)
    decoded = client.embeddings.create(model=model, input=TEXTS)
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        for a, b in zip(decoded.data[1].embedding, expected[1], strict=True)
    )


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x"},
        {"model": "m"},
        {"model": "m", "input": []},
        {"model": "m", "input": [1.5]},
        {"model": "m", "input": "x", "encoding_format": "hex"},
    ],
)
def test_embeddings_bad_input(proxy_any: str, body: dict[str, object]) -> None:
    response = httpx.post(proxy_any + "/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_health_and_ready(proxy_any: str) -> None:
    assert httpx.get(proxy_any + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(proxy_any + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_request_id_header(proxy_any: str) -> None:
    assert len(httpx.get(proxy_any + "/healthz").headers["x-request-id"]) == 16
    given = httpx.get(proxy_any + "/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
