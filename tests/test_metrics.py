"""GET /metrics: the Prometheus exposition moves with real requests (retrieval, tokens, timings),
shows the index, and follows the key rule (open on loopback, a key elsewhere)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.api.metrics import api_of, retrieval_outcome
from proxy.api.security import key_required
from tests.conftest import CHAT_MODEL, sdk
from tests.ragdocs import QUESTION
from tests.servers import free_port, ragproxy, ragproxy_process
from tests.stub_upstream import StubUpstream

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str, **headers: str) -> Samples:
    reply = httpx.get(base + "/metrics", headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        assert family.documentation, family.name  # every metric says what it counts
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def test_a_chat_with_retrieval_moves_the_counters(rag_proxy: str) -> None:
    before = scrape(rag_proxy)
    reply = sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    assert (reply.model_extra or {})["sources"]
    after = scrape(rag_proxy)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("ragproxy_requests_total", api="openai", endpoint="/v1/chat/completions", status="200") == 1
    assert moved("ragproxy_retrieval_outcomes_total", outcome="injected") == 1
    assert moved("ragproxy_passages_injected_total") >= 1
    assert moved("ragproxy_prompt_tokens_total", api="openai") > 0
    assert moved("ragproxy_completion_tokens_total", api="openai") > 0
    for histogram in ("first_byte", "upstream_wait", "overhead"):
        assert moved(f"ragproxy_{histogram}_seconds_count", api="openai") == 1, histogram
    assert moved("ragproxy_retrieval_seconds_count") == 1
    assert value(after, "ragproxy_upstream_up") == 1
    # the scrape before counts as a request of its own, by route template
    assert moved("ragproxy_requests_total", api="other", endpoint="/metrics", status="200") == 1


def test_an_unrelated_prompt_counts_as_gated_or_nothing_found(rag_proxy: str) -> None:
    before = scrape(rag_proxy)
    sdk(rag_proxy).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=4,
    )
    after = scrape(rag_proxy)
    moved = {
        outcome: total(after, "ragproxy_retrieval_outcomes_total", outcome=outcome)
        - total(before, "ragproxy_retrieval_outcomes_total", outcome=outcome)
        for outcome in ("injected", "found_but_cut", "gated", "nothing_found")
    }
    assert moved["gated"] + moved["nothing_found"] == 1 and moved["injected"] == 0, moved


def test_the_index_gauges_show_the_collection(rag_proxy: str) -> None:
    samples = scrape(rag_proxy)
    assert value(samples, "ragproxy_index_documents", collection="manuals") == 3
    assert value(samples, "ragproxy_index_chunks", collection="manuals") >= 3
    assert value(samples, "ragproxy_index_vectors_pending", collection="manuals") == 0
    assert value(samples, "ragproxy_index_skipped_files", collection="manuals") == 0
    assert value(samples, "ragproxy_index_last_update_timestamp_seconds", collection="manuals") > 1.7e9
    assert ("ragproxy_watch_queue_depth", frozenset()) in samples
    assert value(samples, "ragproxy_watch_rescans_total") >= 1  # the reconciliation at start
    assert ("ragproxy_embedded_chunks_total", frozenset()) in samples


def test_metrics_need_no_key_on_loopback_and_a_down_upstream_shows(tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    with ragproxy(upstream=refused, api_keys=("scrape-key-1234",), db=str(tmp_path / "none.db")) as url:
        assert httpx.get(url + "/v1/models").status_code == 401  # keys apply elsewhere
        samples = scrape(url)  # no key: only this machine can connect
        assert value(samples, "ragproxy_upstream_up") == 0  # the scrape probed the idle upstream
        assert value(samples, "ragproxy_requests_total", api="openai", endpoint="unrouted", status="401") == 1
        key = {"Authorization": "Bearer scrape-key-1234"}
        assert httpx.get(url + "/", headers=key).text == "Ollama is running"


def test_beyond_loopback_metrics_need_a_key() -> None:
    assert not key_required("/metrics", "127.0.0.1", has_keys=True)
    assert not key_required("/metrics", "::1", has_keys=True)
    assert key_required("/metrics", "0.0.0.0", has_keys=True)
    assert key_required("/metrics", "192.168.1.20", has_keys=True)
    assert not key_required("/metrics", "0.0.0.0", has_keys=False)
    assert not key_required("/healthz", "0.0.0.0", has_keys=True)
    assert key_required("/v1/models", "127.0.0.1", has_keys=True)


def test_labels_stay_bounded() -> None:
    assert [api_of(p) for p in ("/", "/api/chat", "/v1/chat/completions", "/v1/models/x")] == [
        "ollama",
        "ollama",
        "openai",
        "openai",
    ]
    assert [api_of(p) for p in ("/v1/responses", "/v1/messages/count_tokens", "/v1/completions")] == [
        "responses",
        "anthropic",
        "completions",
    ]
    assert [api_of(p) for p in ("/v1/rag/search", "/mcp", "/metrics", "/anything/else")] == [
        "rag",
        "mcp",
        "other",
        "other",
    ]
    assert retrieval_outcome({"rag": True, "rag_sources": 2, "rag_found": 3}) == "injected"
    assert retrieval_outcome({"rag": True, "rag_sources": 0, "rag_found": 2}) == "found_but_cut"
    assert retrieval_outcome({"rag": True, "rag_sources": 0, "rag_found": 0, "rag_gated": 4}) == "gated"
    assert (
        retrieval_outcome({"rag": True, "rag_sources": 0, "rag_found": 0, "rag_gated": 0}) == "nothing_found"
    )
    assert retrieval_outcome({"rag": False, "rag_skipped": "client task prompt"}) == "housekeeping_skipped"
    assert retrieval_outcome({"rag": False, "rag_skipped": "off (x-rag: off)"}) == "off"
    assert retrieval_outcome({"rag": False, "rag_skipped": "no index"}) == "off"
    assert retrieval_outcome({"model": "m"}) is None


def test_a_bad_request_leaves_the_upstream_up(proxy_openai: str) -> None:
    """A malformed tool is refused before llama.cpp sees it (it answers such a body with 500)."""
    reply = httpx.post(
        proxy_openai + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "tools": [1]},
        timeout=30,
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "tools[0]"
    assert value(scrape(proxy_openai), "ragproxy_upstream_up") == 1


def test_an_upstream_that_answers_500_is_still_up() -> None:
    """Its answer proves it is there: the 500 is that request's, passed on as 502."""
    with (
        StubUpstream(chat_status=500) as upstream,
        ragproxy(upstream=upstream.url, upstream_api="openai") as base,
    ):
        for stream in (False, True):
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
            assert reply.status_code == 502, reply.text
            assert value(scrape(base), "ragproxy_upstream_up") == 1
        assert upstream.paths.count("/v1/chat/completions") == 2


def test_beyond_loopback_a_key_limited_to_collections_may_not_read_the_metrics(tmp_path: Path) -> None:
    """The metrics name every collection with its documents and chunks: a key that may read only
    some of them gets 403, an unlimited key the metrics."""
    notes, other = tmp_path / "notes", tmp_path / "other"
    for folder in (notes, other):
        folder.mkdir()
        (folder / "a.md").write_text(f"# {folder.name}\n\nA page of {folder.name}.\n")
    flags = (
        "--host",
        "0.0.0.0",
        "--upstream",
        f"http://127.0.0.1:{free_port()}",
        "--db",
        str(tmp_path / "i.db"),
    )
    keys = ("--api-key", "notes-reader@notes", "--api-key", "operator-key")
    with ragproxy_process(*flags, *keys, "--docs", f"notes={notes}", "--docs", f"other={other}") as proxy:
        for path in ("/metrics", "/metrics/"):  # the router serves both
            limited = httpx.get(proxy.url + path, headers={"Authorization": "Bearer notes-reader"})
            assert limited.status_code == 403 and "other" not in limited.text, path
        full = httpx.get(proxy.url + "/metrics", headers={"Authorization": "Bearer operator-key"})
        assert full.status_code == 200 and 'collection="other"' in full.text
