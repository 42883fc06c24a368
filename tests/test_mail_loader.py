"""Mail: a message (.eml) and a mailbox (.mbox), made by the standard library's own mail modules,
read as messages whose sender, date and subject stay with their text, one section each."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from proxy.index.service import IndexService
from proxy.plugins import isolated, loader_for
from proxy.settings import Settings
from proxy.types import SkipFile

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
    service = IndexService(Settings(db=str(tmp_path / "index.db")))
    try:
        collection = service.indexer.add_collection("mail", root)
        assert service.store.claim_collection(collection.id)
        service.indexer.scan(collection)
        (hit,) = service.store.search_keyword("beacon batteries cupboard")[:1]
        assert (hit.path, hit.heading) == ("keepers.mbox", f"Beacon batteries ({DATE})")
        (hit,) = service.store.search_keyword("lamp oil litres")[:1]
        assert (hit.path, hit.heading) == ("order.eml", f"Lamp oil order ({DATE})")
        assert service.store.status()["collections"][0]["skipped"] == []
    finally:
        service.close()
