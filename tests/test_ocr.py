"""OCR: text rendered onto images with real fonts (Debian's DejaVu and WenQuanYi Micro Hei), read
back by the OCR engine; images and scanned PDFs indexed through the reader process and found by
keyword with the page and the OCR mark; a decompression bomb refused before it is decoded."""

from __future__ import annotations

import importlib.util
import time
import zlib
from pathlib import Path
from struct import pack

import pytest
from PIL import Image, ImageDraw, ImageFont

from plugins.loaders.ocr import read_image, reading_order
from proxy.doctor import check_ocr
from proxy.pipeline.passages import Passage
from proxy.plugins import isolated, loader_for
from proxy.settings import Settings
from proxy.types import OCR_HEADING, OCR_INSTALL, ReadOptions, SkipFile, reading
from tests.docs import indexed, skipped, write_pdf

LATIN = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CHINESE = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

ENGLISH = ["The lighthouse keeper logs the", "weather at dawn and at dusk."]
HAN = ["灯塔看守人在黎明和黄昏", "记录天气情况。"]


def page(lines: list[str], font: Path, size: int = 32, width: int = 900) -> Image.Image:
    image = Image.new("RGB", (width, 80 + len(lines) * size * 2), "white")
    draw = ImageDraw.Draw(image)
    face = ImageFont.truetype(str(font), size)
    for row, line in enumerate(lines):
        draw.text((40, 40 + row * size * 2), line, font=face, fill="black")
    return image


def test_english_and_chinese_come_back_in_reading_order() -> None:
    assert read_image(page(ENGLISH, LATIN)) == "\n".join(ENGLISH)
    assert read_image(page(HAN, CHINESE)) == "\n".join(HAN)


def test_boxes_of_one_line_are_joined_left_to_right() -> None:
    boxes = [
        ([(300, 12), (400, 12), (400, 40), (300, 40)], "dusk"),
        ([(10, 60), (90, 60), (90, 88), (10, 88)], "second"),
        ([(10, 10), (200, 10), (200, 42), (10, 42)], "dawn and"),
        ([(10, 110), (60, 110), (60, 138), (10, 138)], "看守"),
        ([(70, 112), (120, 112), (120, 140), (70, 140)], "灯塔"),
    ]
    assert reading_order(boxes) == "dawn and dusk\nsecond\n看守灯塔"


