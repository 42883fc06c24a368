"""The server's edge on raw sockets: a request head past the limit, a head sent a byte at a time,
a body that trickles, a connection that never asks, one connection more than the cap. Each is
cut without costing the server memory, while /healthz still answers at once; large but legal
requests, bodies sent steadily and long streamed replies go through."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_MODEL
from tests.servers import Server, answered_in_time, ragproxy_process

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
LIMITS = ("--header-timeout", "1", "--keep-alive-timeout", "1", "--body-timeout", "1")


@pytest.fixture(scope="module")
def edge() -> Iterator[Server]:
    with ragproxy_process(*LIMITS) as server:
        yield server


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def rss_mb(server: Server) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def healthz_seconds(server: Server, until: threading.Event) -> list[float]:
    """How long each /healthz took, asked on a fresh connection every 50 ms until ``until``."""
    times = []
    while not until.is_set():
        started = time.perf_counter()
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        times.append(time.perf_counter() - started)
        time.sleep(0.05)
    return times


def send_huge_head(server: Server, replies: list[bytes]) -> None:
    with connect(server) as sock:
        try:
            sock.sendall(HEAD + b"X-Padding: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while the rest was being sent, as it should be
        replies.append(read_until_closed(sock))


def dribble_head(server: Server, replies: list[bytes]) -> None:
    """A header line every 0.2 s, for up to 20 s, unless the server cuts it first."""
    with connect(server) as sock:
        sock.sendall(HEAD)
        try:
            for i in range(100):
                sock.sendall(b"X-Slow-%d: x\r\n" % i)
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            replies.append(b"not cut")
            return
        replies.append(read_until_closed(sock))


def test_hostile_heads_are_cut_and_healthz_answers_meanwhile(edge: Server) -> None:
    for _ in range(3):  # the first requests' own allocations, not counted below
        httpx.get(edge.url + "/healthz")
    before = rss_mb(edge)
    huge: list[bytes] = []
    slow: list[bytes] = []
    done = threading.Event()
    hostile = [threading.Thread(target=send_huge_head, args=(edge, huge)) for _ in range(4)]
    hostile.append(threading.Thread(target=dribble_head, args=(edge, slow)))
    for thread in hostile:
        thread.start()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(healthz_seconds(edge, done)))
    prober.start()
    for thread in hostile:
        thread.join()
    done.set()
    prober.join()
    assert len(huge) == 4 and all(r.startswith(b"HTTP/1.1 431 ") for r in huge), huge
    assert rss_mb(edge) - before < 16, (before, rss_mb(edge))  # four 1 MB heads, none kept
    assert len(slow) == 1 and slow[0].startswith(b"HTTP/1.1 408 "), slow
    assert answered_in_time(probes), sorted(probes)[-5:]


def test_a_connection_that_never_asks_is_closed(edge: Server) -> None:
    with connect(edge) as sock:
        assert read_until_closed(sock) == b""  # nothing was asked: closed without a reply


def test_large_legal_requests_go_through(edge: Server) -> None:
    """Open WebUI's kind of headers (a session cookie, a JWT), in one write with a 5 MB body: the
    head counted, the body handed on as it arrives."""
    token = "eyJ" + "x" * 900
    cookies = "; ".join([f"token={token}", *(f"pref{i}={'v' * 200}" for i in range(40))])
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "w " * 2_500_000}], "stream": "yes"}
    ).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nCookie: " + cookies.encode() + b"\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    assert 10_000 < len(head) < 64 * 1024
    with connect(edge) as sock:
        sock.sendall(head + body)
        reply = read_until_closed(sock)
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", reply[:300]  # read whole and parsed: 'stream' checked
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["param"] == "stream"
    response = httpx.get(edge.url + "/healthz", headers={"Cookie": cookies, "X-Token": token})
    assert response.status_code == 200


def dribble_bodies(server: Server, count: int, replies: list[bytes]) -> None:
    """``count`` connections that each announce a 10 MB body and send 60 KB of it at once, then a
    byte each every 0.3 s, for up to 20 s, until the server cuts them."""
    socks = [connect(server) for _ in range(count)]
    for sock in socks:
        sock.sendall(CHAT_HEAD + b"Content-Length: 10000000\r\n\r\n" + b" " * 60_000)
    still_open = list(socks)
    deadline = time.monotonic() + 20
    while still_open and time.monotonic() < deadline:
        readable, _, _ = select.select(still_open, [], [], 0.3)
        for sock in readable:  # the server has answered: read it to the end
            replies.append(read_until_closed(sock))
            still_open.remove(sock)
        for sock in still_open:
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed: its reply is read on the next round
    replies.extend(b"not cut" for _ in still_open)
    for sock in socks:
        sock.close()


def send_steady_chunks(server: Server, replies: list[bytes]) -> None:
    """A chunked body of 24 KiB, 2 KiB every 0.25 s: slow, but steady."""
    message = {"role": "user", "content": "w" * 24_000}
    data = json.dumps({"model": "m", "messages": [message], "stream": "yes"}).encode()
    with connect(server) as sock:
        sock.sendall(CHAT_HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for start in range(0, len(data), 2048):
            piece = data[start : start + 2048]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.25)
        sock.sendall(b"0\r\n\r\n")
        replies.append(read_until_closed(sock))


def test_trickling_bodies_are_cut_and_healthz_answers_meanwhile(edge: Server) -> None:
    """Bodies that stopped coming at a useful pace (60 KB at once earns no lasting credit), a
    flood of them; a slow but steady chunked body beside them is read whole."""
    for _ in range(3):
        httpx.get(edge.url + "/healthz")
    before = rss_mb(edge)
    slow: list[bytes] = []
    steady: list[bytes] = []
    done = threading.Event()
    attack = [
        threading.Thread(target=dribble_bodies, args=(edge, 200, slow)),
        threading.Thread(target=send_steady_chunks, args=(edge, steady)),
    ]
    for thread in attack:
        thread.start()
    probes: list[float] = []
    prober = threading.Thread(target=lambda: probes.extend(healthz_seconds(edge, done)))
    prober.start()
    for thread in attack:
        thread.join()
    done.set()
    prober.join()
    assert len(slow) == 200, len(slow)
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in slow), {r[:40] for r in slow}
    assert rss_mb(edge) - before < 64, (before, rss_mb(edge))  # 200 × 60 KB read, then let go
    assert len(steady) == 1 and steady[0].startswith(b"HTTP/1.1 400 "), steady  # read and parsed
    assert json.loads(steady[0].partition(b"\r\n\r\n")[2])["error"]["param"] == "stream"
    assert answered_in_time(probes), sorted(probes)[-5:]


def test_a_streamed_reply_outlasting_the_body_timeout_is_not_cut(llama: Server) -> None:
    """The body is whole once the request is in: a reply may stream for as long as it takes."""
    flags = ("--upstream", llama.url, "--upstream-api", "openai", "--model", CHAT_MODEL)
    story = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
        "max_tokens": 600,
        "temperature": 0.8,
        "stream": True,
    }
    with ragproxy_process(*LIMITS, *flags) as proxy:
        started = time.perf_counter()
        lines = []
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=story, timeout=120) as reply:
            assert reply.status_code == 200
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
        took = time.perf_counter() - started
    print(f"{len(lines)} events streamed over {took:.1f} s, --body-timeout 1")
    assert lines[-1] == "data: [DONE]", lines[-3:]
    assert len(lines) > 100, len(lines)  # a long reply, not one cut short and ended cleanly


@pytest.fixture(scope="module")
def capped() -> Iterator[Server]:
    with ragproxy_process("--max-connections", "3", "--keep-alive-timeout", "30") as server:
        yield server


def test_connections_past_the_cap_are_refused_until_one_closes(capped: Server) -> None:
    held = [connect(capped) for _ in range(3)]
    for sock in held:  # each answered, so each is counted
        sock.sendall(HEAD + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    with connect(capped) as extra:
        assert read_until_closed(extra).startswith(b"HTTP/1.1 503 ")  # at once, nothing asked
    held.pop().close()
    replies = []
    for _ in range(100):  # the closed one's place is free as soon as the server sees it go
        with connect(capped) as sock:
            sock.sendall(HEAD + b"Connection: close\r\n\r\n")
            replies.append(read_until_closed(sock))
        if replies[-1].startswith(b"HTTP/1.1 200 "):
            break
        time.sleep(0.05)
    assert replies[-1].startswith(b"HTTP/1.1 200 "), replies
    for sock in held:
        sock.close()


def test_trailers_after_a_chunked_body_are_held_to_the_head_limit(edge: Server) -> None:
    """Headers after the last chunk were counted by nothing: the parser built an endless one by
    copying, until the body timeout (97 MB in 10 s, the event loop held for seconds)."""
    before = rss_mb(edge)
    with connect(edge) as sock:
        sock.sendall(CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Trailer: ")
        sent = 0
        with contextlib.suppress(OSError):  # the server closes the connection mid-way
            while sent < 8 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        answer = read_until_closed(sock)
    assert sent < 8 * 1024 * 1024, "eight megabytes of trailer were taken"
    # closed (the request is the app's by then: no answer of the edge's own is mixed in)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert rss_mb(edge) - before < 32
