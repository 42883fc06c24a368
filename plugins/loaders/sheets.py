"""Spreadsheets: Excel workbooks (.xlsx, .xlsm) read with openpyxl, OpenDocument spreadsheets (.ods)
with odfpy, CSV and TSV files with the standard library. Sheets come in workbook order, hidden ones
too. Each sheet is cut into blocks of rows that fit in one chunk, and every block is a section
that begins with the sheet's header row, so a passage from row 900 still says which column is
which; its heading names the sheet and the rows (``Budget (rows 2–41)``; a CSV's just the rows),
and so does a citation of it. Formulas give the value the spreadsheet program last computed (a
file saved by a program that never computed them has none, and the cell reads empty).

A workbook past the limits below is read up to them, and a last section (and the document's note,
which the index logs) says which rows were not read: a million-row export gives its first rows to
the index instead of being skipped whole. An Excel workbook of any size is read so, past the
index's file-size cap; an OpenDocument one is parsed whole and must be small (ODS_MAX_INFLATED)."""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from plugins.loaders.common import DocumentText
from plugins.loaders.containers import check_zip
from plugins.loaders.opendocument import attribute, is_element, open_odf
from plugins.loaders.text import read_text
from proxy.hookspecs import hookimpl
from proxy.text import chunk_tokens
from proxy.types import Document, SkipFile

# Rows go into a block while the block, header included, stays under this many tokens
# (``chunk_tokens``): well under the index's 256-token chunks, so a block is one chunk.
BLOCK_TOKENS = 200
# Limits per file; reading stops at the first one reached, and the document says where.
MAX_ROWS = 100_000  # rows with values
# Cells looked at, empty ones included (an empty or missing row counts as one): bounds the time and
# memory whatever the sheet's shape. openpyxl reads about 100,000 cells a second on a slow core,
# and keeps each formatted row's format, some 500 bytes even for an empty row: at this limit a
# workbook takes some five seconds, and a sheet of formatted empty rows about 260 MB, inside the
# reader's default 512 MB. Real data reaches the chunk limit first, unless its rows are short.
MAX_CELLS = 500_000
# Chunks the text makes (about one a block, more for a row longer than a block): half the index's
# default 10,000-chunk limit per file, and so at most about 1.3 million tokens, some 5 million
# characters, half the reader's 10-million-character limit. Past either, the file would be skipped.
MAX_CHUNKS = 5_000
CHUNK_STEP = 224  # tokens a long row adds per chunk: the index's 256-token chunks less their overlap
# odfpy parses the whole of an OpenDocument file into objects before anything can be read (it
# cannot stream): measured at about 24 bytes of memory per byte of XML and 0.6 s per megabyte, so
# 16 MB inflated (some 45,000 rows of a few columns) takes about 400 MB and ten seconds, inside the
# reader's default 512 MB. The whole file is checked against this lower limit, and a larger one
# is skipped with the reason.
ODS_MAX_INFLATED = 16 * 1024 * 1024
MAX_COLUMNS = 16_384  # a spreadsheet's widest row (Excel's and LibreOffice's XFD)
EMPTY_RUN = 10  # more empty cells than this between two values are shown as one "…"


TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
ROW_GROUPS = {"table-header-rows", "table-rows", "table-row-group"}

Row = tuple[int, Sequence[Any]]  # the row's number (1-based, as the spreadsheet shows it), its values


def load_xlsx(path: Path) -> Document:
    # The sheets are streamed row by row and leave the size limits; the rest (shared strings,
    # styles) is parsed whole and counts.
    check_zip(path, "XLSX", exempt=("xl/worksheets/",))
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    book = _Book()
    try:
        with path.open("rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns of what it drops (validation, styles)
            # read_only streams each sheet; data_only gives formulas' cached values
            workbook = openpyxl.load_workbook(file, read_only=True, data_only=True, keep_links=False)
            try:
                sheets = workbook.worksheets
                for number, sheet in enumerate(sheets):
                    # the sheet's recorded size may be wrong or hostile (XFD1048576): rows are
                    # taken as they are stored, not padded out to it
                    sheet.reset_dimensions()
                    rows = enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1)
                    if not book.read_sheet(sheet.title, rows):
                        book.not_read([s.title for s in sheets[number + 1 :]])
                        break
            finally:
                workbook.close()
    except (InvalidFileException, zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError,
            SyntaxError, EOFError) as exc:  # fmt: skip
        raise SkipFile(f"unreadable XLSX: {type(exc).__name__}: {exc}"[:300]) from None
    return book.document()


