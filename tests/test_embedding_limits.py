"""Embeddings requests within bounds: too many inputs (or too much text) is refused before any
work, and a big request the client abandons stops computing, while /healthz answers at once."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.servers import Server, answered_in_time, ragproxy, ragproxy_process


@pytest.fixture(scope="module")
def bare() -> Iterator[str]:
    """No upstream and no index: a request refused by the caps never needs either."""
    with ragproxy(upstream="http://127.0.0.1:9", db="/nonexistent/index.db") as url:
        yield url


def test_too_many_inputs_or_too_much_text_is_a_400_on_input(bare: str) -> None:
    too_many = ["a word"] * 2049
    too_long = ["word " * 4000] * 300  # about 300,000 tokens and more
    for inputs in (too_many, too_long):
        response = httpx.post(bare + "/v1/embeddings", json={"model": "e5", "input": inputs})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "input"), error
        assert "at most" in error["message"]
        response = httpx.post(bare + "/api/embed", json={"model": "e5", "input": inputs})
        assert response.status_code == 400 and "at most" in response.json()["error"], response.text
    response = httpx.post(bare + "/api/embeddings", json={"model": "e5", "prompt": "word " * 1_300_000})
    assert response.status_code == 400 and "at most" in response.json()["error"], response.text
    # a single token array is one input, not thousands
    response = httpx.post(bare + "/v1/embeddings", json={"model": "e5", "input": [1] * 3000})
    assert "at most 2048" not in response.text


def cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[bytes]]]:
    """ragproxy with the in-process e5 embedder (an index of one note), its log lines kept."""
    docs = tmp_path_factory.mktemp("docs")
    (docs / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    db = tmp_path_factory.mktemp("index") / "index.db"
    lines: list[bytes] = []
    flags = ("--docs", f"notes={docs}", "--db", str(db), "--upstream", "http://127.0.0.1:9")
    with ragproxy_process(*flags, stdout=subprocess.PIPE) as server:
        reader = threading.Thread(target=lambda: lines.extend(server.process.stdout or ()), daemon=True)
        reader.start()
        # the relevance gate calibrates itself once, in the background, after start: done before
        # the server is watched for work nobody asked for
        for _ in range(600):
            if "Relevance gate calibrated" in httpx.get(server.url + "/ui/", timeout=10).text:
                break
            time.sleep(0.1)
        yield server, lines
    if server.process.stdout is not None:  # read to its end once the server stopped
        server.process.stdout.close()


def request_lines(lines: list[bytes], path: str) -> list[dict[str, object]]:
    events = [orjson.loads(line) for line in list(lines) if line.startswith(b"{")]
    return [e for e in events if e.get("event") == "request" and e.get("path") == path]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/embed"])
def test_an_abandoned_embeddings_request_stops_computing(
    embedding_server: tuple[Server, list[bytes]], path: str
) -> None:
    server, lines = embedding_server
    seen = len(request_lines(lines, path))
    httpx.post(server.url + path, json={"model": "e5", "input": ["warm up"]}, timeout=120)  # the model loaded
    for _ in range(100):  # its log line comes after its reply: counted before the abandoned one's
        if len(request_lines(lines, path)) > seen:
            break
        time.sleep(0.05)
    sentence = "the heron waits in the reeds by the river for fish "
    texts = [f"Paragraph {i}: " + sentence * 10 for i in range(400)]
    probes: list[float] = []
    computing = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:  # a monitor's kept connection
            client.get("/healthz")
            computing.wait()
            for _ in range(20):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                probes.append(time.perf_counter() - started)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    before = len(request_lines(lines, path))
    computing.set()
    with pytest.raises(httpx.ReadTimeout):  # the client leaves after 2 s
        httpx.post(server.url + path, json={"model": "e5", "input": texts}, timeout=httpx.Timeout(10, read=2))
    prober.join()
    assert answered_in_time(probes), sorted(probes)[-5:]
    # The request ends (its log line) one step after the client left, not 400 inputs later...
    for _ in range(300):
        ended = request_lines(lines, path)[before:]
        if ended:
            break
        time.sleep(0.1)
    assert ended and ended[0]["client_disconnected"] is True, ended
    # ...and nothing goes on computing behind it.
    idle_from = cpu_seconds(server.process)
    time.sleep(2)
    assert cpu_seconds(server.process) - idle_from < 0.5
