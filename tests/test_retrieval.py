"""Retrieval in every chat, end to end: real documents indexed with the real e5 embedder, the
official openai client, the Ollama-behaving server (and llama.cpp behind it) as the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.index.service import IndexService
from proxy.index.store import embedding_text
from proxy.settings import Settings
from proxy.text import estimate_tokens
from tests.conftest import CHAT_MODEL, UpstreamLog, sdk
from tests.ragdocs import CANARY, DOCS, QUESTION
from tests.servers import Server, llama_server, ragproxy


def sent_text(upstream_log: UpstreamLog) -> str:
    (sent,) = upstream_log.requests("/api/chat")
    return "\n".join(str(m.get("content")) for m in sent["body"]["messages"])


def sent_body(upstream_log: UpstreamLog) -> dict[str, Any]:
    (sent,) = upstream_log.requests("/api/chat")
    body: dict[str, Any] = sent["body"]
    return body


def test_streamed_chat_carries_the_chunk_upstream_and_names_the_file(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    client = sdk(rag_proxy)
    with client.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=8, stream=True
    ) as response:
        assert response.headers["x-ragproxy-sources"] == "1"
        chunks = list(response.parse())
    assert CANARY in sent_text(upstream_log)
    last = chunks[-1]
    sources = last.model_extra["sources"] if last.model_extra else None
    assert sources and sources[0]["file"] == "valves/zephyr.md"
    assert sources[0]["collection"] == "manuals" and sources[0]["heading"] == "Zephyr valve > Maintenance"
    assert all("sources" not in (c.model_extra or {}) for c in chunks[:-1])
    sent = sent_body(upstream_log)
    assert (
        sent["messages"][0]["role"] == "system" and "[1] valves/zephyr.md" in sent["messages"][0]["content"]
    )
    assert "rag" not in sent


def test_non_streamed_reply_has_sources_and_usage_chunk_carries_them(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    client = sdk(rag_proxy)
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    sources = (reply.model_extra or {})["sources"]
    assert [s["file"] for s in sources] == ["valves/zephyr.md"] and sources[0]["score"] > 0.8
    upstream_log.clear()
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and (chunks[-1].model_extra or {})["sources"][0]["index"] == 1


def test_chinese_question_finds_the_chinese_document(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    reply = sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "大熊猫每天吃多少竹子？"}], max_tokens=4
    )
    assert (reply.model_extra or {})["sources"][0]["file"] == "zoo/panda.md"
    assert "三十八公斤" in sent_text(upstream_log)


@pytest.mark.parametrize(
    "how",
    ["body-false", "body-object", "header", "alias"],
)
def test_each_control_turns_retrieval_off(rag_proxy: str, upstream_log: UpstreamLog, how: str) -> None:
    client = sdk(rag_proxy)
    kwargs: dict[str, Any] = {"model": CHAT_MODEL}
    if how == "body-false":
        kwargs["extra_body"] = {"rag": False}
    elif how == "body-object":
        kwargs["extra_body"] = {"rag": {"enabled": False}}
    elif how == "header":
        kwargs["extra_headers"] = {"X-RAG": "off"}
    else:
        kwargs["model"] = f"{CHAT_MODEL}+norag"
    reply = client.chat.completions.create(
        messages=[{"role": "user", "content": QUESTION}], max_tokens=4, **kwargs
    )
    assert CANARY not in sent_text(upstream_log)
    assert sent_body(upstream_log)["model"] == CHAT_MODEL
    assert "sources" not in (reply.model_extra or {})


def test_controls_turn_retrieval_on_and_choose_collections(
    ollama: Server, docs_index: tuple[Path, Path], upstream_log: UpstreamLog
) -> None:
    folder, db = docs_index
    with ragproxy(
        upstream=ollama.url, upstream_api="ollama", model=CHAT_MODEL, db=str(db), rag=False, num_ctx_max=2048
    ) as url:
        client = sdk(url)
        question = [{"role": "user", "content": QUESTION}]
        client.chat.completions.create(model=CHAT_MODEL, messages=question, max_tokens=4)
        assert CANARY not in sent_text(upstream_log)  # off by the settings
        for kwargs in (
            {"model": f"{CHAT_MODEL}+manuals"},
            {"model": CHAT_MODEL, "extra_headers": {"X-RAG": "on", "X-RAG-Collections": "manuals"}},
            {
                "model": CHAT_MODEL,
                "extra_body": {"rag": {"enabled": True, "collections": ["manuals"], "top_k": 1}},
            },
        ):
            upstream_log.clear()
            reply = client.chat.completions.create(messages=question, max_tokens=4, **kwargs)
            assert CANARY in sent_text(upstream_log), kwargs
            assert len((reply.model_extra or {})["sources"]) == 1
        with pytest.raises(openai.BadRequestError, match="unknown collection 'elsewhere'"):
            client.chat.completions.create(
                model=CHAT_MODEL,
                messages=question,
                max_tokens=4,
                extra_headers={"X-RAG-Collections": "elsewhere"},
            )
        with pytest.raises(openai.BadRequestError, match="top_k"):
            client.chat.completions.create(
                model=CHAT_MODEL, messages=question, max_tokens=4, extra_body={"rag": {"top_k": 0}}
            )
        models = [m.id for m in client.models.list()]
        assert f"{CHAT_MODEL}+manuals" in models and f"{CHAT_MODEL}+norag" in models and CHAT_MODEL in models


def test_housekeeping_requests_get_no_context(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    title_task = (
        "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
        f"### Chat History:\n<chat_history>\nUSER: {QUESTION}\n</chat_history>"
    )
    reply = sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": title_task}], max_tokens=4
    )
    assert CANARY not in sent_text(upstream_log) and "sources" not in (reply.model_extra or {})


def test_unrelated_question_gets_no_context(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    reply = sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=4,
    )
    assert (reply.model_extra or {})["sources"] == []
    assert len(sent_body(upstream_log)["messages"]) == 1


def test_follow_up_question_uses_the_previous_turn(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    messages = [
        {"role": "user", "content": "Tell me about the Zephyr-9 valve maintenance."},
        {"role": "assistant", "content": "It is a valve."},
        {"role": "user", "content": "And its code?"},
    ]
    sdk(rag_proxy).chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=4)  # type: ignore[arg-type]
    assert CANARY in sent_text(upstream_log)


def test_long_history_and_context_fit_the_window_with_num_ctx(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    """40 old turns of ~600 tokens would need ~24k tokens: the oldest are dropped, the context
    and the question stay, num_ctx is set, and llama.cpp (2048-token slots, which refuse any
    longer prompt) answers: the prompt really fitted."""
    filler = "The weather report for the coastal region was long and uneventful. " * 36
    history: list[dict[str, str]] = []
    for turn in range(40):
        history += [
            {"role": "user", "content": f"Old question {turn}. {filler}"},
            {"role": "assistant", "content": "Noted."},
        ]
    messages = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": QUESTION}]
    reply = sdk(rag_proxy).chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=16)  # type: ignore[arg-type]
    sent = sent_body(upstream_log)
    num_ctx = sent["options"]["num_ctx"]
    assert num_ctx == 2048
    assert sent["messages"][0]["content"].startswith("Be brief.") and CANARY in sent["messages"][0]["content"]
    assert sent["messages"][-1]["content"] == QUESTION
    assert 3 < len(sent["messages"]) < len(messages)  # some history kept, the oldest dropped
    assert "Old question 39." in sent_text(upstream_log) and "Old question 0." not in sent_text(upstream_log)
    estimate = sum(estimate_tokens(str(m["content"])) for m in sent["messages"])
    assert estimate + 16 < num_ctx
    assert reply.usage is not None and 0 < reply.usage.prompt_tokens < num_ctx


def test_short_chat_asks_for_the_smallest_num_ctx_step(rag_proxy: str, upstream_log: UpstreamLog) -> None:
    sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        extra_body={"rag": False},
    )
    assert sent_body(upstream_log)["options"]["num_ctx"] == 2048
    upstream_log.clear()
    sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        extra_body={"rag": False, "options": {"num_ctx": 1024}},
    )
    assert sent_body(upstream_log)["options"]["num_ctx"] == 1024  # the client's own choice stands


def test_openai_upstream_learns_the_window_from_llama_cpp(
    llama: Server, docs_index: tuple[Path, Path]
) -> None:
    _, db = docs_index
    with ragproxy(upstream=llama.url, upstream_api="openai", model="smollm2", db=str(db)) as url:
        reply = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4},
            timeout=60,
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-ragproxy-sources"] == "1"
    assert reply.json()["sources"][0]["file"] == "valves/zephyr.md"


def test_rag_search_returns_chunks_with_scores(rag_proxy: str) -> None:
    for mode in ("hybrid", "keyword", "vector"):
        reply = httpx.post(
            rag_proxy + "/v1/rag/search", json={"query": QUESTION, "k": 2, "mode": mode}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        data = reply.json()["data"]
        assert data[0]["file"] == "valves/zephyr.md" and CANARY in data[0]["text"], mode
        assert len(data) <= 2 and data[0]["score"] >= data[-1]["score"]
    bad = httpx.post(rag_proxy + "/v1/rag/search", json={"query": "x", "collections": ["nope"]}, timeout=30)
    assert bad.status_code == 400 and "unknown collection 'nope'" in bad.json()["error"]["message"]
    assert httpx.post(rag_proxy + "/v1/rag/search", json={"k": 3}, timeout=30).status_code == 400


def test_rag_preview_shows_the_upstream_request_without_calling_the_model(
    rag_proxy: str, upstream_log: UpstreamLog
) -> None:
    reply = httpx.post(
        rag_proxy + "/v1/rag/preview",
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 100},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    preview = reply.json()
    assert upstream_log.requests("/api/chat") == []
    sent = preview["upstream"]["body"]
    assert preview["upstream"]["path"] == "/api/chat" and sent["options"]["num_ctx"] == 2048
    assert CANARY in sent["messages"][0]["content"] and sent["messages"][1]["content"] == QUESTION
    tokens = preview["tokens"]
    assert len(tokens["messages"]) == 2 and tokens["reserved_for_answer"] == 100 and tokens["window"] == 2048
    assert sum(tokens["messages"]) < tokens["prompt_estimate"] < 2048
    assert preview["sources"][0]["file"] == "valves/zephyr.md" and preview["rag"]["query"] == QUESTION


def test_embeddings_from_the_index_embedder(rag_proxy: str, docs_index: tuple[Path, Path]) -> None:
    client = sdk(rag_proxy)
    names = [m.id for m in client.models.list()]
    embedder = next(name for name in names if "e5" in name)
    passage = client.embeddings.create(model=embedder, input=[DOCS["zoo/panda.md"], QUESTION])
    query = client.embeddings.create(model="e5", input=QUESTION, extra_body={"input_type": "query"})
    assert len(passage.data) == 2 and len(passage.data[0].embedding) == 384
    # the same vector the index search uses for this question
    _, db = docs_index
    service = IndexService(Settings(db=str(db)))
    try:
        expected = service.embedder.embed_query(QUESTION)
    finally:
        service.close()
    assert query.data[0].embedding == pytest.approx(expected, abs=1e-5)
    assert passage.data[1].embedding != pytest.approx(expected, abs=1e-3)  # passages get their own prefix


@pytest.fixture(scope="module")
def reranking_llama() -> Iterator[Server]:
    """llama.cpp's server with --reranking: a real /v1/rerank (the tiny chat model's scores mean
    little, but the order they give is the order to check)."""
    with llama_server("--reranking", slots=1) as server:
        yield server


def test_reranker_plugin_orders_the_context(
    ollama: Server, docs_index: tuple[Path, Path], reranking_llama: Server
) -> None:
    _, db = docs_index
    settings = {"upstream": ollama.url, "model": CHAT_MODEL, "db": str(db), "num_ctx_max": 2048}
    chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": QUESTION}]}
    with ragproxy(**settings, reranker="http", rerank_url=reranking_llama.url, min_score=0.0, top_k=3) as url:
        found = httpx.post(url + "/v1/rag/search", json={"query": QUESTION, "k": 3, "mode": "vector"}).json()[
            "data"
        ]
        preview = httpx.post(url + "/v1/rag/preview", json=chat, timeout=60).json()
    texts = [embedding_text(hit["text"], hit["heading"]) for hit in found]
    scores = httpx.post(
        reranking_llama.url + "/v1/rerank", json={"query": QUESTION, "documents": texts}, timeout=60
    ).json()["results"]
    expected = [found[r["index"]]["file"] for r in sorted(scores, key=lambda r: -r["relevance_score"])]
    assert [s["file"] for s in preview["sources"]] == expected and len(expected) == 3

    # a reranking server that is down costs the order, not the chat
    with ragproxy(**settings, reranker="http", rerank_url="http://127.0.0.1:9", top_k=1) as url:
        reply = httpx.post(url + "/v1/chat/completions", json={**chat, "max_tokens": 4}, timeout=60)
    assert reply.status_code == 200 and reply.json()["sources"][0]["file"] == "valves/zephyr.md"


def test_a_prompt_that_filled_num_ctx_is_flagged() -> None:
    """Ollama cuts an over-long prompt silently; the reply's prompt_eval_count tells."""
    from proxy.pipeline.call import ChatCall, check_truncation

    call = ChatCall(body={}, include_usage=False)
    call.rag.prompt_estimate, call.rag.num_ctx = 1500, 2048
    call.stats.prompt_tokens = 1200
    check_truncation(call)
    assert not call.stats.truncated
    call.stats.prompt_tokens = 2048  # the window was full: the start of the prompt was dropped
    check_truncation(call)
    assert call.stats.truncated


def test_chat_with_the_embedder_is_refused_on_both_apis(rag_proxy: str) -> None:
    names = [m.id for m in sdk(rag_proxy).models.list()]
    embedder = next(name for name in names if "e5" in name)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(rag_proxy).chat.completions.create(
            model=embedder, messages=[{"role": "user", "content": QUESTION}]
        )
    assert "embedding model" in refused.value.message
    reply = httpx.post(
        rag_proxy + "/api/chat",
        json={"model": "e5", "messages": [{"role": "user", "content": QUESTION}]},
        timeout=30,
    )
    assert reply.status_code == 400 and "embedding model" in reply.json()["error"]
