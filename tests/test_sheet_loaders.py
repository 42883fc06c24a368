"""Spreadsheets: workbooks written by openpyxl (.xlsx, .xlsm) and odfpy (.ods), read as blocks of
rows that each begin with the sheet's header row and are named by sheet and rows; and the hostile
ones: a million rows, a decompression bomb, a corrupt file, an encrypted one."""

from __future__ import annotations

import csv
import pickle
import re
import time
import zipfile
from datetime import date, datetime
from pathlib import Path

import pytest

from plugins.loaders.sheets import MAX_ROWS, load_csv, load_ods
from proxy.index.chunker import chunk_document
from proxy.index.service import IndexService
from proxy.plugins import isolated, loader_for
from proxy.settings import Settings
from proxy.types import Document, SkipFile
from tests.docs import indexed
from tests.office_docs import indented


def rewrite_member(path: Path, member: str, change: dict[bytes, bytes]) -> None:
    """``path`` with ``member``'s bytes replaced as ``change`` says."""
    with zipfile.ZipFile(path) as source:
        items = [(item, source.read(item)) for item in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item, data in items:
            if item.filename == member:
                for old, new in change.items():
                    assert old in data, old
                    data = data.replace(old, new)
            out.writestr(item, data)


def write_workbook(path: Path, *, rows: int = 1000) -> None:
    """A budget of ``rows`` lines with a total computed by a formula, and a hidden second sheet
    of suppliers, in Chinese. openpyxl writes formulas without a value (it computes nothing):
    the value a spreadsheet program would have saved with D2's formula is written in after."""
    import openpyxl

    workbook = openpyxl.Workbook()
    budget = workbook.active
    assert budget is not None
    budget.title = "Budget"
    budget.append(["Item", "Quantity", "Unit price", "Total", "Ordered", None, None])
    budget.append(["Lamp oil", 40, 2.5, "=B2*C2", date(2026, 3, 1)])
    budget.append([])  # an empty row, skipped
    for number in range(4, rows + 1):
        item = "Fresnel lens polish" if number == 900 else f"Rope {number}"
        budget.append([item, number, 1.25, number * 1.25, datetime(2026, 4, 2, 14, 30)])
    suppliers = workbook.create_sheet("供应商")
    suppliers.sheet_state = "hidden"
    suppliers.append(["名称", "城市"])
    suppliers.append(["青岛港务局", "青岛"])
    suppliers.append(["Bergen Chandlery", "Bergen"])
    workbook.save(path)
    rewrite_member(path, "xl/worksheets/sheet1.xml", {b"<f>B2*C2</f><v></v>": b"<f>B2*C2</f><v>100</v>"})


def write_ods(path: Path) -> None:
    """Two tables as LibreOffice writes them: typed values with their shown text, repeated empty
    cells between values, and the empty rows down to the last one as a single repeated row."""
    from odf.element import Element
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    def cell(value: object, *, repeat: int = 1) -> Element:
        if value is None:
            return TableCell(numbercolumnsrepeated=repeat) if repeat > 1 else TableCell()
        if isinstance(value, float):
            made = TableCell(valuetype="float", value=value)
        elif isinstance(value, date):
            made = TableCell(valuetype="date", datevalue=value.isoformat())
        else:
            made = TableCell(valuetype="string")
        made.addElement(P(text=str(value)))
        return made

    def row(*values: object, repeat: int = 1) -> Element:
        made = TableRow(numberrowsrepeated=repeat) if repeat > 1 else TableRow()
        for value in values:
            made.addElement(value if isinstance(value, Element) else cell(value))
        return made

    document = OpenDocumentSpreadsheet()
    tides = Table(name="Tides")
    tides.addElement(row("Harbour", "High water", "Height (m)", "Date"))
    tides.addElement(row("Bergen", "06:12", 1.5, date(2026, 5, 1)))
    tides.addElement(row(cell(None, repeat=1024), repeat=3))  # empty rows
    tides.addElement(row("Ålesund", cell(None, repeat=2), date(2026, 5, 2), cell(None, repeat=1020)))
    tides.addElement(row(cell(None, repeat=1024), repeat=1048570))
    document.spreadsheet.addElement(tides)
    keepers = Table(name="灯塔")
    keepers.addElement(row("灯塔", "看守人"))
    keepers.addElement(row("成山头灯塔", "王海"))
    document.spreadsheet.addElement(keepers)
    document.save(str(path))


def rows_named(heading: str, sheet: str) -> tuple[int, int]:
    """The first and last row a heading like ``Budget (rows 2–41)`` names."""
    match = re.fullmatch(rf"{sheet} \(rows (\d+)–(\d+)\)", heading)
    assert match, heading
    return int(match[1]), int(match[2])


ENCRYPTED_ENTRY = (
    b'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
    b'<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x"/>'
    b"</manifest:file-entry></manifest:manifest>"
)


def section_text(document: Document, heading: str) -> str:
    (section,) = [s for s in document.sections if s.heading == heading]
    return document.text[section.start : section.end]


def test_a_workbook_is_read_in_blocks_that_each_begin_with_the_header_row(tmp_path: Path) -> None:
    path = tmp_path / "stores.xlsx"
    write_workbook(path)
    load = loader_for(path)
    assert load is not None and isolated(load)  # in the reader process, with its limits,
    assert pickle.loads(pickle.dumps(load)) is load  # which it reaches by name
    document = load(path)
    headings = [s.heading or "" for s in document.sections]
    assert headings[0].startswith("Budget (rows 2–") and headings[-1] == "供应商 (rows 2–3)"
    header = "Item | Quantity | Unit price | Total | Ordered"  # the empty cells at its end dropped
    first = section_text(document, headings[0]).splitlines()
    assert first[:3] == [
        header,
        "Lamp oil | 40 | 2.5 | 100 | 2026-03-01",  # the formula's saved value; a date in ISO form
        "Rope 4 | 4 | 1.25 | 5 | 2026-04-02 14:30:00",  # the empty row 3 skipped
    ]
    (late,) = [s for s in document.sections if "Fresnel lens polish" in document.text[s.start : s.end]]
    text = document.text[late.start : late.end]
    assert text.startswith(header + "\n") and "Fresnel lens polish | 900 | 1.25 | 1125 |" in text
    low, high = rows_named(late.heading or "", "Budget")
    assert low <= 900 <= high
    assert headings[-2].startswith("Budget (rows ") and headings[-2].endswith("–1000)")
    assert len(chunk_document(document)) == len(document.sections)  # a block fits in one chunk
    assert (
        section_text(document, "供应商 (rows 2–3)")
        == "名称 | 城市\n青岛港务局 | 青岛\nBergen Chandlery | Bergen"
    )


def test_a_formula_without_a_saved_value_reads_empty_and_an_xlsm_is_read(tmp_path: Path) -> None:
    """openpyxl saves formulas without values: the cell reads as empty, the row's other cells
    as they are."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Part", "Count", "Double"])
    sheet.append(["Wick", 3, "=B2*2"])
    path = tmp_path / "macros.xlsm"
    workbook.save(path)
    document = loader_for(path)(path)  # type: ignore[misc]
    assert document.text == "Part | Count | Double\nWick | 3\n\n"
    assert [s.heading for s in document.sections] == ["Sheet (row 2)"]


def test_an_ods_is_read_table_by_table(tmp_path: Path) -> None:
    path = tmp_path / "tides.ods"
    write_ods(path)
    load = loader_for(path)
    assert load is not None and isolated(load) and pickle.loads(pickle.dumps(load)) is load
    document = load(path)
    assert [s.heading for s in document.sections] == ["Tides (rows 2–6)", "灯塔 (row 2)"]
    assert section_text(document, "Tides (rows 2–6)").splitlines() == [
        "Harbour | High water | Height (m) | Date",
        "Bergen | 06:12 | 1.5 | 2026-05-01",
        "Ålesund |  |  | 2026-05-02",  # the repeated empty cells keep the columns in place
    ]
    assert section_text(document, "灯塔 (row 2)") == "灯塔 | 看守人\n成山头灯塔 | 王海"


def test_an_ods_with_its_body_indented_is_read_the_same(tmp_path: Path) -> None:
    """A line break first in office:body, which odfpy takes for the spreadsheet."""
    plain, spaced = tmp_path / "tides.ods", tmp_path / "indented.ods"
    write_ods(plain)
    write_ods(spaced)
    indented(spaced)
    assert load_ods(spaced) == load_ods(plain)


def test_reading_stops_at_the_limits_and_the_document_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openpyxl

    from plugins.loaders import sheets

    workbook = openpyxl.Workbook()
    first = workbook.active
    assert first is not None
    first.title = "Wide"
    first.append(["Name", *[None] * 200, "Far right"])  # the second value in column GT
    for number in range(2, 60):
        first.append([f"Buoy {number}", *[None] * 200, number])
    workbook.create_sheet("Later").append(["Never", "read"])
    workbook.create_sheet("Last").append(["Nor", "this"])
    path = tmp_path / "wide.xlsx"
    workbook.save(path)
    document = sheets.load_xlsx(path)
    assert document.text.startswith("Name | … | Far right\nBuoy 2 | … | 2\n")  # not 200 separators
    monkeypatch.setattr(sheets, "MAX_ROWS", 10)
    document = sheets.load_xlsx(path)
    assert [s.heading for s in document.sections] == ["Wide (rows 2–10)", "Wide (not read)"]
    assert document.text.endswith(
        "Wide: rows after 10 not read (the file's 10-row limit); sheets not read: Later, Last.\n\n"
    )
    monkeypatch.setattr(sheets, "MAX_ROWS", 1000)
    monkeypatch.setattr(sheets, "MAX_CELLS", 202 * 5)  # the header row and four rows of values
    assert "Wide: rows after 5 not read (the file's 1,010-cell limit)" in sheets.load_xlsx(path).text
    monkeypatch.setattr(sheets, "MAX_CELLS", 10**6)
    monkeypatch.setattr(sheets, "BLOCK_TOKENS", 20)
    monkeypatch.setattr(sheets, "MAX_CHUNKS", 3)
    document = sheets.load_xlsx(path)
    headings = [s.heading for s in document.sections]
    assert headings == ["Wide (rows 2–3)", "Wide (rows 4–5)", "Wide (rows 6–7)", "Wide (not read)"]
    assert "Wide: rows after 7 not read (the file's 3-chunk limit)" in document.text


def test_empty_encrypted_and_corrupt_workbooks_are_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import openpyxl
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table

    empty = tmp_path / "empty.xlsx"
    workbook = openpyxl.Workbook()
    workbook.create_sheet("Blank")
    workbook.save(empty)
    empty_ods = tmp_path / "empty.ods"
    document = OpenDocumentSpreadsheet()
    document.spreadsheet.addElement(Table(name="Blank"))
    document.save(str(empty_ods))
    # what Office saves with a password: an OLE compound file holding the encrypted package
    encrypted = tmp_path / "locked.xlsx"
    encrypted.write_bytes(
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "EncryptedPackage".encode("utf-16-le")
    )
    legacy = tmp_path / "old.xlsx"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024))
    corrupt = tmp_path / "cut.xlsx"
    write_workbook(corrupt, rows=20)
    corrupt.write_bytes(corrupt.read_bytes()[:3000])
    broken_sheet = tmp_path / "broken.xlsx"
    write_workbook(broken_sheet, rows=20)
    rewrite_member(broken_sheet, "xl/worksheets/sheet1.xml", {b"</sheetData>": b"</sheetDat"})
    not_ods = tmp_path / "cut.ods"
    not_ods.write_bytes(b"PK\x03\x04 not really")
    locked_ods = tmp_path / "locked.ods"
    write_ods(locked_ods)
    rewrite_member(locked_ods, "META-INF/manifest.xml", {b"</manifest:manifest>": ENCRYPTED_ENTRY})
    broken_ods = tmp_path / "broken.ods"
    write_ods(broken_ods)
    rewrite_member(broken_ods, "content.xml", {b"</office:document-content>": b"</office:document-cont"})
    big_ods = tmp_path / "big.ods"
    write_ods(big_ods)
    with zipfile.ZipFile(big_ods, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Pictures/blank.bmp", bytes(17 * 1024 * 1024))  # odfpy would read it in
    expected = {
        empty: "no cells with values",
        empty_ods: "no cells with values",
        encrypted: "password-protected XLSX",
        legacy: "unreadable XLSX: an OLE file, not a zip",
        corrupt: "unreadable XLSX: BadZipFile",
        broken_sheet: "unreadable XLSX: ParseError",
        not_ods: "unreadable ODS: BadZipFile",
        locked_ods: "password-protected ODS",
        broken_ods: "unreadable ODS: malformed XML",
        big_ods: "ODS inflates to 17 MB, over the 16 MB limit",
    }
    for path, reason in expected.items():
        with pytest.raises(SkipFile, match=reason):
            loader_for(path)(path)  # type: ignore[misc]
    assert capsys.readouterr().out == ""  # nothing of the malformed XML printed


def test_sheets_are_indexed_and_found_with_the_sheet_and_rows_named(tmp_path: Path) -> None:
    """Through the index: the reader process, the chunks, the keyword search."""
    root = tmp_path / "sheets"
    root.mkdir()
    write_workbook(root / "stores.xlsx")
    write_ods(root / "tides.ods")
    service = indexed(tmp_path, root, "sheets")
    try:
        assert service.store.status()["collections"][0]["skipped"] == []
        (hit,) = service.store.search_keyword("Fresnel lens polish")[:1]
        assert hit.path == "stores.xlsx" and (hit.heading or "").startswith("Budget (rows ")
        assert "Item | Quantity | Unit price" in hit.text  # the header, with row 900
        (hit,) = service.store.search_keyword("Chandlery")[:1]
        assert (hit.path, hit.heading) == ("stores.xlsx", "供应商 (rows 2–3)")  # the hidden sheet
        (hit,) = service.store.search_keyword("成山头灯塔")[:1]
        assert (hit.path, hit.heading) == ("tides.ods", "灯塔 (row 2)")
        (hit,) = service.store.search_keyword("Ålesund high water")[:1]
        assert (hit.path, hit.heading) == ("tides.ods", "Tides (rows 2–6)")
    finally:
        service.close()


# -- hostile ------------------------------------------------------------------------------------
def write_million_rows(path: Path, rows: int = 1_000_000) -> None:
    """A workbook of ``rows`` rows in one sheet. openpyxl's write-only mode takes about 30 s for
    a million rows here; the sheet's XML is written directly, a megabyte at a time, in 1-2 s.
    Row 50 names a lighthouse; row 500,000, past the limit, a word found nowhere else."""
    import openpyxl

    base = path.with_suffix(".base.xlsx")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Readings"
    sheet.append(["Reading", "Station", "Level"])
    workbook.save(base)

    def text(column: str, row: int, value: str) -> str:
        return f'<c r="{column}{row}" t="inlineStr"><is><t>{value}</t></is></c>'

    header = "".join(
        text(column, 1, name) for column, name in (("A", "Reading"), ("B", "Station"), ("C", "Level"))
    )
    with (
        zipfile.ZipFile(base) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out,
    ):
        for item in source.infolist():
            data = source.read(item)
            if item.filename != "xl/worksheets/sheet1.xml":
                out.writestr(item, data)
                continue
            head, rest = data.split(b"<sheetData>")
            head = head.replace(b'<dimension ref="A1:C1"/>', f'<dimension ref="A1:C{rows}"/>'.encode())
            tail = rest.split(b"</sheetData>")[1]
            with out.open(item.filename, "w", force_zip64=True) as sheet_xml:
                sheet_xml.write(head + b"<sheetData>")
                lines = [f'<row r="1">{header}</row>']
                for row in range(2, rows + 1):
                    station = {50: "Lighthouse", 500_000: "Farbeyond"}.get(row, "North")
                    lines.append(
                        f'<row r="{row}"><c r="A{row}"><v>{row}</v></c>{text("B", row, station)}'
                        f'<c r="C{row}"><v>{row % 97}.5</v></c></row>'
                    )
                    if len(lines) >= 8000:  # about a megabyte
                        sheet_xml.write("".join(lines).encode())
                        lines = []
                sheet_xml.write("".join(lines).encode() + b"</sheetData>" + tail)
    base.unlink()


def write_strings_bomb(path: Path) -> None:
    """A workbook whose shared strings inflate to 64 MB from some 160 KB."""
    write_workbook(path, rows=5)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        with bomb.open("xl/sharedStrings.xml", "w") as strings:
            strings.write(b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            block = b"<si><t>aaaaaaaaaaaaaaaa</t></si>" * (1024 * 1024 // 32)
            for _ in range(64):
                strings.write(block)
            strings.write(b"</sst>")


def test_a_million_rows_a_bomb_and_a_corrupt_file_leave_the_folder_indexed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_million_rows(docs / "readings.xlsx")
    assert (docs / "readings.xlsx").stat().st_size > 8 * 1024 * 1024  # over the file-size cap below
    write_strings_bomb(docs / "bomb.xlsx")
    assert (docs / "bomb.xlsx").stat().st_size < 1024 * 1024
    (docs / "corrupt.xlsx").write_bytes(b"PK\x03\x04" + bytes(2000))
    write_workbook(docs / "stores.xlsx", rows=20)
    (docs / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    # a reader with half the default memory: rows are streamed, never held together; and a
    # workbook, streamed, is read past the file-size cap
    settings = Settings(db=str(tmp_path / "index.db"), reader_memory=256, max_file_size=8 * 1024 * 1024)
    service = IndexService(settings)
    try:
        (collection,) = service.add_folders([("docs", docs)])
        started = time.monotonic()
        report = service.indexer.scan(collection)
        seconds = time.monotonic() - started
        peak = service.indexer.extractor.peak_rss >> 20
        print(f"\nmillion-row folder: scanned in {seconds:.1f} s, reader peak RSS {peak} MB")
        assert (report.indexed, report.skipped) == (3, 2)
        (status,) = service.store.status()["collections"]
        reasons = {entry["path"]: entry["reason"] for entry in status["skipped"]}
        assert "inflates" in reasons["bomb.xlsx"] and "decompression bomb" in reasons["bomb.xlsx"]
        assert reasons["corrupt.xlsx"].startswith("unreadable XLSX: BadZipFile")
        (hit,) = service.store.search_keyword("lighthouse")[:1]
        assert hit.path == "readings.xlsx" and hit.heading
        assert rows_named(hit.heading, "Readings")[0] <= 50 <= rows_named(hit.heading, "Readings")[1]
        assert hit.text.startswith("Reading | Station | Level\n")
        assert service.store.search_keyword("farbeyond") == []  # row 500,000: past the limit
        text = service.document_text("docs", "readings.xlsx") or ""
        assert text.endswith(f"Readings: rows after {MAX_ROWS} not read (the file's 100,000-row limit).")
        assert [h.path for h in service.store.search_keyword("heron")] == ["note.md"]
        assert [h.path for h in service.store.search_keyword("chandlery")] == ["stores.xlsx"]
        (capped,) = [r.getMessage() for r in caplog.records if "index.capped" in r.getMessage()]
        assert "readings.xlsx" in capped and "rows after 100000 not read" in capped
        assert seconds < 60
        assert 0 < peak < 200
    finally:
        service.close()


def test_csv_and_tsv_files_are_read_like_a_sheet_whatever_their_delimiter_and_encoding(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tables"
    root.mkdir()
    with (root / "catch.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["Boat", "Species", "Weight (kg)", "Remarks"])
        for number in range(2, 501):
            remark = 'hull, painted "sea green"' if number == 400 else ""
            writer.writerow([f"Boat {number}", "cod" if number % 2 else "haddock", number * 3, remark])
    (root / "港口.csv").write_bytes("名称;城市\n青岛港务局;青岛\n宁波舟山港;宁波\n".encode("gbk"))
    (root / "tides.tsv").write_text("Date\tHigh water\n2026-12-01\t06:42\n", encoding="utf-8")
    document = load_csv(root / "catch.csv")
    (section,) = [s for s in document.sections if "sea green" in document.text[s.start : s.end]]
    block = document.text[section.start : section.end]
    assert block.startswith("Boat | Species | Weight (kg) | Remarks\n")  # the header, repeated
    assert 'Boat 400 | haddock | 1200 | hull, painted "sea green"' in block
    assert re.fullmatch(r"rows \d+–\d+", section.heading or ""), section.heading
    chinese = load_csv(root / "港口.csv")
    assert (
        chinese.text.startswith("名称 | 城市\n青岛港务局 | 青岛")
        and chinese.sections[0].heading == "rows 2–3"
    )
    service = indexed(tmp_path, root, "tables")
    try:
        (hit,) = service.store.search_keyword("sea green hull")[:1]
        assert (hit.path, hit.heading) == ("catch.csv", section.heading)
        assert service.store.search_keyword("宁波舟山港")[0].path == "港口.csv"
        (hit,) = service.store.search_keyword("high water")[:1]
        assert (hit.path, hit.heading) == ("tides.tsv", "row 2")
    finally:
        service.close()
