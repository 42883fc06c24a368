"""Fitting a chat into the window without starving the passages: the rules on their own, then
Open WebUI's captured tool array through both APIs against the Ollama-behaving upstream."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.pipeline.context import MAX_SCALE, RECENT, SCALE_HEADROOM, WindowCache, estimate, fit
from proxy.pipeline.conversation import strip_own_additions
from proxy.pipeline.passages import Passage
from proxy.pipeline.render import footnote
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.ragdocs import CANARY, QUESTION
from tests.servers import Server, ragproxy

TOOLS_NO = "smollm2-r1-legacy:135m"  # the Ollama-behaving server gives it no tools capability
TOOLS_YES = "smollm2:135m"


def passage(number: int, words: int = 60, text: str = "") -> Passage:
    body = text or " ".join(f"fact{number}-{i}" for i in range(words))
    return Passage(number, "docs", f"doc{number}.md", 0, len(body), None, None, 0.9, body, (number,))


def history(turns: int, words: int = 80) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        filler = " ".join(f"old{turn}-{i}" for i in range(words))
        messages += [{"role": "user", "content": f"Q{turn} {filler}"}, {"role": "assistant", "content": "ok"}]
    return messages


def test_best_passage_displaces_droppable_tools() -> None:
    messages = [{"role": "user", "content": "What is the code?"}]
    fitted = fit(
        messages, [passage(1)], window=1000, reserve=200, placement="system", extra=900, extra_droppable=True
    )
    assert [p.number for p in fitted.passages] == [1] and fitted.extra_dropped
    assert fitted.prompt_estimate <= 800


def test_tools_in_use_stay_and_the_best_passage_is_shortened() -> None:
    messages = [{"role": "user", "content": "What is the code?"}]
    fitted = fit(messages, [passage(1, words=400)], window=1000, reserve=200, placement="system", extra=500)
    assert not fitted.extra_dropped and fitted.shortened
    (sent,) = fitted.passages
    assert sent.text.endswith("…") and len(sent.text) < len(passage(1, words=400).text)
    assert estimate(fitted.messages, 500) <= 800


def test_passages_come_before_old_history_but_the_newest_turn_stays() -> None:
    messages = [*history(20), {"role": "user", "content": "And the code?"}]
    passages = [passage(n) for n in range(1, 6)]
    fitted = fit(messages, passages, window=2048, reserve=256, placement="system")
    assert fitted.passages[0].text == passages[0].text
    assert len(fitted.passages) >= 3  # the guaranteed share
    assert fitted.history_dropped > 0
    sent = " ".join(str(m["content"]) for m in fitted.messages)
    assert "Q19 " in sent and "Q0 " not in sent  # newest history kept, oldest dropped
    assert fitted.prompt_estimate <= 2048 - 256


def test_a_window_too_small_for_any_passage_sends_none() -> None:
    messages = [{"role": "user", "content": "x " * 2000}]
    fitted = fit(messages, [passage(1)], window=1024, reserve=256, placement="system")
    assert fitted.passages == [] and fitted.messages == messages


def test_own_footnote_and_context_are_taken_out_of_the_history() -> None:
    note = footnote([passage(1), passage(2)])
    messages = [
        {"role": "user", "content": "Sources:\n[1] my own list"},  # the user's text stays as typed
        {"role": "assistant", "content": f"The code is {CANARY} [1].{note}"},
        {
            "role": "user",
            "content": "### Task:\nSuggest follow-ups.\nASSISTANT: The code [1]." + note + "\nok",
        },
    ]
    cleaned = strip_own_additions(messages)
    assert cleaned[0] == messages[0]
    assert cleaned[1]["content"] == f"The code is {CANARY} [1]."
    assert "Sources:" not in cleaned[2]["content"] and cleaned[2]["content"].endswith("[1].\nok")


# -- Open WebUI's tools through both APIs ---------------------------------------------------------------
def open_webui_tools() -> list[dict[str, Any]]:
    """The built-in tool definitions Open WebUI sends with every chat from its UI, with its
    default settings (captured from a real Open WebUI: ``tests/e2e/open_webui.sh --capture-tools``)."""
    captured = json.loads(
        (Path(__file__).parent / "data" / "open-webui-tools.json").read_text(encoding="utf-8")
    )
    tools: list[dict[str, Any]] = captured["tools"]
    return tools


def chat(url: str, api: str, model: str, tools: list[dict[str, Any]]) -> httpx.Response:
    messages = [{"role": "user", "content": QUESTION}]
    if api == "ollama":
        body = {"model": model, "messages": messages, "tools": tools, "stream": True}
        body["options"] = {"num_predict": 8}  # the answer is not what is tested: a short one
        return httpx.post(url + "/api/chat", json=body, timeout=120)
    body = {"model": model, "messages": messages, "tools": tools, "stream": True, "max_tokens": 8}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.parametrize("api", ["ollama", "openai"])
@pytest.mark.parametrize("model", [TOOLS_NO, TOOLS_YES])
def test_open_webui_tools_leave_room_for_the_passage(
    rag_proxy: str, upstream_log: UpstreamLog, api: str, model: str
) -> None:
    """A 2048-token window cannot hold the tools (~7,000 tokens) and a passage: for a model
    without tools they are dropped before fitting; for one with tools, not yet used in the chat,
    they give way to the best passage. Either way the passage reaches the upstream."""
    reply = chat(rag_proxy, api, model, open_webui_tools())
    assert reply.status_code == 200, reply.text
    (sent,) = upstream_log.requests("/api/chat")
    body = sent["body"]
    assert CANARY in json.dumps(body["messages"])
    assert "tools" not in body
    assert reply.headers["x-ragproxy-sources"] == "1"


def test_with_room_the_tools_and_the_passage_both_go(
    ollama: Server, docs_index: tuple[Path, Path], upstream_log: UpstreamLog
) -> None:
    """With the default --num-ctx-max (16384) and a model of a larger window, a tools model keeps
    Open WebUI's tools, gets the passage, and num_ctx is raised to hold both (seen in the dry
    run: llama.cpp's test slots are 2048 tokens, the test server's models say 8192)."""
    folder, db = docs_index
    with ragproxy(
        upstream=ollama.url,
        upstream_api="ollama",
        docs=(f"manuals={folder}",),
        db=str(db),
        context_window=32768,
    ) as url:
        body = {
            "model": TOOLS_YES,
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": open_webui_tools(),
        }
        preview = httpx.post(url + "/v1/rag/preview", json=body, timeout=60).json()
    sent = preview["upstream"]["body"]
    assert len(sent["tools"]) == len(open_webui_tools()) and CANARY in json.dumps(sent["messages"])
    assert sent["options"]["num_ctx"] == 16384
    assert preview["rag"]["found"] == preview["rag"]["sent"] == 1


def in_use_chat(system_words: int) -> list[dict[str, Any]]:
    """A chat whose tools are in use already, after a long system prompt."""
    return [
        {"role": "system", "content": "Answer with care. " * system_words},
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "search_web", "arguments": {}}}],
        },
        {"role": "tool", "content": "no result", "tool_name": "search_web"},
        {"role": "user", "content": QUESTION},
    ]


def test_a_cut_is_reported_and_a_prompt_far_over_the_window_refused(
    ollama: Server, docs_index: tuple[Path, Path]
) -> None:
    """Tools already in use stay; with no room left for any passage the reply says 0/1. A prompt
    estimated far over the window (by more than the estimate ever overstates) is refused: Ollama
    would cut it without a word. The test models say 8,192 tokens."""
    folder, db = docs_index
    with ragproxy(upstream=ollama.url, upstream_api="ollama", docs=(f"manuals={folder}",), db=str(db)) as url:
        body = {
            "model": TOOLS_YES,
            "messages": in_use_chat(100),
            "tools": open_webui_tools(),
            "max_tokens": 4,
        }
        reply = httpx.post(url + "/v1/rag/preview", json=body, timeout=60).json()
        assert reply["rag"] == {**reply["rag"], "found": 1, "sent": 0, "cut": "window"}
        assert len(reply["upstream"]["body"]["tools"]) == len(open_webui_tools())
        refused = httpx.post(
            url + "/v1/rag/preview", json={**body, "messages": in_use_chat(1500)}, timeout=60
        )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "8192-token window" in error["message"] and "this one's is 8192 tokens" in error["message"]


# -- the model's own count ------------------------------------------------------------------------------
# SmolLM2's English vocabulary spends about 1.7x the estimate on Chinese and emoji (the estimate is
# priced for Qwen 2 and Llama 3): only its own count tells.
CHINESE = (
    "长江是中国第一大河，全长约六千三百公里，流经青海、西藏、四川、云南、重庆、湖北、湖南、江西、"
    "安徽、江苏和上海。😀🎉"
)


def chinese_chat(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages += [
            {"role": "user", "content": f"第{turn}个问题：{CHINESE}"},
            {"role": "assistant", "content": f"第{turn}个回答：{CHINESE}"},
        ]
    return [*messages, {"role": "user", "content": "请用一句话总结。"}]


def test_a_chat_estimated_to_fit_but_counted_over_the_window_is_fitted_by_the_count(llama: Server) -> None:
    """llama.cpp refuses a prompt over its window (400, "exceeds the available context size").
    This chat's estimate fits a 2048-token slot but SmolLM2 counts it over: the proxy asks the
    server's own count, drops the oldest turns until the count fits, and the reply is 200."""
    messages = chinese_chat(10)
    body = {"model": "smollm2", "messages": messages, "max_tokens": 8}
    assert estimate(messages) < 2048 - 8
    refused = httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=120)
    assert refused.status_code == 400 and "context" in refused.text  # the chat as it was forwarded
    with ragproxy(upstream=llama.url, upstream_api="openai", model="smollm2") as url:
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert 0 < reply.json()["usage"]["prompt_tokens"] <= 2048 - 8
        tokens = httpx.post(url + "/v1/rag/preview", json=body, timeout=60).json()["tokens"]
    assert tokens["history_dropped"] > 0 and tokens["scale"] > 1.5  # learned: the next is estimated so


