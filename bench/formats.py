"""Every format ragproxy reads, made by the libraries that write it from real documentation: how
fast each loader reads (through the reader process, as the indexer runs it), beside the Markdown
and PDF loaders; and, in one folder of all of them, a word that only one file holds found by a
keyword search with the slide, sheet, chapter, message or page named.

The texts are the Markdown pages of the docs folders (English FastAPI, Chinese TiDB) beside the
repository, ``--docs`` pages of each, split at their headings. Each page is written in every
format: Markdown as it is (the baseline), a PDF of one page per section (English only: the PDF
writer here has only Helvetica), Word, slides (.pptx and .odp, a slide per section), OpenDocument
text, RTF, an e-book (a chapter per section), a mail message (.eml and
Outlook's .msg) and a mailbox (a message per section),
spreadsheets (.xlsx and .ods, a row per paragraph under a header row), and PNG images of the
section's first lines (for OCR). Rounds are interleaved (every format once per round) and the
median round is reported: the machine's 2 cores are shared.

    .venv/bin/python bench/formats.py [--docs 40] [--rounds 3] [--images 6]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.index.extract import Extractor, Limits  # noqa: E402
from proxy.index.service import IndexService  # noqa: E402
from proxy.plugins import loader_for  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.types import SkipFile  # noqa: E402
from tests.office_docs import rtf_unicode  # noqa: E402

DOCS = ROOT.parent / "shared" / "data" / "docs"
Sections = list[tuple[str, str]]  # (heading, text)


def pages(folder: Path, count: int, chinese: bool = False) -> list[Sections]:
    """The first ``count`` Markdown pages of ``folder`` (by path) with at least two sections
    (``chinese``: mostly in Chinese), each as (heading, text) pairs; markup left as it is, code
    blocks and heading anchors dropped."""
    found: list[Sections] = []
    for path in sorted(folder.rglob("*.md")):
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8", errors="replace"), flags=re.S)
        text = re.sub(r"\s*\{\s*#[^}]*\}", "", text)
        if chinese and len(re.findall(r"[\u4e00-\u9fff]", text)) < 0.3 * len(re.sub(r"\s", "", text)):
            continue
        sections: Sections = []
        heading, lines = path.stem, []
        for line in text.splitlines():
            if line.startswith("#"):
                if "".join(lines).strip():
                    sections.append((heading, "\n".join(lines).strip()))
                heading, lines = line.lstrip("#").strip() or heading, []
            elif not line.startswith(("---", "{%", "<")):
                lines.append(line)
        if "".join(lines).strip():
            sections.append((heading, "\n".join(lines).strip()))
        if len(sections) >= 2:
            found.append(sections)
        if len(found) == count:
            break
    return found


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


# -- writers, one per format ---------------------------------------------------------------------
def write_md(path: Path, sections: Sections) -> None:
    path.write_text("".join(f"## {h}\n\n{t}\n\n" for h, t in sections), encoding="utf-8")


def write_pdf(path: Path, sections: Sections) -> None:
    from tests.docs import write_pdf as write

    def plain(text: str) -> str:
        text = " ".join(text.split()).encode("latin-1", "ignore").decode("latin-1")
        return re.sub(r"[\\()]", "", text)

    write(path, [plain(t) for _, t in sections])


def write_docx(path: Path, sections: Sections) -> None:
    import docx

    document = docx.Document()
    for heading, text in sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs(text):
            document.add_paragraph(paragraph)
    document.save(str(path))


def write_pptx(path: Path, sections: Sections) -> None:
    from pptx import Presentation
    from pptx.util import Cm

    presentation = Presentation()
    for heading, text in sections:
        slide = presentation.slides.add_slide(presentation.slide_layouts[5])
        slide.shapes.title.text = heading
        box = slide.shapes.add_textbox(Cm(1), Cm(4), Cm(22), Cm(12)).text_frame
        box.text = "\n".join(paragraphs(text))
    presentation.save(str(path))


def write_odp(path: Path, sections: Sections) -> None:
    from odf.draw import Page

    from tests.office_docs import odp_document, odp_frame

    document, master = odp_document()
    for number, (heading, text) in enumerate(sections, start=1):
        page = Page(masterpagename=master, name=f"page{number}")
        document.presentation.addElement(page)
        odp_frame(page, "1cm", "1cm", heading, kind="title", width="24cm", height="3cm")
        odp_frame(page, "1cm", "4cm", *paragraphs(text), width="24cm", height="3cm")
    document.save(str(path))


def write_odt(path: Path, sections: Sections) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    for heading, text in sections:
        document.text.addElement(H(outlinelevel=1, text=heading))
        for paragraph in paragraphs(text):
            document.text.addElement(P(text=paragraph))
    document.save(str(path))


def write_rtf(path: Path, sections: Sections) -> None:
    body = "".join(
        f"\\pard\\b {rtf_unicode(h)}\\b0\\par\n"
        + "".join(f"\\pard {rtf_unicode(p)}\\par\n" for p in paragraphs(t))
        for h, t in sections
    )
    path.write_bytes(
        ("{\\rtf1\\ansi\\ansicpg1252\\deff0\\uc1{\\fonttbl{\\f0 Arial;}}\n" + body + "}").encode()
    )


def write_epub(path: Path, sections: Sections) -> None:
    from html import escape

    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(path.stem)
    book.set_title(path.stem)
    book.set_language("en")
    chapters = []
    for number, (heading, text) in enumerate(sections):
        chapter = epub.EpubHtml(title=heading, file_name=f"c{number}.xhtml")
        chapter.content = f"<h1>{escape(heading)}</h1>" + "".join(
            f"<p>{escape(p)}</p>" for p in paragraphs(text)
        )
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    epub.write_epub(str(path), book)


def _message(heading: str, text: str) -> Any:
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"] = "Docs Team <docs@example.org>"
    mail["To"] = "readers@example.org"
    mail["Date"] = "Tue, 01 Dec 2026 09:30:00 +0000"
    mail["Subject"] = heading
    mail.set_content(text)
    return mail


def write_eml(path: Path, sections: Sections) -> None:
    path.write_bytes(bytes(_message(sections[0][0], "\n\n".join(t for _, t in sections))))


def write_msg(path: Path, sections: Sections) -> None:
    from tests.msg_docs import Mail
    from tests.msg_docs import write_msg as write

    write(path, Mail(sections[0][0], body="\n\n".join(t for _, t in sections)))


def write_mbox(path: Path, sections: Sections) -> None:
    import mailbox

    box = mailbox.mbox(path)
    for heading, text in sections:
        box.add(_message(heading, text))
    box.close()


def write_xlsx(path: Path, sections: Sections) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Pages"
    sheet.append(["Section", "Paragraph", "Text"])
    for heading, text in sections:
        for number, paragraph in enumerate(paragraphs(text), start=1):
            sheet.append([heading, number, paragraph])
    book.save(str(path))


def write_ods(path: Path, sections: Sections) -> None:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name="Pages")
    document.spreadsheet.addElement(table)
    rows = [("Section", "Paragraph", "Text")] + [
        (h, str(n), p) for h, t in sections for n, p in enumerate(paragraphs(t), start=1)
    ]
    for values in rows:
        row = TableRow()
        table.addElement(row)
        for value in values:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=value))
            row.addElement(cell)
    document.save(str(path))


def write_png(path: Path, sections: Sections) -> None:
    """The first section's heading and first lines, black on white, 1,000 pixels wide."""
    from PIL import Image, ImageDraw, ImageFont

    chinese = any("\u4e00" <= c <= "\u9fff" for c in sections[0][1])
    font = ImageFont.truetype(FONT_ZH if chinese else FONT_EN, 28)
    width = 34 if chinese else 60
    lines = [sections[0][0]] + [
        line[i : i + width] for line in paragraphs(sections[0][1])[:3] for i in range(0, len(line), width)
    ][:10]
    image = Image.new("L", (1000, 60 + 44 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((30, 30 + 44 * row), line, fill=0, font=font)
    image.save(path)


def write_scan(path: Path, sections: Sections) -> None:
    """A scanned PDF: the first section drawn as ``write_png`` draws it, one image page, 150 dpi."""
    from PIL import Image

    image = path.with_suffix(".png")
    write_png(image, sections)
    with Image.open(image) as page:
        page.convert("RGB").save(path, "PDF", resolution=150)
    image.unlink()


FONT_EN = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_ZH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

WRITERS: dict[str, Callable[[Path, Sections], None]] = {
    ".md": write_md,
    ".pdf": write_pdf,
    ".docx": write_docx,
    ".pptx": write_pptx,
    ".odp": write_odp,
    ".odt": write_odt,
    ".rtf": write_rtf,
    ".epub": write_epub,
    ".eml": write_eml,
    ".msg": write_msg,
    ".mbox": write_mbox,
    ".xlsx": write_xlsx,
    ".ods": write_ods,
    ".png": write_png,
    ".scan.pdf": write_scan,
}
OCR = {".png", ".scan.pdf"}
ENGLISH_ONLY = {".pdf"}


def available(suffix: str) -> bool:
    if loader_for(Path("x" + suffix)) is None:
        return False
    if suffix in OCR:
        from plugins.loaders.ocr import missing

        return Path(FONT_EN).exists() and Path(FONT_ZH).exists() and missing() is None
    return True


def build(root: Path, en: list[Sections], zh: list[Sections], images: int) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for suffix, write in WRITERS.items():
        if not available(suffix):
            print(f"{suffix}: no loader (or no fonts) here, left out", flush=True)
            continue
        folder = root / suffix.lstrip(".")
        folder.mkdir()
        chosen = [("en", p) for p in en] + ([] if suffix in ENGLISH_ONLY else [("zh", p) for p in zh])
        if suffix in OCR:
            chosen = chosen[: images // 2] + [c for c in chosen if c[0] == "zh"][: images - images // 2]
        made = []
        for number, (language, page) in enumerate(chosen):
            path = folder / f"{language}{number:03d}{suffix}"
            write(path, page)
            made.append(path)
        files[suffix] = made
    return files


def read_all(extractor: Extractor, paths: list[Path]) -> tuple[float, int, int]:
    """Seconds to read every file through the reader process, characters read, files skipped."""
    characters = skipped = 0
    started = time.perf_counter()
    for path in paths:
        loader = loader_for(path)
        assert loader is not None
        try:
            characters += len(extractor.load(loader, path).text)
        except SkipFile as exc:
            skipped += 1
            print(f"  {path.name}: skipped: {exc}", flush=True)
    return time.perf_counter() - started, characters, skipped


def speed(files: dict[str, list[Path]], rounds: int) -> None:
    extractor = Extractor(Limits())
    try:
        for paths in files.values():  # each loader's imports paid once, before the clock
            read_all(extractor, paths[:1])
        times: dict[str, list[float]] = {s: [] for s in files}
        read: dict[str, tuple[int, int]] = {}
        for _ in range(rounds):
            for suffix, paths in files.items():
                seconds, characters, skipped = read_all(extractor, paths)
                times[suffix].append(seconds)
                read[suffix] = (characters, skipped)
        print(f"\nreader process peak RSS: {extractor.peak_rss >> 20} MB", flush=True)
    finally:
        extractor.close()
    base = statistics.median(times[".md"])
    print(
        "\n| format | files | MB | chars read | skipped | s (median) | files/s | MB/s | × Markdown's time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for suffix, paths in files.items():
        seconds = statistics.median(times[suffix])
        size = sum(p.stat().st_size for p in paths) / 1e6
        characters, skipped = read[suffix]
        print(
            f"| {suffix} | {len(paths)} | {size:.2f} | {characters:,} | {skipped} | {seconds:.2f} | "
            f"{len(paths) / seconds:.1f} | {size / seconds:.2f} | {seconds / base:.1f} |"
        )


def found(root: Path, en: list[Sections], zh: list[Sections]) -> None:
    """One folder of every format, each file holding a word no other file holds in its second
    section (the first for images): the keyword search must find that file, and say where."""
    folder = root / "together"
    folder.mkdir()
    planted: dict[str, tuple[str, str]] = {}
    for number, suffix in enumerate(s for s in WRITERS if available(s)):
        for language, pool in (("en", en), ("zh", zh)):
            if language == "zh" and suffix in ENGLISH_ONLY:
                continue
            page = [list(s) for s in pool[(number * 7 + 3) % len(pool)]]
            kind = suffix.replace(".", "")
            word = f"zqx{kind}{language}"
            where = 0 if suffix in OCR else 1
            page[where][1] = f"{word} {page[where][1]}" if suffix not in OCR else page[where][1]
            if suffix in OCR:
                page[0][0] = f"Marker {word.upper()}"
            name = f"{language}-{kind}{Path('x' + suffix).suffix}"
            WRITERS[suffix](folder / name, [(h, t) for h, t in page])
            planted[name] = (word, page[where][0])
    service = IndexService(Settings(db=str(root / "together.db")))
    try:
        collection = service.indexer.add_collection("together", folder)
        assert service.store.claim_collection(collection.id)
        report = service.indexer.scan(collection)
        print(f"\nindexed {report.indexed}, skipped {report.skipped}", flush=True)
        print("\n| file | planted in | first hit | its source |")
        print("|---|---|---|---|")
        hits = 0
        for name, (word, heading) in planted.items():
            results = service.store.search_keyword(word)
            first = results[0] if results else None
            ok = first is not None and first.path == name
            hits += ok
            source = (
                "-"
                if first is None
                else f"{first.heading or ''}" + (f" (page {first.page})" if first.page else "")
            )
            verdict = "yes" if ok else "NO: " + (first.path if first else "none")
            print(f"| {name} | {heading[:40]} | {verdict} | {source[:70]} |")
        print(f"\nfound {hits} of {len(planted)}")
    finally:
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40, help="pages of each docs folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=6, help="images to OCR (half English, half Chinese)")
    args = parser.parse_args()
    en = pages(DOCS / "fastapi-en", args.docs)
    zh = pages(DOCS / "tidb-zh", args.docs, chinese=True)
    with tempfile.TemporaryDirectory(prefix="ragproxy-formats-") as folder:
        root = Path(folder)
        started = time.monotonic()
        files = build(root, en, zh, args.images)
        print(f"made {sum(map(len, files.values()))} files in {time.monotonic() - started:.0f} s", flush=True)
        speed(files, args.rounds)
        found(root, en, zh)


if __name__ == "__main__":
    main()
