"""Slides, OpenDocument, RTF and e-books written by the tests with the libraries that make them
(python-pptx, odfpy, ebooklib; RTF by hand), and decompression bombs made from them."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

# --- PowerPoint -------------------------------------------------------------------------------


def write_pptx(path: Path) -> None:
    """Slide 1 "Harbour cranes": its shapes added out of reading order (the bottom one first, a
    group whose right shape comes first), a table and speaker notes. Slide 2 has no title; slide 3
    no text; slide 4 is in Chinese."""
    from pptx import Presentation
    from pptx.util import Cm

    presentation = Presentation()
    title_only, blank = presentation.slide_layouts[5], presentation.slide_layouts[6]

    slide = presentation.slides.add_slide(title_only)
    slide.shapes.title.text = "Harbour cranes"  # type: ignore[union-attr]
    _textbox(slide.shapes, Cm(1), Cm(15), "Bottom line: the crane log is signed every night.")
    group = slide.shapes.add_group_shape()
    _textbox(group.shapes, Cm(13), Cm(6), "Right column: the gantry crane on the container quay.")
    _textbox(group.shapes, Cm(1), Cm(6), "Left column: the mobile crane on the ferry ramp.")
    table = slide.shapes.add_table(2, 3, Cm(1), Cm(10), Cm(20), Cm(3)).table
    for row, values in enumerate((("Crane", "Capacity", "Operator"), ("Gantry", "40 t", "Brannigan"))):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    slide.notes_slide.notes_text_frame.text = "Remind the crew that cranes stop at a wind of 20 m/s."  # type: ignore[union-attr]

    slide = presentation.slides.add_slide(blank)
    _textbox(slide.shapes, Cm(2), Cm(2), "Quayside lighting uses sodium lamps.")

    presentation.slides.add_slide(blank)  # no text at all

    slide = presentation.slides.add_slide(title_only)
    slide.shapes.title.text = "港口安全"  # type: ignore[union-attr]
    _textbox(slide.shapes, Cm(2), Cm(6), "起重机每天检查两次。")
    presentation.save(str(path))


def _textbox(shapes: Any, left: int, top: int, text: str) -> None:
    from pptx.util import Cm

    shapes.add_textbox(left, top, Cm(10), Cm(2)).text_frame.text = text


# --- OpenDocument -----------------------------------------------------------------------------


def odp_document() -> tuple[Any, Any]:
    """An empty presentation with a 28 x 21 cm page layout, and its master page."""
    from odf.opendocument import OpenDocumentPresentation
    from odf.style import MasterPage, PageLayout, PageLayoutProperties

    document = OpenDocumentPresentation()
    layout = PageLayout(name="Screen")
    layout.addElement(PageLayoutProperties(pagewidth="28cm", pageheight="21cm"))
    document.automaticstyles.addElement(layout)
    master = MasterPage(name="Default", pagelayoutname=layout)
    document.masterstyles.addElement(master)
    return document, master


def odp_frame(
    parent: Any,
    x: str,
    y: str,
    *lines: str,
    kind: str | None = None,
    width: str = "12cm",
    height: str = "2cm",
) -> Any:
    """A text frame of ``lines`` at (``x``, ``y``) in ``parent``; ``kind``: its presentation class
    ("title", "notes")."""
    from odf.draw import Frame, TextBox
    from odf.text import P

    element = Frame(width=width, height=height, x=x, y=y)
    if kind:
        element.setAttrNS("urn:oasis:names:tc:opendocument:xmlns:presentation:1.0", "class", kind)
    parent.addElement(element)
    box = TextBox()
    element.addElement(box)
    for line in lines:
        box.addElement(P(text=line))
    return element


def odf_table(name: str, rows: tuple[tuple[str, ...], ...]) -> Any:
    """A table of text cells, a row per tuple."""
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import P

    table = Table(name=name)
    table.addElement(TableColumn(numbercolumnsrepeated=len(rows[0])))
    for values in rows:
        row = TableRow()
        table.addElement(row)
        for value in values:
            cell = TableCell()
            row.addElement(cell)
            cell.addElement(P(text=value))
    return table


def write_odp(path: Path) -> None:
    """Slide 1 "Lighthouse lenses": a title frame, frames out of reading order, a group, a table
    and notes (with a slide-number field). Slide 2 named "Storm drill", with no title frame;
    slide 3 named "page3" (a default name), slide 4 with no text."""
    from odf.draw import Frame, G, Page
    from odf.presentation import Notes
    from odf.text import P, PageNumber

    document, master = odp_document()
    frame = odp_frame

    def page(name: str) -> Any:
        element = Page(masterpagename=master, name=name)
        document.presentation.addElement(element)
        return element

    slide = page("page1")
    frame(slide, "1cm", "14cm", "Bottom line: the lamp is lit at sunset.")
    frame(slide, "15cm", "4cm", "Right column: a Fresnel lens of the first order.")
    frame(slide, "1cm", "4cm", "Left column: a catadioptric lens.")
    frame(slide, "1cm", "1cm", "Lighthouse lenses", kind="title")
    group = G()
    slide.addElement(group)
    frame(group, "1cm", "7cm", "Grouped: the lens turns twice a minute.")
    holder = Frame(width="20cm", height="3cm", x="1cm", y="10cm")
    slide.addElement(holder)
    holder.addElement(odf_table("Lenses", (("Order", "Focal length"), ("First", "920 mm"))))
    notes = Notes()
    slide.addElement(notes)
    frame(notes, "1cm", "1cm", "Polish the lens with a chamois leather.", kind="notes")
    # the slide number's placeholder, its field showing "<number>", as a notes page LibreOffice
    # made from a PowerPoint one holds
    number = frame(notes, "10cm", "24cm", kind="page-number")
    shown = P()
    shown.addElement(PageNumber(text="<number>"))
    number.firstChild.addElement(shown)

    frame(page("Storm drill"), "1cm", "1cm", "Close the gallery shutters before the gale.")
    frame(page("page3"), "1cm", "1cm", "The logbook is kept in the watch room.")
    page("page4")  # no text
    document.save(str(path))


def write_odt(path: Path) -> None:
    """Headings of two levels, a paragraph with spans, spaces and a footnote, a list, a table, and
    a Chinese chapter."""
    from odf.opendocument import OpenDocumentText
    from odf.text import H, List, ListItem, Note, NoteBody, NoteCitation, P, S, Span

    document = OpenDocumentText()
    body = document.text
    body.addElement(P(text="A guide kept by the orchard's keepers."))
    body.addElement(H(outlinelevel=1, text="Orchard Guide"))
    body.addElement(P(text="Apples, pears and quinces grow on the south slope."))
    body.addElement(H(outlinelevel=2, text="Pruning"))
    paragraph = P(text="Prune the ")
    paragraph.addElement(Span(text="quince trees"))
    paragraph.addText(" in late winter,")
    paragraph.addElement(S(c=3))
    paragraph.addText("before the buds swell.")
    note = Note(id="n1", noteclass="footnote")
    note.addElement(NoteCitation(text="1"))
    note_body = NoteBody()
    note_body.addElement(P(text="Never prune in frost."))
    note.addElement(note_body)
    paragraph.addElement(note)
    body.addElement(paragraph)
    items = List()
    for text in ("Sharpen the loppers.", "Seal large cuts."):
        item = ListItem()
        item.addElement(P(text=text))
        items.addElement(item)
    body.addElement(items)
    body.addElement(H(outlinelevel=2, text="Harvest"))
    body.addElement(odf_table("Harvest", (("Fruit", "Month"), ("Bramley apples", "October"))))
    body.addElement(H(outlinelevel=1, text="果园"))
    body.addElement(P(text="苹果在九月成熟，梨在十月成熟。"))
    document.save(str(path))


# --- RTF --------------------------------------------------------------------------------------


def rtf_unicode(text: str) -> str:
    """``text`` as RTF Unicode escapes, as Word writes them: a signed 16-bit number, then "?"
    for readers that know no Unicode."""
    return "".join(f"\\u{ord(c) - 65536 if ord(c) > 32767 else ord(c)}?" for c in text)


def write_rtf(path: Path) -> None:
    """A Chinese RTF as Word writes one: Unicode escapes, GBK code page escapes in a GB2312 font,
    cp1252 escapes in a Western font, a table row, and a group the reader must skip."""
    path.write_bytes(
        (
            "{\\rtf1\\ansi\\ansicpg936\\deff0\\uc1"
            "{\\fonttbl{\\f0\\fnil\\fcharset134 SimSun;}{\\f1\\fswiss\\fcharset0 Arial;}}"
            "{\\*\\generator Riched20 10.0;}{\\info{\\title not the text}}\n"
            "\\pard\\f1 Tide tables for the \\'e9stuary pier at Saint-Malo.\\par\n"
            f"\\f0 {rtf_unicode('潮汐表：大潮时码头关闭。')}\\par\n"
            "\\f0 \\'d6\\'d0\\'ce\\'c4\\'b2\\'e2\\'ca\\'d4\\par\n"
            "\\trowd\\cellx2000\\cellx4000 \\f1 High water\\cell 06:42\\cell\\row\n"
            "}"
        ).encode("ascii")
    )


# --- EPUB -------------------------------------------------------------------------------------


def write_epub(path: Path) -> None:
    """Three chapters whose reading order (c, a, b) is not their files' order (a, b, c): two
    named in the table of contents (one in Chinese), one only by its heading."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("tests-epub-1")
    book.set_title("A Keeper's Year")
    book.set_language("en")
    harbour = epub.EpubHtml(title="The Harbour", file_name="a.xhtml", lang="en")
    harbour.content = "<h1>The Harbour</h1><p>Ferries dock at the east pier when the tide allows.</p>"
    knots = epub.EpubHtml(title="Knots", file_name="b.xhtml", lang="en")
    knots.content = "<h1>Appendix of Knots</h1><p>The bowline holds under load and unties easily.</p>"
    lighthouse = epub.EpubHtml(title="灯塔", file_name="c.xhtml", lang="zh")
    lighthouse.content = "<h2>灯塔</h2><p>灯塔守护者每天傍晚点亮灯，清晨熄灭。</p>"
    for chapter in (harbour, knots, lighthouse):
        book.add_item(chapter)
    book.toc = [
        epub.Link("c.xhtml", "第一章 灯塔", "c"),
        epub.Link("a.xhtml", "Chapter Two: The Harbour", "a"),
    ]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", lighthouse, harbour, knots]
    epub.write_epub(str(path), book)


