"""Slides (.pptx, .odp), OpenDocument text (.odt), RTF and e-books (.epub), made by the libraries
that write them (RTF by hand): read into sections named by slide, heading or chapter, indexed
through the reader process and found by keyword with that name; damaged, encrypted and
decompression-bomb files skipped with the reason while the rest of the folder is indexed."""

from __future__ import annotations

import pickle
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.index.service import IndexService
from proxy.plugins import isolated, loader_for
from proxy.types import Document, SkipFile
from tests.docs import indexed, skipped, write_docx
from tests.office_docs import (
    indented,
    rtf_unicode,
    truncated,
    write_epub,
    write_epub_bomb,
    write_odp,
    write_odt,
    write_odt_bomb,
    write_pptx,
    write_pptx_bomb,
    write_rtf,
)

WRITERS = {
    "deck.pptx": write_pptx,
    "lenses.odp": write_odp,
    "orchard.odt": write_odt,
    "tides.rtf": write_rtf,
    "keeper.epub": write_epub,
}


def load(path: Path) -> Document:
    loader = loader_for(path)
    assert loader is not None and isolated(loader)  # in the reader process, with its limits,
    assert pickle.loads(pickle.dumps(loader)) is loader  # which it reaches by name
    return loader(path)


def sections(document: Document) -> dict[str | None, str]:
    return {
        section.heading: document.text[section.start : section.end].strip() for section in document.sections
    }


def test_pptx_slides_read_in_reading_order_with_groups_tables_and_notes(tmp_path: Path) -> None:
    path = tmp_path / "deck.pptx"
    write_pptx(path)
    slides = sections(load(path))
    assert list(slides) == ["slide 1: Harbour cranes", "slide 2", "slide 4: 港口安全"]  # slide 3 has no text
    assert slides["slide 1: Harbour cranes"].split("\n") == [
        "Harbour cranes",
        "Left column: the mobile crane on the ferry ramp.",  # grouped, left of the other
        "Right column: the gantry crane on the container quay.",
        "Crane | Capacity | Operator",
        "Gantry | 40 t | Brannigan",
        "Bottom line: the crane log is signed every night.",  # added first, lowest on the slide
        "",
        "Notes: Remind the crew that cranes stop at a wind of 20 m/s.",
    ]
    assert slides["slide 2"] == "Quayside lighting uses sodium lamps."
    assert slides["slide 4: 港口安全"] == "港口安全\n起重机每天检查两次。"


def test_odp_slides_named_by_title_frame_or_own_name_with_notes(tmp_path: Path) -> None:
    path = tmp_path / "lenses.odp"
    write_odp(path)
    slides = sections(load(path))
    # slide 3's name ("page3") is the default one; slide 4 has no text
    assert list(slides) == ["slide 1: Lighthouse lenses", "slide 2: Storm drill", "slide 3"]
    assert slides["slide 1: Lighthouse lenses"].split("\n") == [
        "Lighthouse lenses",
        "Left column: a catadioptric lens.",
        "Right column: a Fresnel lens of the first order.",
        "Grouped: the lens turns twice a minute.",
        "Order | Focal length",
        "First | 920 mm",
        "Bottom line: the lamp is lit at sunset.",
        "",
        "Notes: Polish the lens with a chamois leather.",
    ]
    assert slides["slide 2: Storm drill"] == "Close the gallery shutters before the gale."
    assert slides["slide 3"] == "The logbook is kept in the watch room."


def test_odt_headings_start_sections_with_lists_tables_and_chinese(tmp_path: Path) -> None:
    path = tmp_path / "orchard.odt"
    write_odt(path)
    parts = sections(load(path))
    assert list(parts) == [
        None,
        "Orchard Guide",
        "Orchard Guide > Pruning",
        "Orchard Guide > Harvest",
        "果园",
    ]
    assert parts[None] == "A guide kept by the orchard's keepers."
    pruning = parts["Orchard Guide > Pruning"]
    assert (
        "Prune the quince trees in late winter,   before the buds swell. [Never prune in frost.]" in pruning
    )
    assert "- Sharpen the loppers.\n\n- Seal large cuts." in pruning
    assert "Fruit | Month\n\nBramley apples | October" in parts["Orchard Guide > Harvest"]
    assert parts["果园"] == "果园\n\n苹果在九月成熟，梨在十月成熟。"


