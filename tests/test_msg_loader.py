"""Outlook messages (.msg), written by tests/msg_docs.py as compound files per [MS-OXMSG], read
into the shape of an .eml: the same header lines, body, attachments named and, in formats
ragproxy reads, read as parts of the message; found through the index by the message's name;
a damaged file skipped with the reason."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import olefile
import pytest

from plugins.loaders.mail import load_msg
from proxy.plugins import isolated, loader_for
from proxy.types import Document, SkipFile
from tests.cfb import BLACK, NOSTREAM, RED, write_cfb
from tests.docs import indexed, write_docx, write_pdf
from tests.msg_docs import Mail, write_msg

DATE = "Tue, 01 Dec 2026 09:30:00 +0000"
HEADING = f"Storm plans ({DATE})"


def storm_plans(tmp_path: Path) -> Mail:
    """A message with a PDF, a Word file, a program, a damaged PDF, an attached message and an
    image its body shows."""
    write_pdf(tmp_path / "plan.pdf", ["Close the shutters.", "Sandbags go by the boathouse door."])
    write_docx(tmp_path / "garden.docx")
    return Mail(
        "Storm plans",
        body="The storm plan and the garden manual are attached.\r\nKeep them by the radio.",
        cc=[("Ole Berg", "ole@example.org")],
        attachments=[
            ("plan.pdf", (tmp_path / "plan.pdf").read_bytes()),
            ("garden.docx", (tmp_path / "garden.docx").read_bytes()),
            ("tool.exe", b"MZ\x90\x00"),
            ("broken.pdf", b"%PDF-1.4 broken"),
            ("Beacon log", Mail("Beacon log", body="The beacon was relit at dusk.")),
            ("image001.png", b"\x89PNG\r\n\x1a\n"),  # shown in the body: not named
        ],
        hidden=["image001.png"],
    )


def test_the_written_message_is_a_valid_compound_file_that_extract_msg_reads(tmp_path: Path) -> None:
    import extract_msg

    path = tmp_path / "storm.msg"
    write_msg(path, storm_plans(tmp_path))
    ole = olefile.OleFileIO(str(path), raise_defects=olefile.DEFECT_UNSURE)  # any defect raises
    try:
        assert ole.parsing_issues == []
        assert ole.openstream("__substg1.0_0037001F").read().decode("utf-16-le") == "Storm plans"
        for entry in ole.direntries:
            if entry is not None and entry.entry_type in (olefile.STGTY_ROOT, olefile.STGTY_STORAGE):
                assert_red_black(ole, entry.sid_child)
    finally:
        ole.close()
    message = extract_msg.openMsg(path)
    try:
        assert message.subject == "Storm plans"
        assert message.sender == "Ingrid Dahl <ingrid@example.org>"
        assert message.to == "Harbour keepers <keepers@example.org>"
        assert message.date is not None and message.date.isoformat() == "2026-12-01T09:30:00+00:00"
        assert message.body.startswith("The storm plan and the garden manual")
        names = [a.name for a in message.attachments]
        assert names == [
            "plan.pdf",
            "garden.docx",
            "tool.exe",
            "broken.pdf",
            "Beacon log.msg",
            "image001.png",
        ]
        assert message.attachments[5].hidden and not message.attachments[0].hidden
        assert message.attachments[0].data == (tmp_path / "plan.pdf").read_bytes()
        assert message.attachments[4].data.body == "The beacon was relit at dusk."
    finally:
        message.close()


def assert_red_black(ole: olefile.OleFileIO, top: int) -> None:
    """The siblings under ``top`` form a red-black tree ordered by name length, then upper-case
    name: the root black, no red node with a red child, as many black nodes on every path."""

    def key(sid: int) -> tuple[int, str]:
        name: str = ole.direntries[sid].name
        return len(name), name.upper()

    def black_height(sid: int, low: tuple[int, str] | None, high: tuple[int, str] | None) -> int:
        if sid == NOSTREAM:
            return 1
        entry = ole.direntries[sid]
        assert (low is None or low < key(sid)) and (high is None or key(sid) < high)
        if entry.color == RED:
            for child in (entry.sid_left, entry.sid_right):
                assert child == NOSTREAM or ole.direntries[child].color == BLACK
        left = black_height(entry.sid_left, low, key(sid))
        assert left == black_height(entry.sid_right, key(sid), high)
        return left + (entry.color == BLACK)

    if top != NOSTREAM:
        assert ole.direntries[top].color == BLACK
        black_height(top, None, None)


def test_the_compound_file_writer_keeps_small_large_and_empty_streams(tmp_path: Path) -> None:
    tree = {
        "small": b"a" * 100,  # in the mini stream
        "large": bytes(range(256)) * 40,  # 10,240 bytes, in sectors of its own
        "empty": b"",
        "Storage": {f"s{n}": bytes([n]) * (n * 90) for n in range(40)},  # two mini FAT sectors
    }
    ole = olefile.OleFileIO(io.BytesIO(write_cfb(tree)), raise_defects=olefile.DEFECT_UNSURE)
    try:
        assert ole.parsing_issues == []
        for name in ("small", "large", "empty"):
            assert ole.openstream(name).read() == tree[name]
        storage = tree["Storage"]
        assert isinstance(storage, dict)
        for name, data in storage.items():
            assert ole.openstream(["Storage", name]).read() == data
        for entry in ole.direntries:
            if entry is not None and entry.entry_type in (olefile.STGTY_ROOT, olefile.STGTY_STORAGE):
                assert_red_black(ole, entry.sid_child)
    finally:
        ole.close()


def sections(document: Document) -> dict[str | None, str]:
    return {s.heading: document.text[s.start : s.end] for s in document.sections}


def test_a_msg_has_the_shape_of_an_eml(tmp_path: Path) -> None:
    path = tmp_path / "storm.msg"
    write_msg(path, storm_plans(tmp_path))
    load = loader_for(path)
    assert load is load_msg and isolated(load)  # in the reader process, with its limits,
    assert pickle.loads(pickle.dumps(load)) is load  # which it reaches by name
    document = load(path)
    parts = sections(document)
    head = parts[HEADING]
    assert head.split("\n")[:6] == [
        "From: Ingrid Dahl <ingrid@example.org>",
        "To: Harbour keepers <keepers@example.org>",
        "Cc: Ole Berg <ole@example.org>",
        f"Date: {DATE}",
        "Subject: Storm plans",
        "Attachments: plan.pdf, garden.docx, tool.exe (not read: not a format ragproxy reads), "
        "broken.pdf (not read: unreadable PDF: PdfStreamError: Stream has ended unexpectedly), "
        "Beacon log.msg (not read: a message is not read inside another)",
    ]
    assert head.endswith("\n\nThe storm plan and the garden manual are attached.\nKeep them by the radio.")
    assert "beacon was relit" not in document.text  # an attached message is named, not read
    assert "image001" not in document.text
    headings = [(s.heading, s.page) for s in document.sections]
    assert (f"{HEADING} > plan.pdf", 2) in headings
    assert any(h == f"{HEADING} > garden.docx > Garden Manual > Compost" for h, _ in headings), headings


def test_chinese_messages_and_html_only_ones(tmp_path: Path) -> None:
    path = tmp_path / "river.msg"
    write_msg(path, Mail("长江水位", body="长江水位本周上涨了两米。", sender=("李明", "li@example.cn")))
    (heading, text), *_ = sections(load_msg(path)).items()
    assert heading == f"长江水位 ({DATE})"
    assert "From: 李明 <li@example.cn>" in text and text.endswith("\n\n长江水位本周上涨了两米。")
    path = tmp_path / "foghorn.msg"
    html = "<html><body><p>The foghorn is tested on <b>Fridays</b>.</p><script>SCRIPTCANARY</script>"
    write_msg(path, Mail("Foghorn test", html=html + "<p>港口安全</p></body></html>"))
    text = load_msg(path).text
    assert "The foghorn is tested on Fridays." in " ".join(text.split()) and "港口安全" in text
    assert "SCRIPTCANARY" not in text
    path = tmp_path / "premier.msg"
    html = "<p>朱镕基视察了港口。</p>"  # 镕 is in GBK, not in GB2312
    write_msg(path, Mail("视察", html=html, charset="gbk"))
    assert load_msg(path).text.strip().endswith("朱镕基视察了港口。")


def test_an_rtf_only_message_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "tide.msg"
    rtf = r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Arial;}}\f0 The tide turns at \b noon\b0 .\par}"
    write_msg(path, Mail("Tide", rtf=rtf, delivered=None))
    document = load_msg(path)
    assert document.sections[0].heading == "Tide"  # no date: the subject alone
    assert document.text.strip().endswith("The tide turns at noon.")
    # RTF that wraps HTML (as Outlook stores an HTML message): the HTML is read, its script not
    path = tmp_path / "quay.msg"
    rtf = (
        r"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss Arial;}}"
        r"{\*\htmltag19 <html>}{\*\htmltag34 <body>}{\*\htmltag64 <p>}\htmlrtf {\htmlrtf0 The quay "
        r"lights are lit at {\*\htmltag84 <b>}dusk{\*\htmltag92 </b>}.\htmlrtf }\htmlrtf0 "
        r"{\*\htmltag72 </p>}{\*\htmltag58 <script>}SCRIPTCANARY{\*\htmltag66 </script>}"
        r"{\*\htmltag35 </body>}{\*\htmltag27 </html>}}"
    )
    write_msg(path, Mail("Quay", rtf=rtf))
    text = load_msg(path).text
    assert "The quay lights are lit at dusk." in text and "SCRIPTCANARY" not in text


def test_a_msg_is_indexed_and_found_with_the_message_named(tmp_path: Path) -> None:
    """Through the index: the reader process, the chunks, the keyword search, beside an .eml."""
    root = tmp_path / "mail"
    root.mkdir()
    write_msg(root / "storm.msg", storm_plans(tmp_path))
    write_msg(
        root / "batteries.msg",
        Mail("Beacon batteries", body="Spare beacon batteries are kept in the radio room cupboard."),
    )
    (root / "order.eml").write_bytes(
        f"Subject: Lamp oil order\nDate: {DATE}\n\nForty litres of lamp oil arrive Friday.\n".encode()
    )
    service = indexed(tmp_path, root, "mail")
    try:
        (hit,) = service.store.search_keyword("beacon batteries cupboard")[:1]
        assert (hit.path, hit.heading) == ("batteries.msg", f"Beacon batteries ({DATE})")
        (hit,) = service.store.search_keyword("sandbags boathouse")[:1]
        assert (hit.path, hit.heading, hit.page) == ("storm.msg", f"{HEADING} > plan.pdf", 2)
        (hit,) = service.store.search_keyword("compost heap fork")[:1]
        assert (hit.path, hit.heading) == ("storm.msg", f"{HEADING} > garden.docx > Garden Manual > Compost")
        (hit,) = service.store.search_keyword("lamp oil litres")[:1]
        assert hit.path == "order.eml"
        assert service.store.status()["collections"][0]["skipped"] == []
    finally:
        service.close()


def test_damaged_messages_are_skipped_with_the_reason_and_the_rest_indexed(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    write_msg(root / "batteries.msg", Mail("Beacon batteries", body="Spare batteries: radio room cupboard."))
    whole = (root / "batteries.msg").read_bytes()
    (root / "text.msg").write_bytes(b"Not an Outlook message at all.\n" * 40)
    (root / "cut.msg").write_bytes(whole[:1536])  # the header and FAT; the directory cut off
    (root / "other.msg").write_bytes(write_cfb({"WordDocument": b"\xec\xa5" + bytes(510)}))
    with pytest.raises(SkipFile, match="not a readable Outlook message: .*not an OLE2 structured storage"):
        load_msg(root / "text.msg")
    service = indexed(tmp_path, root, "mail")
    try:
        collection_status = service.store.status()["collections"][0]
        skipped = {entry["path"]: entry["reason"] for entry in collection_status["skipped"]}
        assert sorted(skipped) == ["cut.msg", "other.msg", "text.msg"]
        assert "not an OLE2 structured storage file" in skipped["text.msg"]
        assert "Outlook message" in skipped["cut.msg"] and "OleFileError" in skipped["cut.msg"]
        assert skipped["other.msg"] == "not an Outlook message: a compound file with no message class"
        (hit,) = service.store.search_keyword("batteries radio cupboard")[:1]
        assert hit.path == "batteries.msg"
    finally:
        service.close()