# --- Damaged and hostile files ----------------------------------------------------------------

BOMB_LINE = "The quick brown fox jumps over the lazy dog."


def indented(path: Path) -> None:
    """``path``, an OpenDocument file, with its content.xml's body indented as pandoc writes it:
    a line break and spaces between office:body and the element inside, and after that."""
    with zipfile.ZipFile(path) as source:
        items = [(item, source.read(item)) for item in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item, data in items:
            if item.filename == "content.xml":
                assert data.count(b"<office:body><office:") == 1, data[:200]
                data = data.replace(b"<office:body><office:", b"<office:body>\n  <office:")
                data = data.replace(b"</office:body>", b"\n</office:body>")
            out.writestr(item, data)


def inflate_member(source: Path, path: Path, member: str, before: bytes, unit: bytes, inflated: int) -> None:
    """A copy of the zip container ``source`` whose ``member`` has ``unit`` repeated to
    ``inflated`` bytes just before ``before``: still a valid document, a few hundred KB packed.
    Written a megabyte at a time: a gigabyte costs no memory to make."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in original.infolist():
            if item.filename != member:
                bomb.writestr(item, original.read(item))
                continue
            head, tail = original.read(item).split(before, 1)
            with bomb.open(member, "w", force_zip64=True) as out:
                out.write(head)
                block = unit * (1024 * 1024 // len(unit))
                for _ in range(inflated // len(block)):
                    out.write(block)
                out.write(before + tail)


def write_pptx_bomb(path: Path, inflated: int) -> None:
    plain = path.with_name("plain-" + path.name)
    write_pptx(plain)
    unit = f"<a:p><a:r><a:t>{BOMB_LINE}</a:t></a:r></a:p>".encode()
    inflate_member(plain, path, "ppt/slides/slide1.xml", b"</p:txBody>", unit, inflated)
    plain.unlink()


def write_odt_bomb(path: Path, inflated: int) -> None:
    plain = path.with_name("plain-" + path.name)
    write_odt(plain)
    inflate_member(
        plain, path, "content.xml", b"</office:text>", f"<text:p>{BOMB_LINE}</text:p>".encode(), inflated
    )
    plain.unlink()


def write_epub_bomb(path: Path, inflated: int) -> None:
    plain = path.with_name("plain-" + path.name)
    write_epub(plain)
    inflate_member(plain, path, "EPUB/a.xhtml", b"</body>", f"<p>{BOMB_LINE}</p>".encode(), inflated)
    plain.unlink()


def truncated(source: Path, path: Path) -> None:
    """The first half of ``source``: a download cut short."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
