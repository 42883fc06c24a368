"""What text costs in tokens, and which script it is mostly in, shared by the request flow and
the index.

``estimate_tokens`` is the prompt's measure: it prices each kind of character at what the
byte-level BPE tokenizers of the models people run (Qwen 2/2.5 and the DeepSeek-R1 distills,
Llama 3) spend on it at worst, so a prompt fitted with it fits (measured per script in
BENCHMARKS.md, ``bench/token_estimate.py``). ``chunk_tokens`` is the index's older, cheaper
measure of a chunk's size: chunk sizes, and so the index, stay as they were.
"""

from __future__ import annotations

import re
import zlib

# Every byte of the UTF-8 form gets a class; a character is priced by its first byte (the
# continuation bytes, 0x80-0xBF, cost nothing), so one C-speed translate tells the scripts apart.
_CLASSES = (
    ("a", b"abcdefghijklmnopqrstuvwxyz"),  # lower-case ASCII letters
    ("A", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),  # capitals: a run of them splits into more pieces
    ("d", b"0123456789"),  # Qwen's tokenizer spends one token on every digit
    (" ", b" "),
    ("n", b"\n"),
    ("p", bytes(b for b in range(0x80) if not chr(b).isalnum() and chr(b) not in " \n")),
    ("l", b"\xc2\xc3"),  # U+0080-00FF: Latin-1 letters (é, ü, ß) and signs (©, °, ×)
    ("x", bytes(range(0xC4, 0xD0))),  # U+0100-03FF: more accented Latin, IPA, accents, Greek
    ("c", bytes(range(0xD0, 0xD5))),  # U+0400-053F: Cyrillic
    ("m", b"\xd5\xd6"),  # U+0540-05BF: Armenian (its letters mostly one byte-level token each)
    ("r", bytes(range(0xD7, 0xE0))),  # U+05C0-07FF: Hebrew, Arabic, Syriac, Thaana
    ("i", b"\xe0"),  # U+0800-0FFF: Indic scripts, Thai, Lao, Tibetan
    ("t", b"\xe1"),  # U+1000-1FFF: Georgian, Ethiopic, Myanmar, Khmer, Vietnamese and Greek letters
    ("g", b"\xe2"),  # U+2000-2FFF: curly quotes, dashes, arrows, maths, symbols, dingbats
    ("k", b"\xe3"),  # U+3000-3FFF: CJK punctuation, kana, the first CJK extension
    ("h", bytes(range(0xE4, 0xEA))),  # U+4000-9FFF: CJK ideographs
    ("j", bytes(range(0xEA, 0xEF))),  # U+A000-EFFF: Hangul syllables, Yi, private use
    ("f", b"\xef"),  # U+F000-FFFF: full-width forms, variation selectors, compatibility forms
    ("e", bytes(range(0xF0, 0x100))),  # four bytes: emoji, rare ideographs, maths letters
)
# Tokens per character of each class, in 64ths, set with bench/token_estimate.py so that neither
# Qwen 2's nor Llama 3's tokenizer counts any text class measured more than 5% over the estimate.
# The space and newline before a word mostly share its token.
_RATES = {
    "a": 16,
    "A": 40,
    "d": 96,
    " ": 7,
    "n": 54,
    "p": 31,
    "l": 136,
    "x": 90,
    "c": 32,
    "m": 128,
    "r": 84,
    "i": 104,  # Hindi, Bengali, Tamil: up to 1.6 tokens a character (Thai far less)
    "t": 192,  # Ge'ez (Amharic) and Georgian take up to three, as many as their UTF-8 bytes
    "g": 145,
    "k": 50,
    "h": 70,
    "j": 53,
    "f": 109,
    "e": 185,
}
_WEIGHTS = bytearray(256)  # each byte's weight in 64ths of a token (continuation bytes: none)
for _code, _leads in _CLASSES:
    for _byte in _leads:
        _WEIGHTS[_byte] = _RATES[_code]