def load_csv(path: Path) -> Document:
    """A CSV or TSV file, read like a sheet: blocks of rows that begin with the header row, named
    by their rows (``rows 2–41``). Any encoding ``read_text`` reads; the delimiter is a tab for
    .tsv, else whichever of , ; | or tab the first lines use most consistently."""
    text = read_text(path)
    if path.suffix.lower() == ".tsv":
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;|\t")
        except csv.Error:  # one column, or nothing consistent: commas
            dialect = csv.excel
    book = _Book()
    try:
        rows = enumerate(csv.reader(io.StringIO(text, newline=""), dialect), start=1)
        book.read_sheet("", rows)
    except csv.Error as exc:
        raise SkipFile(f"unreadable CSV: {exc}"[:300]) from None
    return book.document()


def load_ods(path: Path) -> Document:
    # odfpy reads every member and parses the XML whole: all of it counts, against a lower limit
    document = open_odf(path, "ODS", max_inflated=ODS_MAX_INFLATED)
    # odfpy's own document.spreadsheet is the body's first child, in XML indented between the
    # elements a blank text node: the element is looked for instead
    found = (node for node in document.body.childNodes if is_element(node, OFFICE_NS, "spreadsheet"))
    spreadsheet = next(found, None)
    if spreadsheet is None:
        raise SkipFile("unreadable ODS: not a spreadsheet")
    tables = [node for node in spreadsheet.childNodes if is_element(node, TABLE_NS, "table")]
    book = _Book()
    for number, table in enumerate(tables):
        if not book.read_sheet(attribute(table, TABLE_NS, "name") or f"Sheet{number + 1}", _ods_rows(table)):
            book.not_read([attribute(t, TABLE_NS, "name") or "?" for t in tables[number + 1 :]])
            break
    return book.document()


