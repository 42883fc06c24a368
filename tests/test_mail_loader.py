"""Mail: a message (.eml) and a mailbox (.mbox), made by the standard library's own mail modules,
read as messages whose sender, date and subject stay with their text, one section each."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest
import structlog

from plugins.loaders.mail import load_eml, parse_message, split_mbox
from proxy.index.service import IndexService
from proxy.plugins import isolated, loader_for
from proxy.settings import Settings
from proxy.types import Document, SkipFile
from tests.docs import indexed, write_big_mbox, write_docx, write_pdf

DATE = "Tue, 01 Dec 2026 09:30:00 +0000"


def message(subject: str, body: str, *, html: bool = False, date: str = DATE) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Ingrid Dahl <ingrid@example.org>"
    mail["To"] = "keepers@example.org"
    mail["Date"] = date
    mail["Subject"] = subject
    if html:
        mail.set_content("This message needs an HTML reader.")
        mail.add_alternative(
            f"<html><body><h1>Notice</h1><p>{body}</p><script>SCRIPTCANARY</script></body></html>",
            subtype="html",
        )
    else:
        mail.set_content(body)
    return mail


def test_an_eml_keeps_its_headers_and_reads_its_html_body_and_names_attachments(tmp_path: Path) -> None:
    mail = message("Lamp oil order", "We need forty litres of lamp oil before the storm season.", html=True)
    mail.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="invoice.pdf")
    path = tmp_path / "order.eml"
    path.write_bytes(bytes(mail))
    load = loader_for(path)
    assert load is not None and isolated(load)  # in the reader process, with its limits
    document = load(path)
    assert "From: Ingrid Dahl <ingrid@example.org>" in document.text
    assert "Subject: Lamp oil order" in document.text
    assert (
        "forty litres of lamp oil" in document.text
    )  # the plain part first: the HTML one is the alternative
    assert "Attachments: invoice.pdf" in document.text
    (section,) = document.sections
    assert section.heading == "Lamp oil order (Tue, 01 Dec 2026 09:30:00 +0000)"


def test_an_html_only_message_is_read_as_text(tmp_path: Path) -> None:
    mail = EmailMessage()
    mail["Subject"] = "Foghorn test"
    mail.set_content(
        "<p>The foghorn is tested on <b>Fridays</b>.</p><script>SCRIPTCANARY</script>", subtype="html"
    )
    path = tmp_path / "foghorn.eml"
    path.write_bytes(bytes(mail))
    text = loader_for(path)(path).text  # type: ignore[misc]
    assert "The foghorn is tested on Fridays." in " ".join(text.split()) and "SCRIPTCANARY" not in text


def test_an_mbox_gives_one_section_per_message(tmp_path: Path) -> None:
    path = tmp_path / "keepers.mbox"
    box = mailbox.mbox(path)
    box.add(message("Winch repair", "The winch on the north pier was repaired on Monday."))
    box.add(message("长江水位", "长江水位本周上涨了两米。", date="Wed, 02 Dec 2026 10:00:00 +0800"))
    box.add(message("Empty", ""))
    box.close()
    document = loader_for(path)(path)  # type: ignore[misc]
    headings = [s.heading for s in document.sections]
    assert headings[:2] == [
        "Winch repair (Tue, 01 Dec 2026 09:30:00 +0000)",
        "长江水位 (Wed, 02 Dec 2026 10:00:00 +0800)",
    ]
    second = document.sections[1]
    assert "长江水位本周上涨了两米" in document.text[second.start : second.end]
    assert "winch" not in document.text[second.start : second.end]


def test_a_file_with_no_message_is_skipped_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbox"
    path.write_bytes(b"")
    with pytest.raises(SkipFile, match="no message with text"):
        loader_for(path)(path)  # type: ignore[misc]


def test_mail_is_indexed_and_found_with_the_message_named(tmp_path: Path) -> None:
    """Through the index: the reader process, the chunks, the keyword search."""
    root = tmp_path / "mail"
    root.mkdir()
    box = mailbox.mbox(root / "keepers.mbox")
    box.add(message("Winch repair", "The winch on the north pier was repaired on Monday."))
    box.add(message("Beacon batteries", "Spare beacon batteries are kept in the radio room cupboard."))
    box.close()
    (root / "order.eml").write_bytes(
        bytes(message("Lamp oil order", "Forty litres of lamp oil arrive Friday."))
    )
    service = indexed(tmp_path, root, "mail")
    try:
        (hit,) = service.store.search_keyword("beacon batteries cupboard")[:1]
        assert (hit.path, hit.heading) == ("keepers.mbox", f"Beacon batteries ({DATE})")
        (hit,) = service.store.search_keyword("lamp oil litres")[:1]
        assert (hit.path, hit.heading) == ("order.eml", f"Lamp oil order ({DATE})")
        assert service.store.status()["collections"][0]["skipped"] == []
    finally:
        service.close()


def test_attachments_in_readable_formats_are_indexed_as_parts_of_their_message(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    mail = message("Storm plans", "The storm plan and the pier drawing are attached.")
    write_docx(tmp_path / "garden.docx")
    mail.add_attachment(
        (tmp_path / "garden.docx").read_bytes(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="garden.docx",
    )
    write_pdf(tmp_path / "plan.pdf", ["Close the shutters.", "Sandbags go by the boathouse door."])
    mail.add_attachment(
        (tmp_path / "plan.pdf").read_bytes(), maintype="application", subtype="pdf", filename="plan.pdf"
    )
    mail.add_attachment(b"MZ\x90\x00", maintype="application", subtype="octet-stream", filename="tool.exe")
    mail.add_attachment(b"%PDF-1.4 broken", maintype="application", subtype="pdf", filename="broken.pdf")
    (root / "storm.eml").write_bytes(bytes(mail))
    document = load_eml(root / "storm.eml")
    head = document.text[: document.sections[0].end]
    assert "plan.pdf, " in head and "tool.exe (not read: not a format ragproxy reads)" in head
    assert "broken.pdf (not read:" in head
    headings = [(s.heading, s.page) for s in document.sections]
    heading = f"Storm plans ({DATE})"
    assert (f"{heading} > plan.pdf", 2) in headings
    assert any(h == f"{heading} > garden.docx > Garden Manual > Compost" for h, _ in headings), headings
    service = indexed(tmp_path, root, "mail")
    try:
        (hit,) = service.store.search_keyword("sandbags boathouse")[:1]
        assert (hit.path, hit.heading, hit.page) == ("storm.eml", f"{heading} > plan.pdf", 2)
        (hit,) = service.store.search_keyword("compost heap fork")[:1]
        assert (hit.path, hit.heading) == ("storm.eml", f"{heading} > garden.docx > Garden Manual > Compost")
    finally:
        service.close()


def test_an_mbox_is_split_the_same_whatever_the_block_size(tmp_path: Path) -> None:
    path = tmp_path / "keepers.mbox"
    box = mailbox.mbox(path)
    for number in range(5):
        box.add(message(f"Log {number}", f"Entry {number}: From the tower, all quiet.\n" * 20))
    box.close()
    whole = path.read_bytes()
    for block in (1, 5, 6, 7, 64, 1 << 20):
        with path.open("rb") as file:
            assert b"".join(split_mbox(file, block=block)) == whole
    with path.open("rb") as file:
        parts = list(split_mbox(file, cap=100, block=7))
    assert len(parts) == 5 and all(len(p) == 100 and p.startswith(b"From ") for p in parts)


GIB = 1024 * 1024 * 1024


def test_a_gigabyte_mailbox_is_read_in_bounded_memory_and_time_with_the_folder_indexed(
    tmp_path: Path,
) -> None:
    """A mailbox of a gigabyte, most of it one message with a huge attachment: over the file-size
    cap, but a mailbox is read a block at a time. The messages on both sides of the huge one are
    indexed; the reader holds one message's first 32 MB, not the file."""
    root = tmp_path / "mail"
    root.mkdir()
    path = root / "archive.mbox"
    write_big_mbox(path, GIB)
    (root / "note.md").write_text("The heron waits in the reeds.\n", encoding="utf-8")
    assert path.stat().st_size > GIB
    service = IndexService(Settings(db=str(tmp_path / "index.db")))
    try:
        collection = service.indexer.add_collection("mail", root)
        assert service.store.claim_collection(collection.id)
        report = service.indexer.scan(collection)
        assert (report.indexed, report.skipped) == (2, 0)
        for words, subject in (
            ("tide tables harbour", "Tide tables"),
            ("winter ferry quay", "Ferry timetable"),
        ):
            (hit,) = service.store.search_keyword(words)[:1]
            assert (hit.path, hit.heading) == ("archive.mbox", f"{subject} ({DATE})")
        assert service.store.search_keyword("heron reeds")[0].path == "note.md"
        assert 0 < service.indexer.extractor.peak_rss < 500 * 1024 * 1024
    finally:
        service.close()


