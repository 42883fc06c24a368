"""Streaming overhead of ragproxy against the same real upstream, measured in one run.

Starts llama.cpp's llama-server (the test build, see tests/upstream/build.sh) and
`ragproxy serve --upstream-api openai` in front of it, then alternates identical streamed
requests (temperature 0, so both paths generate the same tokens) direct and through the proxy.
Reports time to first token, streamed chunks/s and the inter-chunk gap for each path, and the
ratios/differences between them; and, from the proxy's own request log, the time it spends
before the upstream's first byte and after it (``first_byte_ms - upstream_wait_ms``), which
excludes the client and the contention of three processes on a small machine.

    .venv/bin/python bench/stream_overhead.py [--rounds 20] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import llama_server, ragproxy_process  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me about the history of lighthouses."}]


def one_stream(client: httpx.Client, base: str, max_tokens: int) -> tuple[float, list[float]]:
    """Time to first content chunk and the arrival times of all content chunks."""
    body = {
        "model": "smollm2",
        "messages": PROMPT,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    arrivals: list[float] = []
    started = time.perf_counter()
    with client.stream("POST", base + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                arrivals.append(time.perf_counter())
    return arrivals[0] - started, arrivals


def round_trip(client: httpx.Client, url: str, count: int = 200) -> float:
    """Median milliseconds for a small GET."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get(url).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def summarise(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    ttft = [r[0] for r in runs]
    rates = [(len(a) - 1) / (a[-1] - a[0]) for _, a in runs if len(a) > 1]
    gaps = [b - a for _, arr in runs for a, b in itertools.pairwise(arr)]
    return {
        "ttft_ms": statistics.median(ttft) * 1000,
        "chunks_per_s": statistics.median(rates),
        "gap_ms": statistics.median(gaps) * 1000,
        "chunks": statistics.median(len(a) for _, a in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    log = tempfile.TemporaryFile()
    with (
        llama_server(slots=1) as llama,
        ragproxy_process("--upstream", llama.url, "--upstream-api", "openai", stdout=log) as proxy,
    ):
        base = proxy.url
        paths = {"direct": llama.url, "proxy": base}
        runs: dict[str, list[tuple[float, list[float]]]] = {"direct": [], "proxy": []}
        with httpx.Client(timeout=120) as client:
            for url in paths.values():  # warm-up: prompt cache, connections
                one_stream(client, url, args.max_tokens)
            for i in range(args.rounds):
                order = ["direct", "proxy"] if i % 2 == 0 else ["proxy", "direct"]
                for name in order:
                    runs[name].append(one_stream(client, paths[name], args.max_tokens))
            round_trips = {
                "ragproxy GET /healthz (no upstream call)": round_trip(client, base + "/healthz"),
                "llama.cpp GET /health": round_trip(client, llama.url + "/health"),
                "ragproxy GET /readyz (one upstream call)": round_trip(client, base + "/readyz"),
                "llama.cpp GET /v1/models (that call, direct)": round_trip(client, llama.url + "/v1/models"),
            }

    log.seek(0)
    chats = [e for e in map(json.loads, log.read().splitlines()) if e.get("path") == "/v1/chat/completions"][
        1:
    ]  # without the warm-up
    own = statistics.median(e["first_byte_ms"] - e["upstream_wait_ms"] for e in chats)
    direct, proxied = summarise(runs["direct"]), summarise(runs["proxy"])
    print(f"rounds={args.rounds} max_tokens={args.max_tokens} (medians)")
    print(f"{'':8} {'TTFT ms':>9} {'chunks/s':>9} {'gap ms':>8} {'chunks':>7}")
    for name, s in (("direct", direct), ("proxy", proxied)):
        print(f"{name:8} {s['ttft_ms']:9.2f} {s['chunks_per_s']:9.2f} {s['gap_ms']:8.3f} {s['chunks']:7.0f}")
    print(f"chunks/s proxy/direct: {proxied['chunks_per_s'] / direct['chunks_per_s']:.3f}")
    print(
        f"added to TTFT: {proxied['ttft_ms'] - direct['ttft_ms']:+.2f} ms; "
        f"added per chunk: {proxied['gap_ms'] - direct['gap_ms']:+.3f} ms"
    )
    print(f"proxy's own time to first byte, from its log: {own:.2f} ms (median of {len(chats)})")
    print("round trips, median of 200:")
    for name, ms in round_trips.items():
        print(f"  {name}: {ms:.3f} ms")


if __name__ == "__main__":
    main()
