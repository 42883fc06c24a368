"""The server's edge on raw sockets: a request head past the limit, a head sent a byte at a time,
a connection that never asks. Each is cut without costing the server memory, while /healthz
still answers at once; large but legal requests go through."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import Server, ragproxy_process

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def edge() -> Iterator[Server]:
    with ragproxy_process("--header-timeout", "1", "--keep-alive-timeout", "1") as server:
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
    assert probes and max(probes) < 0.1, probes


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