_TO_WEIGHTS = bytes(_WEIGHTS)
# U+1E00-1EFF (Vietnamese letters such as ộ, ữ) are priced at one token, not the class's three.
_LATIN_EXTENDED_ADDITIONAL = (b"\xe1\xb8", b"\xe1\xb9", b"\xe1\xba", b"\xe1\xbb")
_VIETNAMESE_REFUND = _RATES["t"] - 64
_BLOCK = 256  # 256 weights of at most 255 sum below adler32's modulus (65521)


def estimate_tokens(text: str) -> int:
    """Tokens this text costs a Qwen 2 or Llama 3 tokenizer, estimated on the safe side: at most
    5% under the real count on any script measured, priced by class of character."""
    weights = text.encode("utf-8", "surrogatepass").translate(_TO_WEIGHTS)
    # The sum of the weights at C speed: adler32's low half is 1 + the sum of the bytes, modulo
    # 65521, which a block of 256 never reaches.
    total = 0
    for start in range(0, len(weights), _BLOCK):
        total += (zlib.adler32(weights[start : start + _BLOCK]) & 0xFFFF) - 1
    if _RATES["t"] in weights:  # U+1000-1FFF, where Vietnamese letters cost far less than the rest
        data = text.encode("utf-8", "surrogatepass")
        total -= _VIETNAMESE_REFUND * sum(data.count(lead) for lead in _LATIN_EXTENDED_ADDITIONAL)
    return (total + 63) // 64


def chunk_tokens(text: str) -> int:
    """The index's measure of a chunk's size: one per CJK character, one per four other
    characters, counted from the UTF-8 length (every three-byte character counts as one, two-byte
    letters as half, four-byte ones as 1.5). Close to what BERT-style tokenizers count for Chinese,
    slightly over for English prose, under for code, digits and emoji: it sizes chunks, it does
    not fit prompts (``estimate_tokens`` does)."""
    length = len(text)
    cjk = (len(text.encode("utf-8", "surrogatepass")) - length) // 2
    return cjk + (max(length - cjk, 0) + 3) // 4


def written_in_cjk(text: str) -> bool:
    """A chunk's script, as both stores record it when they write it: told by its prose, as a
    question's is (``asked_in_cjk``). Chinese documentation is full of commands, paths, option
    names and untranslated terms: by its bytes, a Chinese page of the Debian Reference read as
    Latin nine times in ten, and a Chinese question on it was held to the cross-script cosine,
    which a right chunk rarely reaches (BENCHMARKS.md)."""
    return asked_in_cjk(text)


_FENCED = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\b\w+://\S+")
_CODE_SIGNS = frozenset("{}[]();=<>+*/\\|&$#@:_.,'\"")
_CJK_CHARACTER = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")


def prose(text: str) -> str:
    """A question without the code, commands and links pasted into it: what it is asked in."""
    text = _URL.sub(" ", _INLINE_CODE.sub(" ", _FENCED.sub(" ", text)))
    lines = []
    for line in text.splitlines():
        shown = line.strip()
        signs = sum(character in _CODE_SIGNS for character in shown)
        if shown and (line.startswith(("    ", "\t")) or signs > 0.15 * len(shown)) and len(shown) > 12:
            continue  # a line of code, a stack trace, a command
        lines.append(line)
    return "\n".join(lines)


def asked_in_cjk(question: str) -> bool:
    """Whether a question is asked in a CJK script: its prose has at least as many CJK characters
    as Latin words ("TiDB 支持 Sequence 吗？", "128 乘以 17", a Chinese question about a pasted
    error message): what a person wrote around what they pasted or named. A chunk's script is
    told the same way (``written_in_cjk``)."""
    text = prose(question) or question
    return len(_CJK_CHARACTER.findall(text)) >= max(len(_LATIN_WORD.findall(text)), 1)
