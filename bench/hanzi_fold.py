"""Writes proxy/data/hanzi_fold.txt, the table the keyword index folds Traditional Chinese
characters to Simplified with (``proxy/index/textsearch.py``), from OpenCC's character table
(TSCharacters.txt, Apache License 2.0, as opencc-python-reimplemented ships it).

Each line is one character and the one it folds to. Where OpenCC gives several Simplified
characters (乾 → 干 乾), the first. Only OpenCC's one-to-one character table is read: the
Taiwan and Hong Kong variant tables map common Simplified characters too (么 → 幺), and
phrase tables belong to conversion, not to matching characters.

    .venv/bin/pip install opencc-python-reimplemented
    .venv/bin/python bench/hanzi_fold.py
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "proxy" / "data" / "hanzi_fold.txt"


def main() -> None:
    source = resources.files("opencc").joinpath("dictionary", "TSCharacters.txt")
    fold: dict[str, str] = {}
    for line in source.read_text(encoding="utf-8").splitlines():
        traditional, _, simplified = line.partition("\t")
        first = simplified.split()[0] if simplified.split() else ""
        if len(traditional) == 1 and len(first) == 1 and first != traditional:
            fold[traditional] = first
    # folding twice must give what folding once gives: follow each chain to its end
    changed = True
    while changed:
        changed = False
        for character, into in fold.items():
            if fold.get(into, into) not in (into, character):
                fold[character] = fold[into]
                changed = True
    pairs = sorted((t, s) for t, s in fold.items() if t != s)
    OUT.write_text("".join(f"{t}\t{s}\n" for t, s in pairs), encoding="utf-8")
    print(f"{OUT}: {len(pairs)} characters")


if __name__ == "__main__":
    main()
