"""OCR: the text of an image, read by RapidOCR (PP-OCRv4 detection and recognition, English and
Chinese; the models ship in its wheel, nothing is downloaded). The engine is loaded once per
process, on first use, and kept lean for the reader process's address-space limit: at most two
threads, no memory pattern held between runs, a page at most ``MAX_SIDE`` pixels on its longer
side and detected at ``DETECT_SIDE``. Lines come back in reading order: top to bottom, and the
boxes of one line left to right."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.types import OCR_INSTALL, SkipFile

if TYPE_CHECKING:
    from PIL.Image import Image

THREADS = 2  # onnxruntime's threads for one page
MAX_PIXELS = 64_000_000  # an image larger is refused before it is decoded (600 dpi A4 is 35 MP)
MAX_SIDE = 2048  # a larger page is scaled down to this before OCR (about 175 dpi for A4)
DETECT_SIDE = 1280  # the text detector's input, longer side: its memory grows with the square
TWO_TONE = 0.85  # share of a page's grey variance between ink and paper above which it is binarised
MALLOC_ARENAS = 2  # glibc's per-thread heaps each reserve 64 MB of address space


def missing() -> str | None:
    """Why OCR cannot run here, or None if it can."""
    for module in ("rapidocr_onnxruntime", "pypdfium2", "PIL"):
        if importlib.util.find_spec(module) is None:
            return f"the OCR engine is not installed ({OCR_INSTALL})"
    return None


@cache
def _engine() -> Any:
    _lean_process()
    import cv2
    from rapidocr_onnxruntime import RapidOCR
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    from rapidocr_onnxruntime.utils import infer_engine

    cv2.setNumThreads(1)
    make_options = infer_engine.OrtInferSession._init_sess_opts

    def lean_options(config: dict[str, Any]) -> Any:
        options = make_options(config)
        options.enable_mem_pattern = False  # the engine already runs without onnxruntime's arena
        return options

    infer_engine.OrtInferSession._init_sess_opts = staticmethod(lean_options)
    try:
        engine = RapidOCR(intra_op_num_threads=THREADS, inter_op_num_threads=1, use_cls=False)
    finally:
        infer_engine.OrtInferSession._init_sess_opts = staticmethod(make_options)
    # one line at a time: a batch pads every line to the widest one's size, which costs memory
    # (a dense A4 page peaked ~120 MB higher with RapidOCR's 6) and no time here
    engine.text_rec.rec_batch_num = 1
    detector = engine.text_det
    # its own choice grows with the page (up to 2000 pixels); a fixed one bounds its memory
    detector.get_preprocess = lambda longest: DetPreProcess(DETECT_SIDE, "max", detector.mean, detector.std)
    return engine


def _lean_process() -> None:
    """Fewer heaps and BLAS threads: each reserves address space the reader's limit counts."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when OpenCV's BLAS loads
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def read_image(image: Image) -> str:
    """The text OCR reads in ``image`` (any mode, any size up to ``MAX_PIXELS``), in reading order."""
    page = page_image(image)
    try:
        result, _ = _engine()(page)
    except MemoryError:
        raise
    except Exception as exc:  # the engine wraps onnxruntime's errors in its own, a traceback as text
        cause = exc.__cause__ or exc
        if "alloc" in str(cause).lower():  # onnxruntime's words for memory it could not have
            raise MemoryError(str(cause)[:300]) from exc
        raise SkipFile(f"OCR failed: {type(cause).__name__}: {cause}"[:300]) from None
    return reading_order([(box, text) for box, text, _score in result or []])


def page_image(image: Image) -> Image:
    """``image`` as RGB (transparency on white) with its longer side at most ``MAX_SIDE``, turned
    upright as its EXIF orientation says (a phone's photo is stored as the sensor saw it); a
    two-tone page (a scan, a screenshot of text) in black and white (``two_tone``)."""
    from PIL import Image as PILImage

    try:
        orientation = int(image.getexif().get(_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):  # EXIF data a camera wrote badly
        orientation = 1
    image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # a JPEG is decoded at a reduced scale
    if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit grey, as some scanners save
        image = _eight_bit(image)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):  # palette, 1-bit, CMYK...: made resizable
        transparent = image.mode == "PA" or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if transparent else "RGB")
    if max(image.size) > MAX_SIDE:  # scaled down before anything else is made of it
        image = image.copy() if image.readonly else image
        image.thumbnail((MAX_SIDE, MAX_SIDE), PILImage.Resampling.LANCZOS)
    if image.mode in ("RGBA", "LA"):  # transparency on white
        rgba = image.convert("RGBA")
        image = PILImage.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    turn = PILImage.Transpose
    upright = {  # EXIF orientation -> the transposition that shows the image upright
        2: turn.FLIP_LEFT_RIGHT,
        3: turn.ROTATE_180,
        4: turn.FLIP_TOP_BOTTOM,
        5: turn.TRANSPOSE,
        6: turn.ROTATE_270,
        7: turn.TRANSVERSE,
        8: turn.ROTATE_90,
    }
    if orientation in upright:
        image = image.transpose(upright[orientation])
    return two_tone(image)


