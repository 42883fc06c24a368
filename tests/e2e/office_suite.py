"""Documents made by real office programs, indexed and searched (run by office_suite.sh).

The tests build their documents with the same Python libraries the loaders read them with; this
check builds them with LibreOffice (``soffice --headless --convert-to``) and pandoc instead, from
a few source texts in English and Chinese: Writer documents (.docx, .odt, .rtf, .epub, .pdf,
.html), slides (.pptx, .odp) and spreadsheets (.xlsx, .ods). Each document holds one made-up word
of its own, in a known place: a heading, a page, a chapter, a slide, a sheet's row.

The folder is indexed with ``ragproxy index``, then each word searched with ``ragproxy search
--json``. A document passes when:
(i)   its file is the first hit;
(ii)  the hit's heading or page names the word's place: the heading path ("Budget Review >
      Fuel"), the PDF page, the e-book chapter (its table of contents title: the chapter's or the
      section's), the slide ("slide 3: Mooring Repairs"), the sheet and a row range holding the
      word's row ("Cargo (rows 281–312)"); an RTF file is one section, so any;
(iii) the hit's text holds the sentence around the word as written (spaces aside), so text
      decoded wrongly (a code page, doubled Unicode escapes) shows.
A table of the results is printed; the exit status is 1 if any document fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUTPUT = HERE / "output" / "office-suite"

NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:number="urn:oasis:names:tc:opendocument:xmlns:datastyle:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2"'
)

# -- the source texts -----------------------------------------------------------------------------
Chapters = list[tuple[str, list[tuple[str, list[str]]]]]  # (chapter, [(section, [paragraphs])])


@dataclass(frozen=True)
class Language:
    code: str
    title: str
    chapters: Chapters
    long_section: tuple[int, int]  # the section given pages of log entries (soft page breaks)
    log_entry: Callable[[int], str]
    sentence: str  # the sentence holding the word: {word}
    table: list[list[str]]  # a table's header and rows, for a word in its last row
    before_word: str  # the sentence's text up to the word, where a span starts in the sources
    slides_title: str
    slides: list[tuple[str, list[str]]]
    notes: str  # speaker notes: {word}
    sheets: list[tuple[str, list[str]]]  # (sheet name, header)
    row: Callable[[int, int], list[str | float]]  # (sheet, row number) -> cells


EN = Language(
    code="en",
    title="North Quay Report",
    chapters=[
        (
            "Harbour Survey",
            [
                ("Tides", ["The spring tides at the north quay rise faster than the old charts say."]),
                ("Moorings", ["Three of the twelve mooring buoys need new chains before winter."]),
            ],
        ),
        (
            "Budget Review",
            [
                ("Dredging Costs", ["Dredging the inner basin costs twice what it did five years ago."]),
                ("Fuel", ["The pilot boats burnt less fuel after their engines were rebuilt."]),
            ],
        ),
        (
            "Staffing",
            [
                ("Night Shift", ["Two harbour masters share the night shift from October."]),
                ("Training", ["New crew learn knots, radio calls and first aid in their first month."]),
            ],
        ),
    ],
    long_section=(2, 1),
    log_entry=lambda n: (
        f"Log entry {n}: the crew checked the bollards, the fenders and the ladders along berth "
        f"{n % 9 + 1} and found them in order."
    ),
    sentence="The inspector marked this part with the code word {word} for the yearly audit.",
    table=[["Buoy", "Chain", "Remarks"], ["Buoy 3", "14 m", "new shackle"], ["Buoy 7", "16 m", ""]],
    before_word="The inspector marked this part with the code word ",
    slides_title="Quarterly Harbour Update",
    slides=[
        ("Quarterly Harbour Update", ["Prepared for the port committee"]),
        ("Tide Tables", ["New gauges at both entrances", "Readings every ten minutes"]),
        ("Mooring Repairs", ["Chains replaced on buoys 3, 7 and 9", "Divers booked for March"]),
        ("Dredging Budget", ["Inner basin first", "Contract signed in January"]),
        ("Next Steps", ["Survey the outer wall", "Report back in June"]),
    ],
    notes="Remind the committee that the code word {word} marks the figures on this slide.",
    sheets=[
        ("Vessels", ["Vessel", "Berth", "Arrived", "Tonnage", "Notes"]),
        ("Cargo", ["Manifest", "Goods", "Weight", "Inspector", "Remarks"]),
    ],
    row=lambda sheet, n: (
        [
            f"MV Seagull {n}",
            f"B{n % 12 + 1}",
            f"2024-{n % 12 + 1:02d}-{n % 27 + 1:02d}",
            1000 + 7 * n,
            f"routine check {n}",
        ]
        if sheet == 0
        else [
            f"M-{4000 + n}",
            ["timber", "grain", "steel", "salt"][n % 4],
            12.5 * n,
            f"inspector {n % 5}",
            f"sealed at berth {n % 9}",
        ]
    ),
)

ZH = Language(
    code="zh",
    title="北码头报告",
    chapters=[
        (
            "港口调查",
            [
                ("潮汐", ["北码头的大潮比旧海图上说的涨得更快。"]),
                ("系泊", ["十二个系泊浮筒中有三个在冬天之前需要更换锚链。"]),
            ],
        ),
        (
            "预算审查",
            [
                ("疏浚费用", ["疏浚内港池的费用是五年前的两倍。"]),
                ("燃料", ["引航船的发动机大修以后，燃料消耗减少了。"]),
            ],
        ),
        (
            "人员配置",
            [
                ("夜班", ["从十月起，两位港务长轮流值夜班。"]),
                ("培训", ["新船员在第一个月学习绳结、无线电呼叫和急救。"]),
            ],
        ),
    ],
    long_section=(2, 1),
    log_entry=lambda n: f"第{n}条记录：船员检查了{n % 9 + 1}号泊位的系缆桩、护舷和梯子，一切正常。",
    sentence="审计员给这一部分标注的代号是 {word} ，请在年度审计时核对。",
    table=[["浮筒", "锚链", "备注"], ["3号浮筒", "14米", "新卸扣"], ["7号浮筒", "16米", ""]],
    before_word="审计员给这一部分标注的代号是 ",
    slides_title="港口季度简报",
    slides=[
        ("港口季度简报", ["为港务委员会准备"]),
        ("潮汐表", ["两个入口都装了新的水位计", "每十分钟读数一次"]),
        ("系泊维修", ["三号、七号和九号浮筒的锚链已更换", "潜水员已预约在三月"]),
        ("疏浚预算", ["先疏浚内港池", "一月签订合同"]),
        ("下一步", ["勘测外防波堤", "六月汇报"]),
    ],
    notes="提醒委员会：代号 {word} 标记了这张幻灯片上的数字。",
    sheets=[
        ("船舶", ["船名", "泊位", "到港日期", "吨位", "备注"]),
        ("货物", ["舱单", "货物", "重量", "检查员", "说明"]),
    ],
    row=lambda sheet, n: (
        [
            f"海鸥{n}号",
            f"{n % 12 + 1}号泊位",
            f"2024-{n % 12 + 1:02d}-{n % 27 + 1:02d}",
            1000 + 7 * n,
            f"例行检查{n}",
        ]
        if sheet == 0
        else [
            f"舱单{4000 + n}",
            ["木材", "粮食", "钢材", "盐"][n % 4],
            12.5 * n,
            f"检查员{n % 5}",
            f"在{n % 9}号泊位封存",
        ]
    ),
)
LANGUAGES = (EN, ZH)
SHEET_ROWS = 360  # rows below the header in each sheet
LOG_ENTRIES = 90  # the long section's paragraphs: some three pages


# -- the words ------------------------------------------------------------------------------------
_ONSETS = ["br", "dr", "fl", "gl", "kr", "pl", "qu", "sk", "tr", "vr", "zh", "sn"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["lix", "nor", "vek", "mop", "zat", "ruk"]


def made_up_word(index: int) -> str:
    """A word no dictionary holds, different for each index (up to 360)."""
    onset = _ONSETS[index % len(_ONSETS)]
    vowel = _VOWELS[index // len(_ONSETS) % len(_VOWELS)]
    coda = _CODAS[index // (len(_ONSETS) * len(_VOWELS)) % len(_CODAS)]
    return f"{onset}{vowel}{coda}{vowel}x"


# -- what is expected -----------------------------------------------------------------------------
@dataclass
class Case:
    file: str  # the document's name in the folder
    made_by: str
    word: str
    sentence: str  # the text around the word, as written
    expected: str  # shown in the table
    check: Callable[[dict[str, object]], bool]  # the first hit's heading or page
    last: bool = False  # the sentence ends the hit's text (speaker notes, after the slide's text)

    result: dict[str, object] = field(default_factory=dict)


def heading_is(*accepted: str) -> Callable[[dict[str, object]], bool]:
    return lambda hit: hit.get("heading") in accepted


def page_is(page: int) -> Callable[[dict[str, object]], bool]:
    return lambda hit: hit.get("page") == page


def rows_hold(sheet: str, row: int) -> Callable[[dict[str, object]], bool]:
    def check(hit: dict[str, object]) -> bool:
        match = re.fullmatch(rf"{re.escape(sheet)} \(rows? (\d+)(?:–(\d+))?\)", str(hit.get("heading")))
        return bool(match) and int(match.group(1)) <= row <= int(match.group(2) or match.group(1))

    return check


# -- the sources ----------------------------------------------------------------------------------
def fodt(lang: Language, place: tuple[int, int], word: str, in_table: bool = False) -> str:
    """A Writer document (flat ODF): a title, chapters (Heading 1, each on a new page) of sections
    (Heading 2); the word in a bold span after a run of spaces (text:s) in section ``place``, in
    a paragraph or in the last cell of a table."""
    body = [f'<text:p text:style-name="Title">{escape(lang.title)}</text:p>']
    for c, (chapter, sections) in enumerate(lang.chapters):
        body.append(
            f'<text:h text:style-name="Heading_20_1" text:outline-level="1">{escape(chapter)}</text:h>'
        )
        for s, (section, paragraphs) in enumerate(sections):
            body.append(
                f'<text:h text:style-name="Heading_20_2" text:outline-level="2">{escape(section)}</text:h>'
            )
            body += [f'<text:p text:style-name="Text_20_body">{escape(p)}</text:p>' for p in paragraphs]
            if (c, s) == lang.long_section:
                body += [
                    f'<text:p text:style-name="Text_20_body">{escape(lang.log_entry(n))}</text:p>'
                    for n in range(1, LOG_ENTRIES + 1)
                ]
            if (c, s) == place:
                before, after = lang.sentence.split("{word}")
                sentence = (
                    f'<text:p text:style-name="Text_20_body">{escape(before.rstrip())}<text:s text:c="2"/>'
                    f'<text:span text:style-name="T1">{word}</text:span>{escape(after)}</text:p>'
                )
                body.append(_table(lang.table, sentence) if in_table else sentence)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
<office:styles>
<style:style style:name="Standard" style:family="paragraph" style:class="text"/>
<style:style style:name="Text_20_body" style:display-name="Text body" style:family="paragraph"
 style:parent-style-name="Standard" style:class="text">
<style:paragraph-properties fo:margin-bottom="0.25cm"/></style:style>
<style:style style:name="Title" style:family="paragraph" style:parent-style-name="Standard"
 style:class="chapter">
<style:text-properties fo:font-size="24pt" fo:font-weight="bold"/></style:style>
<style:style style:name="Heading" style:family="paragraph" style:parent-style-name="Standard"
 style:next-style-name="Text_20_body" style:class="text">
<style:paragraph-properties fo:margin-top="0.4cm" fo:margin-bottom="0.2cm" fo:keep-with-next="always"/>
</style:style>
<style:style style:name="Heading_20_1" style:display-name="Heading 1" style:family="paragraph"
 style:parent-style-name="Heading" style:default-outline-level="1" style:class="text">
<style:paragraph-properties fo:break-before="page"/>
<style:text-properties fo:font-size="18pt" fo:font-weight="bold"/></style:style>
<style:style style:name="Heading_20_2" style:display-name="Heading 2" style:family="paragraph"
 style:parent-style-name="Heading" style:default-outline-level="2" style:class="text">
<style:text-properties fo:font-size="14pt" fo:font-weight="bold"/></style:style>
</office:styles>
<office:automatic-styles>
<style:style style:name="T1" style:family="text"><style:text-properties fo:font-weight="bold"/></style:style>
</office:automatic-styles>
<office:body><office:text>
{chr(10).join(body)}
</office:text></office:body></office:document>
"""