def test_an_image_and_a_scanned_pdf_are_found_with_the_page_and_the_ocr_mark(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page(ENGLISH, LATIN).save(docs / "logbook.png")
    scans = [page(["Page one of the harbour ledger."], LATIN), page(HAN, CHINESE)]
    scans[0].save(docs / "ledger.pdf", save_all=True, append_images=scans[1:])  # image-only pages
    load = loader_for(docs / "logbook.png")
    assert load is not None and isolated(load)
    service = indexed(tmp_path, docs)
    try:
        assert skipped(service) == {}
        (hit,) = service.store.search_keyword("lighthouse keeper weather", 1)
        assert (hit.path, hit.heading, hit.page) == ("logbook.png", OCR_HEADING, None)
        (hit,) = service.store.search_keyword("黄昏 天气", 1)
        assert (hit.path, hit.heading, hit.page) == ("ledger.pdf", OCR_HEADING, 2)
        passage = Passage(1, "docs", hit.path, hit.start, hit.end, hit.heading, hit.page, 1.0, hit.text, ())
        assert passage.label() == "ledger.pdf (page 2, OCR)"
        assert service.indexer.ocr_pages == 3
    finally:
        service.close()


def test_a_mixed_pdf_keeps_its_text_page_and_its_scanned_page(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_pdf(docs / "text.pdf", ["The tide table for March is pinned by the door."])
    scan = tmp_path / "scan.pdf"
    page(["Storm shutters were fitted in April."], LATIN).save(scan)
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.append(docs / "text.pdf")
    writer.append(scan)
    writer.write(docs / "mixed.pdf")
    (docs / "text.pdf").unlink()
    service = indexed(tmp_path, docs)
    try:
        (hit,) = service.store.search_keyword("tide table March", 1)
        assert (hit.path, hit.heading, hit.page) == ("mixed.pdf", None, 1)
        (hit,) = service.store.search_keyword("storm shutters April", 1)
        assert (hit.path, hit.heading, hit.page) == ("mixed.pdf", OCR_HEADING, 2)
    finally:
        service.close()


def test_a_scanned_page_numbered_by_the_scanner_is_read_by_ocr(tmp_path: Path) -> None:
    """A scan whose only text layer is the stamp a scanner or copier put on it ("Page 2"): read
    by OCR, not indexed as two words; with OCR off it keeps its stamp."""
    from pypdf import PdfReader, PdfWriter

    scan, stamp = tmp_path / "scan.pdf", tmp_path / "stamp.pdf"
    page(["Storm shutters were fitted in April."], LATIN).save(scan)
    write_pdf(stamp, ["Page 2"])
    writer = PdfWriter()
    writer.append(scan)
    writer.pages[0].merge_page(PdfReader(stamp).pages[0])
    stamped = tmp_path / "stamped.pdf"
    writer.write(stamped)
    with reading(ReadOptions()):
        document = loader_for(stamped)(stamped)  # type: ignore[misc]
    (section,) = document.sections
    assert section.heading == OCR_HEADING and "Storm shutters were fitted in April." in document.text
    with reading(ReadOptions(ocr=False)):
        document = loader_for(stamped)(stamped)  # type: ignore[misc]
    assert document.text.strip() == "Page 2" and document.sections[0].heading is None


def test_with_ocr_off_an_image_is_skipped_and_a_scanned_pdf_too(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page(ENGLISH, LATIN).save(docs / "logbook.png")
    page(ENGLISH, LATIN).save(docs / "scan.pdf")
    service = indexed(tmp_path, docs, ocr="off")
    try:
        assert skipped(service) == {
            "logbook.png": "OCR is off",
            "scan.pdf": "PDF has no extractable text (scanned?); OCR is off",
        }
    finally:
        service.close()


def bomb_png(path: Path, side: int) -> None:
    """A valid PNG of ``side`` × ``side`` white pixels (1 bit each), compressed to kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return pack(">I", len(data)) + kind + data + pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * (side // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_before_decoding_and_the_rest_indexed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    bomb_png(docs / "bomb.png", 30_000)
    assert (docs / "bomb.png").stat().st_size < 200_000
    page(ENGLISH, LATIN).save(docs / "logbook.png")
    (docs / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    started = time.monotonic()
    service = indexed(tmp_path, docs)
    try:
        reason = skipped(service)["bomb.png"]
        assert "64-megapixel limit" in reason and "decompression bomb" in reason, reason
        assert [h.path for h in service.store.search_keyword("lighthouse keeper", 1)] == ["logbook.png"]
        assert [h.path for h in service.store.search_keyword("heron reeds", 1)] == ["note.md"]
    finally:
        service.close()
    assert time.monotonic() - started < 60


def test_a_large_image_under_the_bomb_limit_is_scaled_down_and_read(tmp_path: Path) -> None:
    image = Image.new("L", (8000, 7000), "white")  # 56 megapixels
    ImageDraw.Draw(image).text((200, 200), "Harbour", font=ImageFont.truetype(str(LATIN), 400), fill="black")
    path = tmp_path / "poster.png"
    image.save(path)
    document = loader_for(path)(path)  # type: ignore[misc]
    assert "Harbour" in document.text


def test_without_the_engine_a_scanned_pdf_and_doctor_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "scan.pdf"
    page(ENGLISH, LATIN).save(path)
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "rapidocr_onnxruntime" else found(name, *a),
    )
    with pytest.raises(SkipFile) as skip:
        loader_for(path)(path)  # type: ignore[misc]
    assert (
        str(skip.value)
        == f"PDF has no extractable text (scanned?); the OCR engine is not installed ({OCR_INSTALL})"
    )
    finding = check_ocr(Settings())
    assert (finding.status, finding.fix) == ("WARN", f"{OCR_INSTALL}, or --ocr off")
    monkeypatch.undo()
    assert check_ocr(Settings()).status == "OK"
    assert check_ocr(Settings(ocr="off")).detail.startswith("off")


def test_pages_past_the_ocr_page_limit_are_left_out_and_named(tmp_path: Path) -> None:
    scans = [page([f"Ledger page {word}."], LATIN) for word in ("alpha", "bravo", "charlie")]
    pdf, tiff = tmp_path / "ledger.pdf", tmp_path / "ledger.tiff"
    scans[0].save(pdf, save_all=True, append_images=scans[1:])
    frames = [scan.copy() for scan in scans]  # a save leaves its options on the images it appended
    frames[0].save(tiff, save_all=True, append_images=frames[1:])
    with reading(ReadOptions(ocr_pages=2)):
        for path, left_out in ((pdf, "1 scanned page (page 3) not read"), (tiff, "pages 3-3 not read")):
            document = loader_for(path)(path)  # type: ignore[misc]
            assert [(s.heading, s.page) for s in document.sections] == [(OCR_HEADING, 1), (OCR_HEADING, 2)]
            assert "bravo" in document.text and "charlie" not in document.text
            note = document.note or ""
            assert note.startswith(left_out) and note.endswith("the OCR page limit is 2"), note


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF"])
def test_an_image_cut_short_is_skipped_as_unreadable(tmp_path: Path, kind: str) -> None:
    """Its header is whole and its pixels are not (a download cut short): the skip says so."""
    whole = tmp_path / f"whole.{kind.lower()}"
    page(ENGLISH, LATIN).save(whole, kind)
    path = tmp_path / f"cut.{kind.lower()}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(SkipFile, match="unreadable image"):
        loader_for(path)(path)  # type: ignore[misc]


def test_a_photo_stored_sideways_is_read_upright_as_its_exif_orientation_says(tmp_path: Path) -> None:
    """A phone stores a photo as its sensor saw it, with an EXIF orientation saying how to turn it
    (6: a quarter turn clockwise): read as stored, the text would be sideways."""
    upright = page(ENGLISH, LATIN)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    stored.save(path, quality=92, exif=exif)
    with reading(ReadOptions()):
        text = loader_for(path)(path).text  # type: ignore[misc]
    assert " ".join(text.split()) == " ".join(ENGLISH)


def test_a_sixteen_bit_scan_is_read(tmp_path: Path) -> None:
    """A 16-bit grey PNG, as some scanners save: converted to 8 bits directly, nearly all of it
    would be white."""
    import numpy as np

    grey = np.asarray(page(ENGLISH, LATIN).convert("L"), dtype=np.uint16) * 257  # 0-255 -> 0-65535
    path = tmp_path / "scan16.png"
    Image.fromarray(grey).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    with reading(ReadOptions()):
        text = loader_for(path)(path).text  # type: ignore[misc]
    assert " ".join(text.split()) == " ".join(ENGLISH)
