"""Images: the text OCR reads in a photo, a screenshot or a scan (PNG, JPEG, WebP, TIFF, BMP).
A multi-page TIFF gives one section per frame with its page number, up to the OCR page limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from plugins.loaders.common import DocumentText
from plugins.loaders.ocr import check_pixels, missing, open_image, read_image
from proxy.hookspecs import hookimpl
from proxy.types import (
    OCR_HEADING,
    Document,
    SkipFile,
    ocr_page_read,
    ocr_starting,
    read_options,
)

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def load_image(path: Path) -> Document:
    options = read_options()
    if not options.ocr:
        raise SkipFile("OCR is off")
    reason = missing()
    if reason:
        raise SkipFile(reason)
    written = DocumentText()
    note = None
    ocr_starting()  # the engine's memory, and a large image's decoding, within the reader's limit
    with open_image(path) as image:
        frames = getattr(image, "n_frames", 1)
        for index in range(min(frames, options.ocr_pages)):
            try:  # the pixels are decoded here, the header was read whole
                if index:
                    image.seek(index)
                    check_pixels(image)
                text = read_image(image).strip()
            except (OSError, EOFError, SyntaxError, ValueError) as exc:  # PIL's words for damaged data
                raise SkipFile(f"unreadable image: {type(exc).__name__}: {exc}"[:300]) from None
            ocr_page_read()
            if text:
                written.add(text, OCR_HEADING, index + 1 if frames > 1 else None)
        if frames > options.ocr_pages:
            limit = options.ocr_pages
            note = f"pages {limit + 1}-{frames} not read: the OCR page limit is {limit}"
    return written.document(note, empty="OCR found no text in the image")


@hookimpl
def register_loaders(register: Callable[..., None]) -> None:
    register(SUFFIXES, load_image)