def test_a_mailbox_past_the_text_limit_is_cut_after_a_message_not_skipped(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    box = mailbox.mbox(root / "keepers.mbox")
    box.add(message("Winch repair", "The winch on the north pier was repaired on Monday."))
    box.add(message("Beacon batteries", "Spare beacon batteries are kept in the radio room cupboard. " * 20))
    box.close()
    (root / "long.txt").write_text("A line of a very long log.\n" * 100, encoding="utf-8")
    service = IndexService(Settings(db=str(tmp_path / "index.db"), max_file_text=600))
    try:
        collection = service.indexer.add_collection("mail", root)
        assert service.store.claim_collection(collection.id)
        with structlog.testing.capture_logs() as logs:
            service.indexer.scan(collection)
        assert service.store.search_keyword("winch pier")[0].path == "keepers.mbox"
        assert service.store.search_keyword("beacon batteries") == []
        (capped,) = [e for e in logs if e["event"] == "index.capped"]
        assert capped["path"] == "keepers.mbox" and "over the 600-character limit" in capped["reason"]
        skipped = {s["path"]: s["reason"] for s in service.store.status()["collections"][0]["skipped"]}
        assert list(skipped) == ["long.txt"]  # other formats are still skipped whole
    finally:
        service.close()


def test_long_base64_bodies_are_set_aside_while_parsing_and_read_back_whole(tmp_path: Path) -> None:
    """Bodies of thousands of base64 lines (a long text part, a big PDF) are kept out of the
    parser, which would hold ten times their size, and decoded from the raw message when read."""
    mail = EmailMessage()
    mail["Subject"] = "Logbook"
    mail["Date"] = DATE
    mail.set_content(
        "Night watch: all quiet at the lighthouse. " * 4000 + "Last entry: fog at dawn.", cte="base64"
    )
    write_pdf(
        tmp_path / "log.pdf",
        [f"Page {n}: the lamp was lit at dusk." for n in range(1, 600)] + ["Zeppelin seen."],
    )
    mail.add_attachment(
        (tmp_path / "log.pdf").read_bytes(), maintype="application", subtype="pdf", filename="log.pdf"
    )
    raw = bytes(mail)
    assert len(raw) > 200_000
    parsed = parse_message(raw)
    assert len(parsed.aside) == 2  # both bodies stood aside
    document = load_eml_bytes(tmp_path / "log.eml", raw)
    assert (
        document.text.count("Night watch: all quiet") == 4000 and "Last entry: fog at dawn." in document.text
    )
    (last,) = [s for s in document.sections if s.page == 600]
    assert last.heading == f"Logbook ({DATE}) > log.pdf"
    assert "Zeppelin seen." in document.text[last.start : last.end]


def load_eml_bytes(path: Path, raw: bytes) -> Document:
    path.write_bytes(raw)
    return load_eml(path)


def test_a_set_aside_body_cut_short_is_read_as_far_as_it_goes(tmp_path: Path) -> None:
    """A message cut at its last base64 group (a download cut short, or one past MAX_MESSAGE)
    keeps its text and its attachment's, as the mail parser reads such a body."""
    mail = EmailMessage()
    mail["Subject"] = "Logbook"
    mail["Date"] = DATE
    mail.set_content("The body mentions zeppelins.")
    log = ("Night watch: all quiet at the lighthouse.\n" * 4000).encode()
    mail.add_attachment(log, maintype="text", subtype="plain", filename="log.txt")  # base64
    raw = bytes(mail)
    end = raw.rindex(b"\n--")  # the attachment's last line, three characters short
    raw = raw[: end - 3] + raw[end:]
    assert len(parse_message(raw).aside) == 1
    document = load_eml_bytes(tmp_path / "cut.eml", raw)
    assert "zeppelins" in document.text
    assert document.text.count("Night watch: all quiet") > 3900