_ORIENTATION = 0x0112  # the EXIF tag


def _eight_bit(image: Image) -> Image:
    """A 16- or 32-bit grey image in 8 bits, its range stretched over 0-255: converted directly,
    every value over 255 (most of a 16-bit scan) would become white."""
    import numpy as np
    from PIL import Image as PILImage

    values = np.asarray(image, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low or 1.0))
    return PILImage.fromarray(scaled.clip(0, 255).astype(np.uint8), "L")


def two_tone(image: Image) -> Image:
    """A page whose grey levels fall in two clear groups (ink and paper), thresholded between
    them (Otsu): JPEG's ringing around letters otherwise makes the recogniser drop the spaces
    between words. A photo, whose greys do not split so cleanly, is left as it is."""
    import numpy as np
    from PIL import Image as PILImage

    grey = np.asarray(image.convert("L"))
    share = np.bincount(grey.ravel(), minlength=256) / grey.size
    below = np.cumsum(share)  # the share of pixels at or below each level
    mass = np.cumsum(share * np.arange(256))
    total_mean, total_variance = mass[-1], float((share * (np.arange(256) - mass[-1]) ** 2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * below - mass) ** 2 / (below * (1 - below))
    between = np.nan_to_num(between)
    level = int(np.argmax(between))
    if total_variance == 0 or between[level] / total_variance < TWO_TONE:
        return image
    return PILImage.fromarray(np.where(grey > level, 255, 0).astype(np.uint8)).convert("RGB")


def reading_order(boxes: Sequence[tuple[Sequence[Sequence[float]], str]]) -> str:
    """Text boxes (four corners, text) as lines: a box whose middle lies within a line's height
    joins it; lines top to bottom, a line's boxes left to right."""
    placed = sorted(
        (
            (min(y for _, y in box), max(y for _, y in box), min(x for x, _ in box), text.strip())
            for box, text in boxes
            if text.strip()
        ),
        key=lambda b: (b[0] + b[1]) / 2,
    )
    lines: list[list[tuple[float, float, float, str]]] = []
    for top, bottom, left, text in placed:
        middle = (top + bottom) / 2
        line = lines[-1] if lines else None
        if line is not None and min(b[0] for b in line) <= middle <= max(b[1] for b in line):
            line.append((top, bottom, left, text))
        else:
            lines.append([(top, bottom, left, text)])
    return "\n".join(_join(text for *_, text in sorted(line, key=lambda b: b[2])) for line in lines)


def _join(parts: Iterator[str]) -> str:
    """Boxes of one line: a space between them, none between two Chinese characters."""
    joined = ""
    for part in parts:
        if joined and not (_cjk(joined[-1]) and _cjk(part[0])):
            joined += " "
        joined += part
    return joined


def _cjk(char: str) -> bool:
    return "\u2e80" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\uff00" <= char <= "\uffef"


@contextmanager
def open_image(path: Path) -> Iterator[Image]:
    """The image, its header read and its size checked: a decompression bomb (a small file that
    decodes to gigabytes) is refused before any pixel is decoded."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # checked below
            image = PILImage.open(path)
    except PILImage.DecompressionBombError as exc:  # its header asks for far more than MAX_PIXELS
        raise SkipFile(
            f"image over the {MAX_PIXELS // 1_000_000}-megapixel limit (a decompression bomb?): {exc}"[:300]
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipFile(f"unreadable image: {type(exc).__name__}: {exc}"[:300]) from None
    with image:
        check_pixels(image)
        yield image


def check_pixels(image: Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise SkipFile(
            f"image of {width}×{height} pixels, over the {MAX_PIXELS // 1_000_000}-megapixel limit "
            "(a decompression bomb?)"
        )
