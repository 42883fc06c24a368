"""OCR accuracy and speed on rendered pages: paragraphs of English and of Chinese drawn with real
fonts (Debian's DejaVu Sans and Serif, WenQuanYi Micro Hei) at several sizes on an A4 page at
150 dpi, as a PNG and as a JPEG (quality 75, as scanners save), read back by the engine the
loaders use. Character accuracy is 1 - edit distance / length, over the page's text with its line
breaks as spaces (and no spaces at all for Chinese); speed is pages per second, one at a time.

    .venv/bin/python bench/ocr.py [--sizes 11,14,18] [--formats png,jpeg] [--detect-side 1280] [--reader]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import textwrap
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.loaders import ocr  # noqa: E402
from plugins.loaders.ocr import read_image  # noqa: E402

FONTS = Path("/usr/share/fonts/truetype")
LATIN = {"DejaVu Sans": FONTS / "dejavu/DejaVuSans.ttf", "DejaVu Serif": FONTS / "dejavu/DejaVuSerif.ttf"}
CHINESE = {"WenQuanYi Micro Hei": FONTS / "wqy/wqy-microhei.ttc"}
DPI = 150
A4 = (1240, 1754)  # pixels at 150 dpi

ENGLISH = """\
The harbour master keeps a log of every ship that enters or leaves the port. Each entry records
the vessel's name, its flag, the time of arrival and the berth it was given. In winter the log
also notes the height of the tide and the state of the sea, because the outer channel silts up
after storms and larger ships must wait for high water.

Repairs to the north pier began in March and are expected to last until the end of the summer.
While the work goes on, fishing boats moor at the east quay, and the ferry to the islands leaves
from the old customs house. Passengers should allow twenty minutes more than usual.

The lighthouse was automated in 1994, but a keeper still visits twice a week to check the lamp,
the batteries and the fog signal. Spare parts are kept in the radio room, and the key hangs in
the harbour office behind the counter."""

HAN = """\
港务长记录每一艘进出港口的船只。每条记录包括船名、船旗、到达时间以及分配的泊位。冬季的记录还会注明潮水的高度和海面
状况，因为风暴过后外航道容易淤积，较大的船只必须等待涨潮才能进港。
北码头的维修工程于三月开始，预计将持续到夏末。施工期间，渔船停靠在东码头，前往岛屿的渡轮从旧海关大楼出发。乘客应比平时
多预留二十分钟。
灯塔于一九九四年实现自动化，但看守人仍每周去两次，检查灯具、电池和雾号。备用零件存放在无线电室，钥匙挂在港务办公室的柜台
后面。
今年夏天，港口将举办一年一度的航海节。届时会有帆船比赛、渔民市场和海鲜美食展，晚上还有烟花表演。主办方提醒游客乘坐公共
交通前往，因为码头附近的停车位非常有限。
气象台预报，本周后半段将有强风和大雨，最大阵风可达九级。港务局建议小型船只提前返港避风，并检查缆绳和防撞设施，确保船只
安全停泊。"""


def render(text: str, font: Path, size_pt: int, chinese: bool) -> Image.Image:
    """One A4 page at 150 dpi: the paragraphs wrapped to the page's width."""
    pixels = round(size_pt * DPI / 72)
    face = ImageFont.truetype(str(font), pixels)
    page = Image.new("L", A4, "white")
    draw = ImageDraw.Draw(page)
    margin, y = 110, 110
    width = A4[0] - 2 * margin
    for paragraph in text.split("\n\n") if not chinese else text.split("\n"):
        words = paragraph.replace("\n", " " if not chinese else "")
        lines = _wrap(words, face, width, chinese)
        for line in lines:
            if y + pixels * 1.5 > A4[1] - margin:
                return page
            draw.text((margin, y), line, font=face, fill="black")
            y += round(pixels * 1.5)
        y += pixels
    return page


def _wrap(text: str, face: ImageFont.FreeTypeFont, width: int, chinese: bool) -> list[str]:
    if not chinese:
        average = face.getlength("abcdefghijklmnopqrstuvwxyz ") / 27
        return textwrap.wrap(text, max(10, int(width / average)))
    lines, line = [], ""
    for char in text:
        if face.getlength(line + char) > width:
            lines.append(line)
            line = ""
        line += char
    return lines + ([line] if line else [])


def normalise(text: str, chinese: bool) -> str:
    joined = " ".join(text.split())
    if chinese:  # no spaces in Chinese; the engine's full-width and half-width punctuation agree
        joined = joined.replace(" ", "").translate(str.maketrans(",.:;()!?", "，。：；（）！？"))
    return joined


def distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def expected(page: Image.Image, text: str, font: Path, size_pt: int, chinese: bool) -> str:
    """What was drawn: the same wrapping, cut where the page ended."""
    pixels = round(size_pt * DPI / 72)
    face = ImageFont.truetype(str(font), pixels)
    width = A4[0] - 220
    drawn: list[str] = []
    y = 110
    for paragraph in text.split("\n\n") if not chinese else text.split("\n"):
        for line in _wrap(paragraph.replace("\n", " " if not chinese else ""), face, width, chinese):
            if y + pixels * 1.5 > A4[1] - 110:
                return " ".join(drawn)
            drawn.append(line)
            y += round(pixels * 1.5)
        y += pixels
    return " ".join(drawn)


def as_format(page: Image.Image, kind: str) -> Image.Image:
    data = io.BytesIO()
    if kind == "jpeg":
        page.save(data, "JPEG", quality=75)
    else:
        page.save(data, "PNG")
    data.seek(0)
    return Image.open(data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,12,16", help="font sizes in points")
    parser.add_argument("--formats", default="png,jpeg")
    parser.add_argument("--reader", action="store_true", help="also: two images through the reader process")
    parser.add_argument("--detect-side", type=int, default=ocr.DETECT_SIDE, help="the detector's input side")
    args = parser.parse_args()
    ocr.DETECT_SIDE = args.detect_side
    sizes = [int(s) for s in args.sizes.split(",")]
    read_image(Image.new("RGB", (64, 64), "white"))  # the engine loaded before the clock starts
    results: dict[str, list[float]] = {"English": [], "Chinese": []}
    seconds: list[float] = []
    for language, text, fonts, chinese in (
        ("English", ENGLISH, LATIN, False),
        ("Chinese", HAN, CHINESE, True),
    ):
        for name, font in fonts.items():
            for size in sizes:
                page = render(text, font, size, chinese)
                truth = normalise(expected(page, text, font, size, chinese), chinese)
                for kind in args.formats.split(","):
                    image = as_format(page, kind)
                    started = time.perf_counter()
                    read = read_image(image)
                    seconds.append(time.perf_counter() - started)
                    got = normalise(read, chinese)
                    accuracy = 1 - distance(got, truth) / max(len(truth), 1)
                    results[language].append(accuracy)
                    print(
                        f"{language:8} {name:20} {size:3} pt {kind:5} {accuracy:7.2%} "
                        f"{len(truth):5} chars {seconds[-1]:5.2f} s",
                        flush=True,
                    )
    print()
    for language, scores in results.items():
        print(
            f"{language}: mean {statistics.mean(scores):.2%}, worst {min(scores):.2%} ({len(scores)} pages)"
        )
    print(
        f"speed: {len(seconds) / sum(seconds):.2f} pages/s ({statistics.median(seconds):.2f} s median a page)"
    )
    with open("/proc/self/status") as status:
        peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
    print(f"detector side {ocr.DETECT_SIDE}; peak RSS of this process {int(peak) >> 10} MB")
    if args.reader:
        through_the_reader()


def through_the_reader() -> None:
    """Peak RSS of the reader process (as the indexer runs it, default limits) reading one image:
    an A4 page scanned at 300 dpi, a 48-megapixel photo of text; a fresh reader for each."""
    import tempfile

    from proxy.index.extract import Extractor, Limits
    from proxy.plugins import loader_for
    from proxy.types import ReadOptions

    font = ImageFont.truetype(str(LATIN["DejaVu Sans"]), 120)
    with tempfile.TemporaryDirectory() as folder:
        for name, (width, height) in (("a4-300dpi.png", (2480, 3508)), ("photo-48mp.png", (8000, 6000))):
            image = Image.new("L", (width, height), 255)
            draw = ImageDraw.Draw(image)
            for line in range(12):
                draw.text((100, 200 + line * (height // 14)), f"Line {line} of the harbour logbook.", 0, font)
            path = Path(folder) / name
            image.save(path)
            extractor = Extractor(Limits(), ReadOptions())
            try:
                loader = loader_for(path)
                assert loader is not None
                started = time.perf_counter()
                text = extractor.load(loader, path).text
                took = time.perf_counter() - started
            finally:
                extractor.close()
            print(
                f"through the reader: {name} {took:.1f} s, reader peak RSS {extractor.peak_rss >> 20} MB, "
                f"{text.count('harbour logbook')} of 12 lines read"
            )


if __name__ == "__main__":
    main()