def test_the_prompt_tokens_ollama_reports_raise_the_models_estimate(ollama: Server) -> None:
    """Ollama cannot count a prompt before it runs it, and cuts one over num_ctx silently: the
    prompt_eval_count of each reply teaches the model's scale, so the next estimate holds it."""
    body = {"model": CHAT_MODEL, "messages": chinese_chat(3), "max_tokens": 4}
    with ragproxy(upstream=ollama.url, upstream_api="ollama", model=CHAT_MODEL, num_ctx_max=2048) as url:
        before = httpx.post(url + "/v1/rag/preview", json=body, timeout=60).json()["tokens"]
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        counted = reply.json()["usage"]["prompt_tokens"]
        after = httpx.post(url + "/v1/rag/preview", json=body, timeout=60).json()["tokens"]
    assert before["prompt_estimate"] < counted <= after["prompt_estimate"] < 1.2 * counted


def odd_chat(alphabet: str, turns: int, seed: int) -> list[dict[str, Any]]:
    """A conversation of random letters of ``alphabet``: text no estimate prices right."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    for _turn in range(turns):
        text = "".join(rng.choice(alphabet) for _ in range(100))
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "hello"}]
    return [*messages, {"role": "user", "content": "hello"}]


RUNIC = "".join(chr(c) for c in range(0x16A0, 0x16F0))
LOWER = "abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("alphabet", [RUNIC, LOWER], ids=["runic", "random-letters"])
def test_text_the_estimate_prices_low_is_counted_and_fitted(llama: Server, alphabet: str) -> None:
    """Random letters cost a tokenizer two or three times what any estimate of natural text says:
    llama.cpp refused the chat (400, over its window) when it was forwarded as fitted by the
    estimate. The count catches it, this request's fitting is scaled by it, and the reply is 200."""
    messages = odd_chat(alphabet, 50, seed=4)
    body = {"model": "smollm2", "messages": messages, "max_tokens": 8}
    with ragproxy(upstream=llama.url, upstream_api="openai", model="smollm2") as url:
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert 0 < reply.json()["usage"]["prompt_tokens"] <= 2048 - 8


