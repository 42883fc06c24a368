"""Several upstreams as one pool, against real servers: llama.cpp servers that report the name
they were started with (``-a smollm2,NAME``, NAME sorting first: the reply's ``model`` says which
one answered), and Ollama-behaving servers that fail on demand."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.cli import build_parser, settings_from_args
from proxy.errors import ConfigError
from proxy.settings import UpstreamSpec, load_settings
from proxy.upstream.pool import model_key
from tests.conftest import CHAT_MODEL, UpstreamLog
from tests.servers import Server, fake_ollama, free_port, llama_server, ragproxy, stop
from tests.stub_upstream import StubUpstream
from tests.test_chat_wire import PROMPT, sse_events
from tests.test_doctor import doctor, lines
from tests.test_failures import stream_error


# -- settings ----------------------------------------------------------------------------------------
def test_one_upstream_as_before() -> None:
    settings = load_settings(env={"RAGPROXY_UPSTREAM": "http://gpu:11434/"})
    assert settings.upstream_base == "http://gpu:11434"
    assert settings.upstreams() == (UpstreamSpec("http://gpu:11434", "ollama"),)


def test_repeated_flag() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--upstream",
            "http://a:11434",
            "--upstream",
            "openai+http://b:8080/",
            "--upstream-api",
            "ollama",
        ]
    )
    assert settings_from_args(args).upstreams() == (
        UpstreamSpec("http://a:11434", "ollama"),
        UpstreamSpec("http://b:8080", "openai"),
    )


def test_environment_comma_separated_and_default_api() -> None:
    env = {
        "RAGPROXY_UPSTREAM": "http://a:8080, ollama+http://b:11434,http://a:8080",
        "RAGPROXY_UPSTREAM_API": "openai",
    }
    assert load_settings(env=env).upstreams() == (  # the repeated one kept once
        UpstreamSpec("http://a:8080", "openai"),
        UpstreamSpec("http://b:11434", "ollama"),
    )


def test_config_file_list(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('upstream = ["http://a:11434", "openai+https://b/v"]\nupstream_check_interval = 2\n')
    settings = load_settings(env={}, config_file=config)
    assert settings.upstreams() == (
        UpstreamSpec("http://a:11434", "ollama"),
        UpstreamSpec("https://b/v", "openai"),
    )
    assert settings.upstream_check_interval == 2.0
    flag = load_settings(cli={"upstream": ["http://c:1"]}, env={}, config_file=config)
    assert flag.upstreams() == (UpstreamSpec("http://c:1", "ollama"),)  # the flag replaces the file's list


@pytest.mark.parametrize("value", ["grpc+http://a:1", "openai+ftp://a", "http://a:1,file:///x", ",", ""])
def test_bad_upstreams_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="upstream must"):
        load_settings(env={"RAGPROXY_UPSTREAM": value})


def test_ollama_names_compare_as_ollama_does() -> None:
    assert (
        model_key("llama3", "ollama") == model_key("llama3:latest", "ollama") == model_key("Llama3", "ollama")
    )
    assert model_key("library/llama3", "ollama") == "library/llama3:latest"
    assert model_key("host:5000/llama3", "ollama") == "host:5000/llama3:latest"  # a port is no tag
    assert model_key("llama3:8b", "ollama") != model_key("llama3", "ollama")
    assert model_key("Qwen/Qwen2.5", "openai") == "Qwen/Qwen2.5"


# -- helpers ------------------------------------------------------------------------------------------
def known(base: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The pool's upstreams once a health check has listed the models of ``count`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upstreams = httpx.get(base + "/readyz", timeout=10).json().get("upstreams") or []
        if sum(u["models"] is not None for u in upstreams) >= count:
            return upstreams  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"the pool did not list the models of {count} upstreams")


def served_by(base: str, model: str = "smollm2", stream: bool = False) -> str:
    """The name of the llama.cpp server that answered a short chat."""
    body = {"model": model, "messages": PROMPT, "max_tokens": 3, "stream": stream, "temperature": 0}
    response = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    if stream:
        *chunks, done = sse_events(response.content)
        assert done == b"[DONE]"
        return str(orjson.loads(chunks[0])["model"])
    return str(response.json()["model"])


# -- two llama.cpp servers -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one() -> Iterator[Server]:
    with llama_server("-a", "smollm2,alpha", slots=1) as server:
        yield server


@pytest.fixture(scope="module")
def two() -> Iterator[Server]:
    with llama_server("-a", "smollm2,beta", slots=1) as server:
        yield server


@pytest.fixture(scope="module")
def pair(one: Server, two: Server) -> Iterator[str]:
    with ragproxy(upstream=f"{one.url},{two.url}", upstream_api="openai", model="smollm2") as base:
        known(base, 2)
        yield base


def test_requests_spread_over_both(pair: str) -> None:
    names = [served_by(pair, stream=i % 2 == 0) for i in range(6)]
    assert set(names) == {"alpha", "beta"}
    assert abs(names.count("alpha") - names.count("beta")) <= 1  # idle: taken in turn


def test_the_least_busy_takes_the_requests(pair: str) -> None:
    """While one server streams a long answer, the short requests go to the other."""
    body = {"model": "smollm2", "messages": PROMPT, "max_tokens": 400, "stream": True, "temperature": 0}
    started, release = threading.Event(), threading.Event()
    busy: list[str] = []

    def long_stream() -> None:
        with httpx.stream("POST", pair + "/v1/chat/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and not busy:
                    busy.append(orjson.loads(line[6:])["model"])
                    started.set()
                    release.wait(60)  # the connection stays open: still in flight

    thread = threading.Thread(target=long_stream)
    thread.start()
    try:
        assert started.wait(60)
        names = [served_by(pair, stream=i % 2 == 1) for i in range(4)]
        in_flight = httpx.get(pair + "/metrics", timeout=10).text
    finally:
        release.set()
        thread.join(60)
    other = {"alpha": "beta", "beta": "alpha"}[busy[0]]
    assert names == [other] * 4
    assert 'ragproxy_upstream_in_flight{upstream="' in in_flight


def test_routing_by_model(pair: str) -> None:
    for stream in (False, True):
        assert [served_by(pair, "alpha", stream) for _ in range(3)] == ["alpha"] * 3
        assert [served_by(pair, "beta", stream) for _ in range(3)] == ["beta"] * 3


def test_model_lists_merged(pair: str) -> None:
    ids = [entry["id"] for entry in httpx.get(pair + "/v1/models", timeout=10).json()["data"]]
    assert sorted(ids) == ["alpha", "beta"]
    names = [entry["name"] for entry in httpx.get(pair + "/api/tags", timeout=10).json()["models"]]
    assert sorted(names) == ["alpha", "beta"]
    upstreams = httpx.get(pair + "/readyz", timeout=10).json()["upstreams"]
    assert [u["models"] for u in upstreams] == [["alpha", "smollm2"], ["beta", "smollm2"]]


def test_status_page_lists_each_upstream(pair: str, one: Server, two: Server) -> None:
    page = httpx.get(pair + "/ui/", timeout=30).text
    assert "Upstreams (2)" in page and one.url in page and two.url in page


def test_a_stopped_server_is_passed_over(one: Server, captured: io.StringIO) -> None:
    """Requests keep succeeding when a server stops, from the first one after it stopped (before
    any health check has noticed: the checks here run once a minute)."""
    with llama_server("-a", "smollm2,gamma", slots=1) as three:
        upstream = f"{one.url},openai+{three.url}"
        with ragproxy(upstream=upstream, upstream_api="openai", upstream_check_interval=60) as base:
            known(base, 2)
            assert {served_by(base, stream=i % 2 == 0) for i in range(4)} == {"alpha", "gamma"}
            stop(three.process)
            assert [served_by(base, stream=i % 2 == 0) for i in range(6)] == ["alpha"] * 6
            events = [orjson.loads(line) for line in captured.getvalue().splitlines()]
            failovers = [e for e in events if e.get("event") == "upstream.failover"]
            assert failovers and failovers[0]["upstream"] == three.url  # asked first, passed over
            chats = [
                e for e in events if e.get("event") == "request" and e.get("path") == "/v1/chat/completions"
            ]
            assert [e["upstream"] for e in chats[-6:]] == [one.url] * 6  # the request log names who answered
            models = httpx.get(base + "/v1/models", timeout=10).json()["data"]
            assert [m["id"] for m in models] == ["alpha"]  # the listing leaves the stopped server out
            upstreams = httpx.get(base + "/readyz", timeout=10).json()["upstreams"]
            assert [u["up"] for u in upstreams] == [True, False]
            metrics = httpx.get(base + "/metrics", timeout=10).text
            assert f'ragproxy_upstream_member_up{{upstream="{three.url}"}} 0.0' in metrics
            assert "ragproxy_upstream_up 1.0" in metrics


# -- two Ollama-behaving servers (one llama.cpp server behind both) --------------------------------------
@pytest.fixture(scope="module")
def ollamas(llama: Server) -> Iterator[tuple[UpstreamLog, UpstreamLog]]:
    with fake_ollama(llama.url) as first, fake_ollama(llama.url) as second:
        yield UpstreamLog(first.url), UpstreamLog(second.url)


def chats(logs: tuple[UpstreamLog, UpstreamLog], model: str) -> list[int]:
    """How many chat requests for ``model`` each server received."""
    paths = ("/api/chat", "/v1/chat/completions")
    return [
        sum(r["path"] in paths and (r.get("body") or {}).get("model") == model for r in log.requests())
        for log in logs
    ]


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_stream_cut_mid_way_ends_with_an_error_event_not_a_retry(
    ollamas: tuple[UpstreamLog, UpstreamLog], api: str
) -> None:
    model = f"{CHAT_MODEL}@die-after=3"
    for log in ollamas:
        log.clear()
    with ragproxy(upstream=",".join(log.url for log in ollamas), upstream_api=api, model=CHAT_MODEL) as base:
        text, error = stream_error(base, model)  # OpenAI's SSE
        assert text and error["code"] == "upstream_error" and "closed the connection" in error["message"]
        if api == "ollama":  # Ollama's NDJSON (an OpenAI-compatible server would not list the name)
            body = {"model": model, "messages": PROMPT, "stream": True}
            with httpx.stream("POST", base + "/api/chat", json=body, timeout=60) as response:
                assert response.status_code == 200
                lines = [orjson.loads(line) for line in response.iter_lines() if line]
            assert "closed the connection" in lines[-1]["error"]
            assert all("error" not in line for line in lines[:-1]) and lines[0]["message"]["content"]
    # neither was asked again (with two requests, one each: in turn)
    assert sorted(chats(ollamas, model)) == ([1, 1] if api == "ollama" else [0, 1])


def test_failing_before_the_first_byte_tries_the_next(ollamas: tuple[UpstreamLog, UpstreamLog]) -> None:
    """Both servers answer 503: both are asked, and the client gets the last one's error."""
    model = f"{CHAT_MODEL}@status=503"
    for log in ollamas:
        log.clear()
    with ragproxy(upstream=",".join(log.url for log in ollamas), model=CHAT_MODEL) as base:
        response = httpx.post(
            base + "/v1/chat/completions", json={"model": model, "messages": PROMPT}, timeout=60
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_overloaded"
    assert chats(ollamas, model) == [1, 1]


def test_ollama_routing_and_merged_tags(ollamas: tuple[UpstreamLog, UpstreamLog]) -> None:
    """A model only the second server has (``mine``, a copy) goes there, named without its tag."""
    first, second = ollamas
    copied = httpx.post(
        second.url + "/api/copy", json={"source": CHAT_MODEL, "destination": "mine"}, timeout=10
    )
    assert copied.status_code == 200
    for log in ollamas:
        log.clear()
    upstream = f"{first.url},{second.url}"
    with ragproxy(upstream=upstream, model=CHAT_MODEL, upstream_check_interval=0.5) as base:
        known(base, 2)
        body = {"model": "mine", "messages": PROMPT, "stream": False, "options": {"num_predict": 3}}
        for _ in range(3):
            assert httpx.post(base + "/api/chat", json=body, timeout=60).status_code == 200
        reply = httpx.post(base + "/v1/chat/completions", json={**body, "max_tokens": 3}, timeout=60)
        assert reply.status_code == 200
        names = [m["name"] for m in httpx.get(base + "/api/tags", timeout=10).json()["models"]]
        ids = [m["id"] for m in httpx.get(base + "/v1/models", timeout=10).json()["data"]]
        shown = httpx.post(base + "/api/show", json={"model": "mine"}, timeout=10)
    assert chats(ollamas, "mine") == [0, 4]
    assert len(names) == len(set(names)) and "mine:latest" in names and CHAT_MODEL in names
    assert len(ids) == len(set(ids)) and "mine:latest" in ids
    assert shown.status_code == 200


def test_doctor_checks_each_upstream(ollama: Server, tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    pool = ("--upstream", ollama.url, "--upstream", refused, "--model", CHAT_MODEL)
    found = lines(doctor(*pool, "--db", str(tmp_path / "i.db")))
    assert found["upstream 1"].startswith("OK") and ollama.url in found["upstream 1"]
    assert found["upstream 2"].startswith("FAIL") and refused in found["upstream 2"]
    assert found["model"].startswith("OK")  # on one of them


def test_a_pool_of_both_apis(ollamas: tuple[UpstreamLog, UpstreamLog], llama: Server) -> None:
    """An Ollama server and a llama.cpp server (``openai+URL``): each model goes to the server
    that has it, in that server's API, whichever API the client speaks."""
    fake = ollamas[0]
    fake.clear()
    with ragproxy(
        upstream=f"{fake.url},openai+{llama.url}", model=CHAT_MODEL, upstream_check_interval=0.5
    ) as base:
        upstreams = known(base, 2)
        assert [u["api"] for u in upstreams] == ["ollama", "openai"]
        names = [m["name"] for m in httpx.get(base + "/api/tags", timeout=10).json()["models"]]
        assert CHAT_MODEL in names and "smollm2" in names
        for path in ("/v1/chat/completions", "/api/chat"):
            for model in (CHAT_MODEL, "smollm2"):
                body = {"model": model, "messages": PROMPT, "stream": False, "max_tokens": 3}
                if path == "/api/chat":
                    body = {**body, "options": {"num_predict": 3}}
                    del body["max_tokens"]
                assert httpx.post(base + path, json=body, timeout=60).status_code == 200, (path, model)
    chat_paths = ("/api/chat", "/v1/chat/completions")
    asked = [(r["path"], r["body"]["model"]) for r in fake.requests() if r["path"] in chat_paths]
    assert asked == [("/api/chat", CHAT_MODEL), ("/api/chat", CHAT_MODEL)]  # never smollm2


# -- servers that answer every chat with HTTP 500 ---------------------------------------------------------
def test_a_chat_every_server_fails_reaches_two_and_marks_none_down() -> None:
    """An error status answers that request, not the server's health: the request goes to one
    more server (not to every one), and all three stay up for the next. (No health checks here:
    what the metrics show is what the chats said.)"""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(StubUpstream(chat_status=500)) for _ in range(3)]
        upstream = ",".join(server.url for server in servers)
        no_checks = {"upstream_check_interval": 0}
        with ragproxy(upstream=upstream, upstream_api="openai", model="tiny", **no_checks) as base:
            for stream in (False, True):
                before = sum(s.paths.count("/v1/chat/completions") for s in servers)
                body = {"model": "tiny", "messages": PROMPT, "max_tokens": 3, "stream": stream}
                reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
                assert reply.status_code == 502 and "the model failed" in reply.json()["error"]["message"]
                assert sum(s.paths.count("/v1/chat/completions") for s in servers) - before == 2
            metrics = httpx.get(base + "/metrics", timeout=10).text
    assert "ragproxy_upstream_up 1.0" in metrics
    members = [line for line in metrics.splitlines() if line.startswith("ragproxy_upstream_member_up{")]
    assert len(members) == 3 and all(line.endswith(" 1.0") for line in members), members


def test_a_server_slow_to_answer_is_passed_over_with_the_whole_budget_and_then_tried_last() -> None:
    """One server answers its model list at once but holds every chat: the request that found it
    slow goes to the next with a first-byte budget of its own (the shared one had run out: a 504),
    and the chats after it go to the others first."""
    with StubUpstream(chat_hold=30) as slow, StubUpstream() as quick:
        upstream = f"{slow.url},{quick.url}"
        settings = {"upstream_check_interval": 0, "first_byte_timeout": 2}
        with ragproxy(upstream=upstream, upstream_api="openai", model="tiny", **settings) as base:
            for _ in range(4):
                body = {"model": "tiny", "messages": PROMPT, "max_tokens": 3, "stream": True}
                reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
                assert reply.status_code == 200 and '"content":" there"' in reply.text, reply.text
    assert slow.paths.count("/v1/chat/completions") == 1  # found slow once, then tried last
    assert quick.paths.count("/v1/chat/completions") == 4


def test_a_chat_that_servers_drop_reaches_two_at_most() -> None:
    """A request a server reads and then drops the connection on (a prompt that crashes it) may
    crash every server: like an error answer, it goes to one more at most."""
    with contextlib.ExitStack() as stack:
        droppers = [stack.enter_context(StubUpstream(chat_drop=True)) for _ in range(3)]
        servers = [*droppers, stack.enter_context(StubUpstream())]
        upstream = ",".join(server.url for server in servers)
        with ragproxy(
            upstream=upstream, upstream_api="openai", model="tiny", upstream_check_interval=0
        ) as base:
            for _ in range(6):  # each server first in turn (the window probe takes turns too)
                before = [s.paths.count("/v1/chat/completions") for s in servers]
                body = {"model": "tiny", "messages": PROMPT, "max_tokens": 3}
                reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
                assert reply.status_code in (200, 502), reply.text
                # (a server may get it twice: sent again once where a kept connection was dropped)
                asked = [
                    s.paths.count("/v1/chat/completions") > b for s, b in zip(servers, before, strict=True)
                ]
                assert sum(asked) <= 2, asked