def _table(rows: list[list[str]], last: str) -> str:
    """A Writer table of ``rows``, ``last`` (a paragraph) in its last cell."""

    def cell(text: str) -> str:
        return (
            f'<table:table-cell office:value-type="string"><text:p>{escape(text)}</text:p></table:table-cell>'
        )

    lines = ["".join(cell(text) for text in row) for row in rows[:-1]]
    lines.append(
        "".join(cell(text) for text in rows[-1][:-1])
        + f'<table:table-cell office:value-type="string">{last}</table:table-cell>'
    )
    return (
        '<table:table table:name="Table1">'
        f'<table:table-column table:number-columns-repeated="{len(rows[0])}"/>'
        + "".join(f"<table:table-row>{line}</table:table-row>" for line in lines)
        + "</table:table>"
    )


def markdown(lang: Language, place: tuple[int, int], word: str) -> str:
    """The same text in pandoc's Markdown: the word in bold."""
    lines = ["---", f"title: {lang.title}", f"lang: {'zh-CN' if lang.code == 'zh' else 'en'}", "---", ""]
    for c, (chapter, sections) in enumerate(lang.chapters):
        lines += [f"# {chapter}", ""]
        for s, (section, paragraphs) in enumerate(sections):
            lines += [f"## {section}", ""]
            for p in paragraphs:
                lines += [p, ""]
            if (c, s) == lang.long_section:
                for n in range(1, LOG_ENTRIES + 1):
                    lines += [lang.log_entry(n), ""]
            if (c, s) == place:
                lines += [lang.sentence.replace("{word}", f"**{word}**"), ""]
    return "\n".join(lines)