class _Book:
    """The document being written: a section per block of rows, and the file's limits."""

    def __init__(self) -> None:
        self.written = DocumentText()
        self.blocks = 0  # sections of rows written
        self.rows = self.cells = self.chunks = 0
        self.stopped: tuple[str, str] | None = None  # the sheet where a limit stopped reading, and why

    def add(self, text: str, heading: str) -> None:
        self.written.add(text, heading)
        self.blocks += 1

    def read_sheet(self, title: str, rows: Iterable[Row]) -> bool:
        """Adds the sheet's blocks; False if a limit stopped it before its end. The header row is
        the sheet's first row with a value: most sheets begin with it (one that begins with a
        title line gets the title repeated instead)."""
        header: str | None = None
        header_number = first = previous = number = tokens = header_tokens = 0
        block: list[str] = []
        limit = ""
        blocks = self.blocks
        for number, values in rows:
            self.cells += max(1, len(values))
            if self.cells > MAX_CELLS:
                limit = f"{MAX_CELLS:,}-cell"
                break
            cells = [_text(value) for value in values]
            while cells and not cells[-1]:
                cells.pop()
            if not cells:
                continue
            if self.rows >= MAX_ROWS:
                limit = f"{MAX_ROWS:,}-row"
                break
            if self.chunks >= MAX_CHUNKS:
                limit = f"{MAX_CHUNKS:,}-chunk"
                break
            line = _line(cells)
            if header is None:
                header, header_number, header_tokens = line, number, chunk_tokens(line) + 1
                self.rows += 1
                continue
            cost = chunk_tokens(line) + 1
            if block and header_tokens + tokens + cost > BLOCK_TOKENS:
                self._block(title, header, block, first, previous, header_tokens + tokens)
                block, tokens = [], 0
                if self.chunks >= MAX_CHUNKS:
                    limit = f"{MAX_CHUNKS:,}-chunk"
                    break
            if not block:
                first = number
            block.append(line)
            self.rows += 1
            tokens += cost
            previous = number
        if block:
            self._block(title, header or "", block, first, previous, header_tokens + tokens)
        elif header is not None and self.blocks == blocks:  # a sheet of a header row alone
            self._block(title, header, [], header_number, header_number, header_tokens)
        if limit:
            self.stopped = (
                title,
                f"{title + ': ' if title else ''}rows after {number - 1} not read (the file's {limit} limit)",
            )
            return False
        return True

    def _block(self, title: str, header: str, lines: list[str], first: int, last: int, tokens: int) -> None:
        rows = f"row {first}" if first == last else f"rows {first}–{last}"
        self.add("\n".join([header, *lines]), f"{title} ({rows})" if title else rows)
        self.chunks += 1 + max(0, -(-(tokens - 256) // CHUNK_STEP))

    def not_read(self, sheets: list[str]) -> None:
        if sheets and self.stopped:
            title, reason = self.stopped
            self.stopped = title, f"{reason}; sheets not read: {', '.join(sheets)}"

    def document(self) -> Document:
        if not self.blocks:
            raise SkipFile("no cells with values")
        note = None
        if self.stopped:
            title, note = self.stopped
            # for a reader of the index; the note is logged
            self.written.add(note + ".", f"{title} (not read)" if title else "not read")
        return self.written.document(note)


def _line(cells: list[str]) -> str:
    """The row as ``a | b | c``. A long run of empty cells (a value far out to the right, in
    column XFD) is one "…", not thousands of separators."""
    if cells.count("") <= EMPTY_RUN:
        return " | ".join(cells)
    shown: list[str] = []
    empty = 0
    for cell in cells:
        if not cell:
            empty += 1
            continue
        shown.extend(["…"] if empty > EMPTY_RUN else [""] * empty)
        shown.append(cell)
        empty = 0
    return " | ".join(shown)


def _text(value: Any) -> str:
    """A cell's value as a reader expects it: 12 not 12.0, dates in ISO form, text on one line."""
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.15g}"  # the 15 significant digits spreadsheets show
    if isinstance(value, datetime):
        if value.time() == time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return " ".join(str(value).split())


# -- OpenDocument ---------------------------------------------------------------------------------
def _repeat(node: Any, name: str) -> int:
    try:
        return max(1, int(attribute(node, TABLE_NS, name) or 1))
    except ValueError:
        return 1


def _ods_rows(table: Any) -> Iterator[Row]:
    """The table's rows with their numbers. A row repeated (``number-rows-repeated``, as
    LibreOffice writes the empty rows down to the millionth) is yielded again only if it has
    values; cells repeated across are spread out up to the widest row a spreadsheet has."""
    number = 1
    for row in _row_elements(table):
        repeat = _repeat(row, "number-rows-repeated")
        values = _ods_values(row)
        if not values:
            number += repeat
            yield number - 1, ()  # one look, however many rows it stands for
            continue
        for _ in range(repeat):
            yield number, values
            number += 1


def _row_elements(parent: Any) -> Iterator[Any]:
    for node in parent.childNodes:
        if getattr(node, "qname", None) is None or node.qname[0] != TABLE_NS:
            continue
        if node.qname[1] == "table-row":
            yield node
        elif node.qname[1] in ROW_GROUPS:
            yield from _row_elements(node)


def _ods_values(row: Any) -> list[Any]:
    values: list[Any] = []
    for cell in row.childNodes:
        if not (is_element(cell, TABLE_NS, "table-cell") or is_element(cell, TABLE_NS, "covered-table-cell")):
            continue
        repeat = min(_repeat(cell, "number-columns-repeated"), MAX_COLUMNS - len(values))
        value = _ods_value(cell)
        if value is None and repeat > 1:
            values.extend([None] * repeat)  # trailing ones are dropped below
        else:
            values.extend([value] * repeat)
        if len(values) >= MAX_COLUMNS:
            break
    while values and values[-1] is None:
        values.pop()
    return values


def _ods_value(cell: Any) -> Any:
    """The cell's value: a number, a date, a truth value, or its text as shown."""
    kind = attribute(cell, OFFICE_NS, "value-type")
    try:
        if kind in ("float", "percentage", "currency"):
            return float(attribute(cell, OFFICE_NS, "value") or "")
        if kind == "date":
            return datetime.fromisoformat(attribute(cell, OFFICE_NS, "date-value") or "")
        if kind == "boolean":
            return (attribute(cell, OFFICE_NS, "boolean-value") or "").lower() == "true"
    except ValueError:
        pass  # an odd value: the text shown instead
    text = "\n".join(_node_text(p) for p in cell.childNodes if is_element(p, TEXT_NS, "p"))
    return text if text.strip() else None


def _node_text(node: Any) -> str:
    parts: list[str] = []
    for child in node.childNodes:
        if child.nodeType == child.TEXT_NODE:
            parts.append(str(child.data))
        elif is_element(child, TEXT_NS, "s"):
            parts.append(" ")
        elif is_element(child, TEXT_NS, "tab") or is_element(child, TEXT_NS, "line-break"):
            parts.append(" ")
        elif getattr(child, "qname", None) != (OFFICE_NS, "annotation"):
            parts.append(_node_text(child))
    return "".join(parts)


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    # a workbook's sheets are streamed and read up to the limits above: one of any size is read
    register((".xlsx", ".xlsm"), load_xlsx, large=True)
    register(".ods", load_ods)
    # a CSV is read whole (the file-size cap holds), and cheaply: in the server's process
    register((".csv", ".tsv"), load_csv, isolated=False)