@pytest.mark.parametrize("name", ["orchard.odt", "lenses.odp"])
def test_opendocument_with_its_body_indented_is_read_the_same(tmp_path: Path, name: str) -> None:
    """pandoc indents content.xml: the first thing in office:body is then a line break, which
    odfpy takes for the document's text."""
    plain, spaced = tmp_path / name, tmp_path / f"indented-{name}"
    WRITERS[name](plain)
    WRITERS[name](spaced)
    indented(spaced)
    assert sections(load(spaced)) == sections(load(plain))


def test_docx_tables_are_read_in_their_place_under_their_heading(tmp_path: Path) -> None:
    """A table in the first chapter belongs to that chapter's section, not the last one's."""
    import docx

    document = docx.Document()
    document.add_heading("Harbour Survey", level=1)
    document.add_heading("Moorings", level=2)
    document.add_paragraph("Three buoys need new chains.")
    table = document.add_table(rows=0, cols=3)
    for values in (("Buoy", "Chain", "Remarks"), ("Buoy 3", "14 m", "new shackle"), ("", "", "")):
        for cell, value in zip(table.add_row().cells, values, strict=True):
            cell.text = value
    document.add_paragraph("Divers are booked for March.")
    document.add_heading("Staffing", level=1)
    document.add_paragraph("Two harbour masters share the night shift.")
    path = tmp_path / "survey.docx"
    document.save(str(path))
    parts = sections(load(path))
    assert list(parts) == ["Harbour Survey", "Harbour Survey > Moorings", "Staffing"]
    assert parts["Harbour Survey > Moorings"] == (
        "Moorings\n\nThree buoys need new chains.\n\n"
        "Buoy | Chain | Remarks\nBuoy 3 | 14 m | new shackle\n\n"  # the empty row left out
        "Divers are booked for March."
    )
    assert parts["Staffing"] == "Staffing\n\nTwo harbour masters share the night shift."