def slides_markdown(lang: Language, slide: int, word: str, in_notes: bool) -> str:
    """Slides for pandoc: the title slide from the metadata, then a slide per "# " heading; the
    word on slide ``slide`` (counted from 1, the title slide) or in its speaker notes."""
    lines = ["---", f"title: {lang.title}", "---", ""]
    for number, (title, bullets) in enumerate(lang.slides[1:], start=2):
        lines += [f"# {title}", ""]
        lines += [f"- {bullet}" for bullet in bullets]
        lines.append("")
        if number == slide and not in_notes:
            lines += [f"- {lang.sentence.replace('{word}', word)}", ""]
        if number == slide and in_notes:
            lines += ["::: notes", lang.notes.replace("{word}", word), ":::", ""]
    return "\n".join(lines)


def fodp(lang: Language, slide: int, word: str, in_notes: bool) -> str:
    """Slides (flat ODF): each slide a title frame and an outline frame of bullets (a subtitle on
    the first), as Impress's placeholders (a presentation class and style); the word on slide
    ``slide`` or in its speaker notes."""

    def frame(kind: str, y: str, height: str, inner: str) -> str:
        return (
            f'<draw:frame presentation:style-name="pr1" presentation:class="{kind}" svg:x="1.5cm" '
            f'svg:y="{y}" svg:width="25cm" svg:height="{height}"><draw:text-box>{inner}</draw:text-box>'
            "</draw:frame>"
        )

    pages = []
    for number, (title, bullets) in enumerate(lang.slides, start=1):
        items = list(bullets)
        if number == slide and not in_notes:
            items.append(lang.sentence.replace("{word}", word))
        if number == 1:
            body = frame("subtitle", "4.5cm", "10cm", f"<text:p>{escape(items[0])}</text:p>")
        else:
            listing = "".join(f"<text:list-item><text:p>{escape(i)}</text:p></text:list-item>" for i in items)
            body = frame("outline", "4.5cm", "10cm", f"<text:list>{listing}</text:list>")
        notes = ""
        if number == slide and in_notes:
            text = f"<text:p>{escape(lang.notes.replace('{word}', word))}</text:p>"
            notes = f"<presentation:notes>{frame('notes', '14cm', '10cm', text)}</presentation:notes>"
        layout = "AL1T0" if number == 1 else "AL2T1"
        pages.append(
            f'<draw:page draw:name="page{number}" draw:master-page-name="Default" '
            f'presentation:presentation-page-layout-name="{layout}">'
            f"{frame('title', '0.8cm', '3cm', f'<text:p>{escape(title)}</text:p>')}{body}{notes}</draw:page>"
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.presentation">
<office:styles/>
<office:automatic-styles>
<style:page-layout style:name="PM1"><style:page-layout-properties fo:margin-top="0cm" fo:margin-bottom="0cm"
 fo:margin-left="0cm" fo:margin-right="0cm" fo:page-width="28cm" fo:page-height="15.75cm"
 style:print-orientation="landscape"/></style:page-layout>
<style:style style:name="pr1" style:family="presentation"/>
</office:automatic-styles>
<office:master-styles>
<style:master-page style:name="Default" style:page-layout-name="PM1"/>
</office:master-styles>
<office:body><office:presentation>
{chr(10).join(pages)}
</office:presentation></office:body></office:document>
"""


def fods(lang: Language, place: tuple[int, int], word: str) -> str:
    """A workbook (flat ODF) of two sheets, a header row and SHEET_ROWS rows each: text, dates,
    numbers and a computed column; the word in the last column of row ``place[1]`` of sheet
    ``place[0]``, in a span after a run of spaces."""
    tables = []
    for s, (name, header) in enumerate(lang.sheets):
        rows = ["<table:table-row>" + "".join(_cell(h) for h in header) + _cell("×2") + "</table:table-row>"]
        for n in range(2, SHEET_ROWS + 2):
            values = lang.row(s, n)
            cells = [_cell(v) for v in values[:-1]]
            if (s, n) == place:
                before, after = lang.sentence.split("{word}")
                cells.append(
                    '<table:table-cell office:value-type="string"><text:p>'
                    f'{escape(before.rstrip())}<text:s text:c="2"/><text:span text:style-name="T1">{word}'
                    f"</text:span>{escape(after)}</text:p></table:table-cell>"
                )
            else:
                cells.append(_cell(values[-1]))
            column = "D" if s == 0 else "C"  # a number to double: the tonnage or the weight
            doubled = float(values[ord(column) - ord("A")]) * 2  # type: ignore[arg-type]
            cells.append(
                f'<table:table-cell table:formula="of:=[.{column}{n}]*2" office:value-type="float" '
                f'office:value="{doubled:g}"><text:p>{doubled:g}</text:p></table:table-cell>'
            )
            rows.append("<table:table-row>" + "".join(cells) + "</table:table-row>")
        tables.append(f'<table:table table:name="{escape(name)}">{"".join(rows)}</table:table>')
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document {NS} office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
<office:automatic-styles>
<number:date-style style:name="N37">
<number:year number:style="long"/><number:text>-</number:text><number:month number:style="long"/>
<number:text>-</number:text><number:day number:style="long"/>
</number:date-style>
<style:style style:name="ce1" style:family="table-cell" style:data-style-name="N37"/>
<style:style style:name="T1" style:family="text"><style:text-properties fo:font-weight="bold"/></style:style>
</office:automatic-styles>
<office:body><office:spreadsheet>
{chr(10).join(tables)}
</office:spreadsheet></office:body></office:document>
"""


def _cell(value: str | float) -> str:
    if isinstance(value, int | float):
        return (
            f'<table:table-cell office:value-type="float" office:value="{value:g}">'
            f"<text:p>{value:g}</text:p></table:table-cell>"
        )
    if re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return (
            f'<table:table-cell table:style-name="ce1" office:value-type="date" office:date-value="{value}">'
            f"<text:p>{value}</text:p></table:table-cell>"
        )
    return f'<table:table-cell office:value-type="string"><text:p>{escape(value)}</text:p></table:table-cell>'


def csv_rows(lang: Language, row: int, word: str) -> list[list[str]]:
    """The first sheet as CSV: the header, then SHEET_ROWS rows; the word in row ``row``."""
    rows = [lang.sheets[0][1]]
    for n in range(2, SHEET_ROWS + 2):
        values = [f"{v:g}" if isinstance(v, int | float) else v for v in lang.row(0, n)]
        if n == row:
            values[-1] = lang.sentence.replace("{word}", word)
        rows.append(values)
    return rows


# -- building -------------------------------------------------------------------------------------
class Builder:
    def __init__(self, work: Path, soffice: str, pandoc: str, dry: bool = False) -> None:
        """``dry``: the cases only, the documents built by an earlier run."""
        self.src = work / "src"
        self.docs = work / "docs"
        self.profile = work / "profile"
        self.soffice, self.pandoc, self.dry = soffice, pandoc, dry
        if not dry:
            for folder in (self.src, self.docs):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
        self.cases: list[Case] = []
        self.later: list[tuple[Path, str, str]] = []  # converted again once the first round is done
        self.conversions: dict[tuple[str, str], list[Path]] = {}  # (--convert-to, --infilter) -> sources
        self.moves: list[tuple[Path, Path]] = []  # (soffice's output, its place in the folder)

    def word(self) -> str:
        return made_up_word(len(self.cases) * 7 + 3)

    def source(self, name: str, text: str) -> Path:
        path = self.src / name
        if not self.dry:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return path

    def by_soffice(self, source: Path, convert_to: str, target: str | Path, infilter: str = "") -> None:
        """``source`` converted by LibreOffice, to ``target`` (a name in the folder, or a path), in
        one run with the other sources of the same conversion."""
        self.conversions.setdefault((convert_to, infilter), []).append(source)
        extension = convert_to.split(":")[0]
        self.moves.append((source.parent / "out" / f"{source.stem}.{extension}", self.docs / target))

    def by_pandoc(self, source: Path, target: str | Path, *options: str) -> None:
        if not self.dry:
            run([self.pandoc, str(source), "-o", str(self.docs / target), *options])

    def add(
        self,
        target: str,
        made_by: str,
        word: str,
        sentence: str,
        expected: str,
        check: Callable[[dict[str, object]], bool],
        last: bool = False,
    ) -> None:
        self.cases.append(Case(target, made_by, word, sentence, expected, check, last=last))

    def text_documents(self, lang: Language) -> None:
        chapters = lang.chapters

        def section(place: tuple[int, int]) -> tuple[str, str]:
            chapter, sections = chapters[place[0]]
            return chapter, sections[place[1]][0]

        # (extension, soffice's --convert-to, the word's place); "-table": in a table there
        writer = [
            ("docx", "docx:MS Word 2007 XML", (1, 0)),
            ("odt", "odt", lang.long_section),  # after pages of text: soft page breaks
            ("rtf", "rtf", (0, 1)),
            ("epub", "epub", (1, 1)),
            ("pdf", "pdf:writer_pdf_Export", (1, 0) if lang.code == "en" else (2, 0)),
            ("html", "html:XHTML Writer File:UTF8", (0, 0)),
            ("table.docx", "docx:MS Word 2007 XML", (0, 1)),
            ("table.odt", "odt", (1, 0)),
        ]
        for extension, convert_to, place in writer:
            word = self.word()
            in_table = extension.startswith("table.")
            extension = extension.removeprefix("table.")
            stem = f"{lang.code}-writer{'-table' if in_table else ''}"
            target = f"{stem}.{extension}"
            source = self.source(f"{extension}/{stem}.fodt", fodt(lang, place, word, in_table))
            self.by_soffice(source, convert_to, target)
            chapter, name = section(place)
            if extension == "pdf":  # the title on page 1, each chapter on a new page
                page = place[0] + 2
                self.add(target, "LibreOffice", word, lang.sentence, f"page {page}", page_is(page))
            elif extension == "epub":
                self.add(
                    target,
                    "LibreOffice",
                    word,
                    lang.sentence,
                    f"{chapter} | {name}",
                    heading_is(chapter, name),
                )
            else:
                path = f"{chapter} > {name}"
                self.add(target, "LibreOffice", word, lang.sentence, path, heading_is(path))

        pandoc = [("docx", (2, 0)), ("odt", (1, 1)), ("epub", (2, 0)), ("html", (1, 0))]
        for extension, place in pandoc:
            word = self.word()
            target = f"{lang.code}-pandoc.{extension}"
            source = self.source(f"pandoc/{lang.code}-{extension}.md", markdown(lang, place, word))
            self.by_pandoc(source, target, *(["--standalone"] if extension == "html" else []))
            chapter, name = section(place)
            if extension == "epub":  # pandoc makes a chapter of each "# " heading
                self.add(target, "pandoc", word, lang.sentence, chapter, heading_is(chapter))
            else:
                path = f"{chapter} > {name}"
                self.add(target, "pandoc", word, lang.sentence, path, heading_is(path))

    def slides(self, lang: Language) -> None:
        def expect(slide: int) -> str:
            return f"slide {slide}: {lang.slides[slide - 1][0]}"

        # (target, soffice's --convert-to, slide, in the notes?)
        for extension, convert_to, slide, in_notes in [
            ("pptx", "pptx:Impress MS PowerPoint 2007 XML", 3, False),
            ("odp", "odp", 4, lang.code == "zh"),
            ("odp", "odp", 2, lang.code == "en"),  # made from a .pptx LibreOffice wrote
        ]:
            word = self.word()
            stem = f"{lang.code}-impress-{extension}{'-notes' if in_notes else ''}-{slide}"
            source = self.source(f"slides/{stem}.fodp", fodp(lang, slide, word, in_notes))
            target = f"{lang.code}-impress{'-notes' if in_notes else ''}-{slide}.{extension}"
            if slide == 2:  # fodp -> pptx -> odp: LibreOffice reading its own PowerPoint
                pptx = self.src / "slides-pptx" / f"{stem}.pptx"
                self.by_soffice(source, "pptx:Impress MS PowerPoint 2007 XML", pptx)
                self.later.append((pptx, convert_to, target))
            else:
                self.by_soffice(source, convert_to, target)
            sentence = lang.notes if in_notes else lang.sentence
            self.add(
                target, "LibreOffice", word, sentence, expect(slide), heading_is(expect(slide)), in_notes
            )

        # pandoc's slides, and LibreOffice's .odp of them
        for extension, slide, in_notes in [("pptx", 5, lang.code == "en"), ("odp", 3, lang.code == "zh")]:
            word = self.word()
            source = self.source(
                f"pandoc/{lang.code}-slides-{slide}.md", slides_markdown(lang, slide, word, in_notes)
            )
            sentence = lang.notes if in_notes else lang.sentence
            if extension == "pptx":
                target = f"{lang.code}-pandoc-slides.pptx"
                self.by_pandoc(source, target)
                made_by = "pandoc"
            else:
                target = f"{lang.code}-pandoc-slides-lo.odp"
                pptx = self.src / "pandoc-pptx" / f"{lang.code}-pandoc-slides-lo.pptx"
                pptx.parent.mkdir(parents=True, exist_ok=True)
                self.by_pandoc(source, pptx)
                self.by_soffice(pptx, "odp", target)
                made_by = "pandoc, LibreOffice"
            title = lang.title if slide == 1 else lang.slides[slide - 1][0]
            self.add(
                target,
                made_by,
                word,
                sentence,
                f"slide {slide}: {title}",
                heading_is(f"slide {slide}: {title}"),
                in_notes,
            )

    def sheets(self, lang: Language) -> None:
        for extension, convert_to, place in [
            ("xlsx", "xlsx:Calc MS Excel 2007 XML", (1, 300)),
            ("ods", "ods", (0, 120)),
        ]:
            word = self.word()
            source = self.source(f"{extension}/{lang.code}-calc.fods", fods(lang, place, word))
            target = f"{lang.code}-calc.{extension}"
            self.by_soffice(source, convert_to, target)
            sheet = lang.sheets[place[0]][0]
            expected = f"{sheet} (rows …{place[1]}…)"
            self.add(target, "LibreOffice", word, lang.sentence, expected, rows_hold(sheet, place[1]))
        # CSV opened by Calc: one sheet, named after the file
        extension = "xlsx" if lang.code == "en" else "ods"
        convert_to = "xlsx:Calc MS Excel 2007 XML" if extension == "xlsx" else "ods"
        row = 250 if lang.code == "en" else 40
        word = self.word()
        stem = f"{lang.code}-csv"
        path = self.src / "csv" / f"{stem}.csv"
        if not self.dry:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8", newline="") as file:
                csv.writer(file).writerows(csv_rows(lang, row, word))
        # comma-separated, double quotes, UTF-8 (76), from line 1
        self.by_soffice(path, convert_to, f"{stem}.{extension}", infilter="CSV:44,34,76,1")
        self.add(
            f"{stem}.{extension}",
            "LibreOffice",
            word,
            lang.sentence,
            f"{stem} (rows …{row}…)",
            rows_hold(stem, row),
        )

    def build(self) -> list[Case]:
        for lang in LANGUAGES:
            self.text_documents(lang)
            self.slides(lang)
            self.sheets(lang)
        self.convert()
        # the second round: files LibreOffice made in the first, converted again
        self.moves = []
        for source, convert_to, target in self.later:
            self.by_soffice(source, convert_to, target)
        self.convert()
        words = [case.word for case in self.cases]
        assert len(set(words)) == len(words), "a word used twice"
        return self.cases

    def convert(self) -> None:
        if self.dry:
            return
        for (convert_to, infilter), sources in self.conversions.items():
            by_folder: dict[Path, list[Path]] = {}
            for source in sources:
                by_folder.setdefault(source.parent, []).append(source)
            for folder, files in by_folder.items():
                command = [
                    self.soffice,
                    f"-env:UserInstallation={self.profile.as_uri()}",
                    "--headless",
                    "--norestore",
                    *([f"--infilter={infilter}"] if infilter else []),
                    "--convert-to",
                    convert_to,
                    "--outdir",
                    str(folder / "out"),
                    *map(str, files),
                ]
                run(command)
        self.conversions = {}
        for made, target in self.moves:
            if not made.exists():
                sys.exit(f"LibreOffice did not write {made}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(made, target)


def run(command: Sequence[str]) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout}\n{done.stderr}")


# -- checking -------------------------------------------------------------------------------------
def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check(cases: list[Case], docs: Path, db: Path, ragproxy: str, mode: str) -> int:
    db.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "RAGPROXY_LOG_LEVEL": "warning"}
    indexed = subprocess.run(
        [ragproxy, "index", str(docs), "--db", str(db)], capture_output=True, text=True, env=env, timeout=1800
    )
    print(indexed.stdout.strip().splitlines()[-2:] if indexed.stdout.strip() else indexed.stderr[-2000:])
    if indexed.returncode != 0:
        print(indexed.stderr[-4000:])
        return 1
    status = subprocess.run([ragproxy, "status", "--db", str(db)], capture_output=True, text=True, env=env)
    print(status.stdout.strip())
    failures = 0
    for case in cases:
        found = subprocess.run(
            [ragproxy, "search", case.word, "--db", str(db), "--json", "-k", "3", "--mode", mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        hits = json.loads(found.stdout) if found.returncode == 0 and found.stdout.strip() else []
        first = hits[0] if hits else {}
        sentence = case.sentence.replace("{word}", case.word)
        case.result = {
            "file": first.get("path") == case.file,
            "place": bool(first) and case.check(first),
            "text": (str.endswith if case.last else str.__contains__)(
                squeeze(str(first.get("text", ""))), squeeze(sentence)
            ),
            "got": (first.get("path"), first.get("heading"), first.get("page")) if first else None,
        }
        failures += not (case.result["file"] and case.result["place"] and case.result["text"])
    print_table(cases)
    print(f"\n{len(cases) - failures} of {len(cases)} documents pass")
    return 1 if failures else 0


def print_table(cases: list[Case]) -> None:
    def mark(ok: object) -> str:
        return "ok" if ok else "MISS"

    rows = [
        ("document", "made by", "word", "expected", "got (file | heading | page)", "file", "place", "text")
    ]
    for case in cases:
        got = case.result.get("got")
        shown = (
            " | ".join("-" if v is None else str(v) for v in got) if isinstance(got, tuple) else "(no hit)"
        )
        rows.append(
            (
                case.file,
                case.made_by,
                case.word,
                case.expected,
                shown,
                mark(case.result.get("file")),
                mark(case.result.get("place")),
                mark(case.result.get("text")),
            )
        )
    widths = [min(48, max(_width(row[i]) for row in rows)) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  ".join(_pad(cell, width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))


def _width(text: str) -> int:
    return sum(2 if "\u2e80" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    while _width(text) > width:
        text = text[:-2] + "…"
    return text + " " * (width - _width(text))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=OUTPUT, help="where the sources, documents and index go")
    parser.add_argument("--soffice", default=shutil.which("soffice") or "soffice")
    parser.add_argument("--pandoc", default=shutil.which("pandoc") or "pandoc")
    parser.add_argument("--ragproxy", default=str(ROOT / ".venv" / "bin" / "ragproxy"))
    parser.add_argument("--mode", default="hybrid", choices=("hybrid", "keyword", "vector"))
    parser.add_argument("--no-build", action="store_true", help="check the documents built last time")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    cases = Builder(work, args.soffice, args.pandoc, dry=args.no_build).build()
    return check(cases, work / "docs", work / "index.db", args.ragproxy, args.mode)


if __name__ == "__main__":
    sys.exit(main())
