"""Real documents of each kind, written by the tests: Markdown, HTML, text, PDF and DOCX; and
third-party plugins installed the usual way."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from proxy.index.service import IndexService
from proxy.settings import Settings


def installed_plugin(site: Path, module: str, source: str) -> dict[str, str]:
    """``source`` as the module ``module``, installed in ``site`` with an entry point in the
    ``ragproxy`` group, as pip would; the environment under which a process finds it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ragproxy]\n{module} = {module}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def write_pdf(path: Path, pages: list[str]) -> None:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for text in pages:
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
        content_id = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {{font}} 0 R >> >> >>".encode()
        )
        kids.append(len(objects))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    font_id = len(objects)
    objects = [o.replace(b"{font}", str(font_id).encode()) for o in objects]
    objects[1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Garden Manual", level=1)
    document.add_paragraph("Water the tomatoes every morning before nine.")
    document.add_heading("Compost", level=2)
    document.add_paragraph("Turn the compost heap once a week with a fork.")
    document.save(str(path))


PARAGRAPH = b"<w:p><w:r><w:t>The quick brown fox jumps over the lazy dog.</w:t></w:r></w:p>"


def write_docx_bomb(path: Path, inflated: int) -> None:
    """A valid .docx whose document.xml inflates to ``inflated`` bytes (a few hundred KB packed):
    parsed whole, it takes many times that in memory. Written a megabyte at a time: a gigabyte
    costs no memory to make."""
    plain = path.with_suffix(".plain.docx")
    write_docx(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item))
                continue
            xml = source.read(item)
            head, tail = xml.split(b"<w:body>", 1)
            with bomb.open("word/document.xml", "w") as out:
                out.write(head + b"<w:body>")
                block = PARAGRAPH * (1024 * 1024 // len(PARAGRAPH))
                for _ in range(inflated // len(block)):
                    out.write(block)
                out.write(tail)
    plain.unlink()


MARKDOWN = """# Lighthouse Handbook

Intro text about the handbook.

## Lamp maintenance

The keeper polishes the Fresnel lens every Tuesday.

```python
# not a heading inside code
```

## Storms

During storms the foghorn sounds every thirty seconds.
"""

HTML = """<html><head><title>Station Notes</title><style>.x{color:red}</style>
<script>var secret = "SCRIPTCANARY";</script></head>
<body><nav>Home | About</nav><h1>Radio Room</h1><p>The radio operator logs every ship at dawn.</p>
<h2>Batteries</h2><p>Spare batteries are stored in the blue cabinet.</p></body></html>
"""

CHINESE = """# 熊猫保护

大熊猫主要以竹子为食，每天要吃十几公斤竹子。

## 栖息地

大熊猫生活在四川、陕西和甘肃的山区森林中。
"""


def write_folder(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "handbook.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "station.html").write_text(HTML, encoding="utf-8")
    (root / "panda.md").write_text(CHINESE, encoding="utf-8")
    (root / "notes.txt").write_text("Remember to order more lamp oil from Bergen.\n", encoding="utf-8")
    write_pdf(root / "manual.pdf", ["Page one talks about anchors", "Page two explains the winch"])
    write_docx(root / "garden.docx")


MAIL_DATE = "Tue, 01 Dec 2026 09:30:00 +0000"


def mail_message(subject: str, body: str) -> Any:
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"] = "Ingrid Dahl <ingrid@example.org>"
    mail["To"] = "keepers@example.org"
    mail["Date"] = MAIL_DATE
    mail["Subject"] = subject
    mail.set_content(body)
    return mail


def write_big_mbox(path: Path, size: int) -> None:
    """A mailbox of ``size`` bytes, most of it one message with a huge attachment (base64 lines,
    written a megabyte at a time), between "Tide tables" and "Ferry timetable"."""
    import mailbox

    box = mailbox.mbox(path)
    box.add(mail_message("Tide tables", "The tide tables for January hang by the harbour office door."))
    box.close()
    huge = mail_message("Radar images", "A year of radar images is attached.")
    huge.add_attachment(b"", maintype="application", subtype="octet-stream", filename="radar.bin")
    line = b"QUJD" * 19 + b"\n"  # 77 bytes of base64 per line
    block = line * (1024 * 1024 // len(line))
    with path.open("ab") as file:
        file.write(b"From ingrid@example.org Tue Dec  1 09:30:00 2026\n" + bytes(huge).rstrip() + b"\n")
        while file.tell() < size:
            file.write(block)
        file.write(b"\n")
    box = mailbox.mbox(path)
    box.add(mail_message("Ferry timetable", "The winter ferry leaves the quay at seven."))
    box.close()


def indexed(tmp_path: Path, root: Path, name: str = "docs", **settings: Any) -> IndexService:
    """An index (``tmp_path``/index.db) of the folder ``root`` as the collection ``name``,
    scanned once; the caller closes it."""
    service = IndexService(Settings(db=str(tmp_path / "index.db"), **settings))
    (collection,) = service.add_folders([(name, root)])
    assert service.store.claim_collection(collection.id)
    service.indexer.scan(collection)
    return service


def skipped(service: IndexService) -> dict[str, str]:
    """Path -> reason of each file the index's one collection skipped."""
    (collection,) = service.store.status()["collections"]
    return {entry["path"]: entry["reason"] for entry in collection["skipped"]}