def test_docx_content_controls_text_boxes_and_outline_level_headings_are_read(tmp_path: Path) -> None:
    """What Word's templates and other editors write: paragraphs inside a content control
    (``w:sdt``), a text box's text, a heading style named 标题 1 (as some editors name theirs)
    and a paragraph made a heading by its own outline level."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls, qn

    document = docx.Document()
    style = document.styles.add_style("标题 1", WD_STYLE_TYPE.PARAGRAPH)
    style.element.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {nsdecls("w")} w:val="0"/>'))
    document.add_paragraph("港口手册", style="标题 1")
    wrapped = document.add_paragraph("Buoys are painted every spring.")
    control = parse_xml(f"<w:sdt {nsdecls('w')}><w:sdtPr/><w:sdtContent/></w:sdt>")
    wrapped._p.addprevious(control)
    control.find(qn("w:sdtContent")).append(wrapped._p)
    anchor = document.add_paragraph("See the box.")
    box = parse_xml(
        f"<w:r {nsdecls('w')}><w:pict><w:txbxContent>"
        "<w:p><w:r><w:t>Gale warnings hang in the harbour office window.</w:t></w:r></w:p>"
        "</w:txbxContent></w:pict></w:r>"
    )
    anchor._p.append(box)
    outlined = document.add_paragraph("Night duty")
    outlined._p.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {nsdecls("w")} w:val="1"/>'))
    document.add_paragraph("The keeper logs the lamp every hour.")
    path = tmp_path / "handbook.docx"
    document.save(str(path))
    parts = sections(load(path))
    assert list(parts) == ["港口手册", "港口手册 > Night duty"]
    assert "Buoys are painted every spring." in parts["港口手册"]
    assert "See the box.\nGale warnings hang in the harbour office window." in parts["港口手册"]
    assert parts["港口手册 > Night duty"] == "Night duty\n\nThe keeper logs the lamp every hour."


def test_a_docx_text_box_as_word_writes_it_is_read_once(tmp_path: Path) -> None:
    """Word writes a text box twice, as a drawing and as a fallback for older readers
    (``mc:AlternateContent``): its text comes once, and so does a box inside a box."""
    import docx
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    wps = 'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"'
    inner = (
        "<w:p><w:r><w:t>Gale warnings hang in the window.</w:t></w:r></w:p>"
        "<w:p><w:r><w:pict><w:txbxContent><w:p><w:r><w:t>A box in the box.</w:t></w:r></w:p>"
        "</w:txbxContent></w:pict></w:r></w:p>"
    )
    box = parse_xml(
        f"<w:r {nsdecls('w')} {mc} {wps}><mc:AlternateContent>"
        f'<mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>{inner}</w:txbxContent>'
        "</wps:txbx></w:drawing></mc:Choice>"
        f"<mc:Fallback><w:pict><w:txbxContent>{inner}</w:txbxContent></w:pict></mc:Fallback>"
        "</mc:AlternateContent></w:r>"
    )
    document = docx.Document()
    document.add_paragraph("See the box.")._p.append(box)
    path = tmp_path / "boxed.docx"
    document.save(str(path))
    assert load(path).text == "See the box.\nGale warnings hang in the window.\nA box in the box.\n\n"


def test_rtf_decodes_unicode_and_code_page_escapes(tmp_path: Path) -> None:
    path = tmp_path / "tides.rtf"
    write_rtf(path)
    document = load(path)
    assert [s.heading for s in document.sections] == [None]
    lines = document.text.split("\n")
    assert lines[:3] == [
        "Tide tables for the éstuary pier at Saint-Malo.",  # \'e9 in a cp1252 font
        "潮汐表：大潮时码头关闭。",  # \uN escapes, some negative
        "中文测试",  # \'xx in the GBK code page of a GB2312 font
    ]
    assert "High water" in document.text and "not the text" not in document.text
    raw = tmp_path / "raw.rtf"  # some writers put the code page's bytes in as they are
    raw.write_bytes(b"{\\rtf1\\ansi\\ansicpg1252 Caf\xe9 cr\xe8me at the \x93quay\x94.\\par}")
    assert load(raw).text == "Café crème at the \u201cquay\u201d."
    raw.write_bytes("{\\rtf1\\ansi 码头 and café in UTF-8.\\par}".encode())  # others, UTF-8
    assert load(raw).text == "码头 and café in UTF-8."


def test_rtf_headings_start_sections_named_by_their_path(tmp_path: Path) -> None:
    """Headings as Word and LibreOffice write them: a paragraph style the style sheet names
    "heading N" (标题 N from a Chinese editor), or an outline level on the paragraph itself."""
    path = tmp_path / "manual.rtf"
    path.write_bytes(
        (
            "{\\rtf1\\ansi\\ansicpg1252\\deff0\\uc1{\\fonttbl{\\f0 Arial;}}"
            "{\\stylesheet{\\s0 Normal;}{\\s1\\sbasedon0\\outlinelevel0\\b\\fs32 heading 1;}"
            f"{{\\s2\\sbasedon0\\b {rtf_unicode('标题 2')};}}{{\\*\\cs10 Default Paragraph Font;}}}}\n"
            "\\pard\\plain\\s1 \\par\n"  # an empty heading paragraph
            "\\pard\\plain\\s0 A preface before any heading.\\par\n"
            "\\pard\\plain\\s1\\outlinelevel0\\b\\fs32 Harbour Manual\\par\n"
            "\\pard\\plain\\s0 The harbour opens at dawn.\\par\n"
            f"\\pard\\plain\\s2\\b\\tab {rtf_unicode('系泊')}\\par\n"
            "\\pard\\plain\\s0 Moor at the east pier.\\par\n"
            "\\pard\\plain\\outlinelevel0 Night Duty\\par\n"
            "\\pard\\plain The lamp is lit at dusk.\\par\n}"
        ).encode("ascii")
    )
    parts = sections(load(path))
    assert list(parts) == [None, "Harbour Manual", "Harbour Manual > 系泊", "Night Duty"]
    assert parts[None] == "A preface before any heading."
    assert parts["Harbour Manual > 系泊"] == "系泊\nMoor at the east pier."
    assert parts["Night Duty"] == "Night Duty\nThe lamp is lit at dusk."
    assert "\ue001" not in load(path).text and "\ue002" not in load(path).text
    empty = tmp_path / "empty.rtf"
    empty.write_bytes(b"{\\rtf1\\ansi{\\stylesheet{\\s1 heading 1;}}\\pard\\s1 \\par}")
    with pytest.raises(SkipFile, match="no text"):
        load(empty)


def test_epub_chapters_in_spine_order_named_by_the_table_of_contents_or_heading(tmp_path: Path) -> None:
    path = tmp_path / "keeper.epub"
    write_epub(path)
    with zipfile.ZipFile(path) as archive:  # the files in another order than the reading one
        files = [name for name in archive.namelist() if name.endswith(("a.xhtml", "b.xhtml", "c.xhtml"))]
    assert files == ["EPUB/a.xhtml", "EPUB/b.xhtml", "EPUB/c.xhtml"]
    chapters = sections(load(path))
    assert list(chapters) == ["第一章 灯塔", "Chapter Two: The Harbour", "Appendix of Knots"]  # no nav
    assert chapters["第一章 灯塔"] == "灯塔\n\n灯塔守护者每天傍晚点亮灯，清晨熄灭。"
    assert chapters["Chapter Two: The Harbour"].endswith(
        "Ferries dock at the east pier when the tide allows."
    )


def test_office_files_are_indexed_and_found_with_the_slide_or_chapter_named(tmp_path: Path) -> None:
    """Through the index: the reader process, the chunks, the keyword search."""
    root = tmp_path / "docs"
    root.mkdir()
    for name, write in WRITERS.items():
        write(root / name)
    service = indexed(tmp_path, root, "docs")
    try:
        assert service.store.status()["collections"][0]["skipped"] == []
        for query, found in {
            "Brannigan": ("deck.pptx", "slide 1: Harbour cranes"),
            "起重机": ("deck.pptx", "slide 4: 港口安全"),
            "chamois": ("lenses.odp", "slide 1: Lighthouse lenses"),
            "gallery shutters": ("lenses.odp", "slide 2: Storm drill"),
            "loppers": ("orchard.odt", "Orchard Guide > Pruning"),
            "梨在十月成熟": ("orchard.odt", "果园"),
            "Saint-Malo": ("tides.rtf", None),
            "大潮时码头关闭": ("tides.rtf", None),
            "bowline": ("keeper.epub", "Appendix of Knots"),
            "灯塔守护者": ("keeper.epub", "第一章 灯塔"),
        }.items():
            hits = service.store.search_keyword(query)
            assert hits, query
            assert (hits[0].path, hits[0].heading) == found, query
    finally:
        service.close()


def scan_folder(tmp_path: Path, root: Path, **settings: int) -> tuple[IndexService, dict[str, str]]:
    service = indexed(tmp_path, root, **settings)
    return service, skipped(service)


def test_damaged_files_are_skipped_with_the_reason_and_the_rest_indexed(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    whole.mkdir()
    root = tmp_path / "docs"
    root.mkdir()
    for name, write in WRITERS.items():
        write(whole / name)
        if name.endswith(".rtf"):
            (root / "broken.rtf").write_bytes(b"\x00\x01\x02 a binary file named .rtf")
        else:
            truncated(whole / name, root / f"broken{Path(name).suffix}")  # a download cut short
    (root / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    write_odp(root / "lenses.odp")
    service, reasons = scan_folder(tmp_path, root)
    try:
        assert reasons == {
            "broken.pptx": "unreadable PPTX: BadZipFile: File is not a zip file",
            "broken.odp": "unreadable ODP: BadZipFile: File is not a zip file",
            "broken.odt": "unreadable ODT: BadZipFile: File is not a zip file",
            "broken.epub": "unreadable EPUB: BadZipFile: File is not a zip file",
            "broken.rtf": "not an RTF file: it does not start with {\\rtf",
        }
        assert [h.path for h in service.store.search_keyword("heron", 5)] == ["note.md"]
        assert [h.path for h in service.store.search_keyword("chamois", 5)] == ["lenses.odp"]
    finally:
        service.close()


@pytest.mark.parametrize(
    ("name", "write", "reason"),
    [
        ("wrong.pptx", write_odt, r"unreadable PPTX: KeyError: .*Content_Types"),
        ("wrong.epub", write_odt, r"unreadable EPUB: KeyError: .*container\.xml"),
        (
            "wrong.odt",
            write_odp,
            r"not an ODT: the file holds application/vnd\.oasis\.opendocument\.presentation",
        ),
        ("wrong.odp", write_pptx, r"unreadable ODP: KeyError: .*manifest\.xml"),
    ],
)
def test_a_zip_of_another_kind_is_skipped_with_the_reason(
    tmp_path: Path, name: str, write: Callable[[Path], None], reason: str
) -> None:
    path = tmp_path / name
    write(path)  # writes what its library makes, whatever the name
    with pytest.raises(SkipFile, match=reason):
        load(path)


@pytest.mark.parametrize(
    ("name", "write", "member"),
    [
        ("cut.docx", write_docx, "word/document.xml"),
        ("cut.odt", write_odt, "content.xml"),
        ("cut.odp", write_odp, "content.xml"),
    ],
)
def test_a_document_whose_xml_is_cut_short_is_skipped_and_nothing_printed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    write: Callable[[Path], None],
    member: str,
) -> None:
    """Not read as far as the parser got, nor its XML printed (odfpy prints a part it cannot
    parse, the document's text with it, and carries on)."""
    path = tmp_path / name
    write(path)
    with zipfile.ZipFile(path) as source:
        items = [(item, source.read(item)) for item in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item, data in items:
            out.writestr(item, data[: len(data) * 2 // 3] if item.filename == member else data)
    with pytest.raises(SkipFile, match=f"unreadable {path.suffix[1:].upper()}: "):
        load(path)
    assert capsys.readouterr().out == ""


def test_password_protected_and_encrypted_files_are_skipped_with_the_reason(tmp_path: Path) -> None:
    # an Office file saved with a password is an encrypted package in an OLE compound file
    ole = tmp_path / "locked.pptx"
    ole.write_bytes(
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024) + "EncryptedPackage".encode("utf-16-le")
    )
    with pytest.raises(SkipFile, match="password-protected PPTX"):
        load(ole)
    locked_docx = tmp_path / "locked.docx"
    locked_docx.write_bytes(ole.read_bytes())
    with pytest.raises(SkipFile, match="password-protected DOCX"):
        load(locked_docx)
    # a PowerPoint 97-2003 file under a new name is an OLE file too
    ole.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096))
    with pytest.raises(SkipFile, match=r"an OLE file, not a zip \(a legacy \.ppt"):
        load(ole)
    # OpenDocument: the manifest says how content.xml is encrypted
    plain, locked = tmp_path / "plain.odt", tmp_path / "locked.odt"
    write_odt(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(locked, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "META-INF/manifest.xml":
                data = re.sub(
                    rb'(<manifest:file-entry [^>]*full-path="content.xml"[^>]*)/>',
                    rb'\1><manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x"/>'
                    rb"</manifest:file-entry>",
                    data,
                )
                assert b"encryption-data" in data
            elif item.filename == "content.xml":
                data = bytes(range(256)) * 16
            out.writestr(item, data)
    with pytest.raises(SkipFile, match="password-protected ODT"):
        load(locked)
    # EPUB: a book sold with DRM lists its encrypted chapters in META-INF/encryption.xml
    book = tmp_path / "drm.epub"
    write_epub(book)
    with zipfile.ZipFile(book, "a") as archive:
        archive.writestr(
            "META-INF/encryption.xml",
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
            '<enc:CipherReference URI="EPUB/a.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>',
        )
    with pytest.raises(SkipFile, match=r"encrypted EPUB \(DRM\)"):
        load(book)


def test_files_with_no_text_are_skipped(tmp_path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from pptx import Presentation

    deck = tmp_path / "empty.pptx"
    presentation = Presentation()
    presentation.slides.add_slide(presentation.slide_layouts[6])
    presentation.save(str(deck))
    text = tmp_path / "empty.odt"
    OpenDocumentText().save(str(text))
    rtf = tmp_path / "empty.rtf"
    rtf.write_bytes(b"{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\par}")
    for path in (deck, text, rtf):
        with pytest.raises(SkipFile, match="^no text$"):
            load(path)


def test_zip_bombs_are_skipped_at_once_with_the_reason_and_the_rest_indexed(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for name, write_bomb in (
        ("bomb.pptx", write_pptx_bomb),
        ("bomb.odt", write_odt_bomb),
        ("bomb.epub", write_epub_bomb),
    ):
        write_bomb(root / name, 80 * 1024 * 1024)
        assert (root / name).stat().st_size < 2 * 1024 * 1024
        started = time.monotonic()
        with pytest.raises(SkipFile, match="a decompression bomb"):
            load(root / name)  # the container's directory is read, not the member
        assert time.monotonic() - started < 1
    write_pptx(root / "deck.pptx")
    (root / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    # a reader with little memory: without the check, each bomb would be read until it ran out
    service, reasons = scan_folder(tmp_path, root, reader_memory=256)
    try:
        assert sorted(reasons) == ["bomb.epub", "bomb.odt", "bomb.pptx"]
        for name, member in (
            ("bomb.pptx", "ppt/slides/slide1.xml"),
            ("bomb.odt", "content.xml"),
            ("bomb.epub", "EPUB/a.xhtml"),
        ):
            assert re.fullmatch(
                rf"{name[5:].upper()} member {re.escape(member)} inflates \d+ times over, to 79 MB "
                r"\(a decompression bomb\?\)",
                reasons[name],
            ), reasons[name]
        assert [h.path for h in service.store.search_keyword("Brannigan", 5)] == ["deck.pptx"]
        assert [h.path for h in service.store.search_keyword("heron", 5)] == ["note.md"]
    finally:
        service.close()


def test_office_files_encrypted_with_a_password_are_skipped_with_the_reason(tmp_path: Path) -> None:
    """Encrypted as Office does it (ECMA-376 agile encryption in an OLE compound file), by
    msoffcrypto-tool."""
    from msoffcrypto.format.ooxml import OOXMLFile
    from openpyxl import Workbook

    write_docx(tmp_path / "plain.docx")
    write_pptx(tmp_path / "plain.pptx")
    book = Workbook()
    book.active.append(["Crane", "Capacity"])  # type: ignore[union-attr]
    book.save(tmp_path / "plain.xlsx")
    for kind in ("docx", "pptx", "xlsx"):
        locked = tmp_path / f"locked.{kind}"
        with (tmp_path / f"plain.{kind}").open("rb") as plain, locked.open("wb") as out:
            OOXMLFile(plain).encrypt("harbour", out)
        with pytest.raises(SkipFile, match=f"password-protected {kind.upper()}"):
            load(locked)


@pytest.mark.parametrize("size_mb", [20, 40])
def test_a_large_password_protected_file_is_named_so_wherever_its_directory_lies(
    tmp_path: Path, size_mb: int
) -> None:
    """The compound file's directory, which names the encrypted package, may come last: a file
    of 20 MB (past one end's look, short of two) is searched to its end too."""
    path = tmp_path / "locked.docx"
    with path.open("wb") as file:
        file.write(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
        file.truncate(size_mb << 20)
        file.seek(0, 2)
        file.write("EncryptedPackage".encode("utf-16-le") + bytes(512))
    with pytest.raises(SkipFile, match="password-protected DOCX"):
        load(path)