def test_one_odd_prompt_raises_a_models_scale_for_a_few_requests_only() -> None:
    windows = WindowCache()
    windows.learn("m", real=3000, estimated=500)  # a prompt of a script the estimate prices low
    assert windows.scale("m") == MAX_SCALE
    for _ in range(RECENT - 1):
        windows.learn("m", real=900, estimated=1000)  # ordinary chats
        assert windows.scale("m") == MAX_SCALE
    windows.learn("m", real=900, estimated=1000)
    assert windows.scale("m") == 1.0  # the odd one has aged out
    windows.learn("m", real=1500, estimated=1000)
    assert windows.scale("m") == pytest.approx(1.5 * SCALE_HEADROOM)


def test_a_prompt_the_server_counts_over_its_window_with_nothing_left_to_drop_is_refused_clearly(
    llama: Server,
) -> None:
    """A system prompt larger than the whole window cannot be fitted: the count says so, and the
    client hears it from ragproxy, with OpenAI's code, instead of the prompt being sent."""
    system = " ".join(f"rule {i}: answer with care and cite the page." for i in range(400))
    body = {
        "model": "smollm2",
        "max_tokens": 8,
        "messages": [{"role": "system", "content": system}, *odd_chat(LOWER, 1, 1)],
    }
    with ragproxy(upstream=llama.url, upstream_api="openai", model="smollm2") as url:
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages"), error
    assert "2048-token window" in error["message"]
