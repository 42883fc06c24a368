"""Memory and time of ``ragproxy index`` over a folder made to hurt, with the default settings.

The folder is made on the fly in a temporary directory: a .docx, a .pptx, an .odt and an .epub
that each inflate to about 1 GB of XML (written a megabyte at a time), a workbook of a million
rows and one whose shared strings inflate to 64 MB, a PNG of 30,000 × 30,000 pixels, a mailbox
of 1 GB (most of it one message's attachment, with a message on each side of it), a PDF of 5,000
pages (a hundred distinct page texts, so the embedding stays short; the parsing is the hostile
part), FIFOs (one named like a note, one ``.gitignore``), a note in GBK, a directory tree 500
levels deep with a note at the bottom, binary files (one named ``.txt``) and a few ordinary
notes. ``ragproxy index`` runs on it in a subprocess; its peak RSS and that of each reader
process it starts are sampled from ``/proc/<pid>/status`` (VmHWM) while it runs, and
``getrusage(RUSAGE_CHILDREN)`` gives the largest of all of them after it exits. The target is
500 MB whatever the files.

    .venv/bin/python bench/hostile.py [--bomb-mb 1024] [--mbox-mb 1024] [--pages 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.docs import write_big_mbox, write_docx_bomb, write_pdf  # noqa: E402
from tests.office_docs import write_epub_bomb, write_odt_bomb, write_pptx_bomb  # noqa: E402
from tests.test_ocr import bomb_png  # noqa: E402
from tests.test_sheet_loaders import write_million_rows, write_strings_bomb  # noqa: E402

TARGET_MB = 500
GBK_NOTE = "# 灯塔日志\n\n守塔人每天黄昏点亮灯塔，风暴来临时敲响雾钟。港口的船只依靠灯光回家。\n" * 20


def build_folder(root: Path, bomb_mb: int, mbox_mb: int, pages: int) -> None:
    root.mkdir()
    started = time.monotonic()
    write_docx_bomb(root / "bomb.docx", bomb_mb * 1024 * 1024)
    write_pptx_bomb(root / "bomb.pptx", bomb_mb * 1024 * 1024)
    write_odt_bomb(root / "bomb.odt", bomb_mb * 1024 * 1024)
    write_epub_bomb(root / "bomb.epub", bomb_mb * 1024 * 1024)
    write_big_mbox(root / "archive.mbox", mbox_mb * 1024 * 1024)
    write_million_rows(root / "readings.xlsx")
    write_strings_bomb(root / "strings-bomb.xlsx")
    bomb_png(root / "bomb.png", 30_000)
    texts = [
        f"Section {i} of the annual maintenance report: the keeper inspected the lamp, the lens "
        f"and the fog bell, and logged the weather, the tides and the ships that passed. " * 2
        for i in range(100)
    ]
    write_pdf(root / "report.pdf", [texts[i % len(texts)] for i in range(pages)])
    os.mkfifo(root / "pipe.md")
    os.mkfifo(root / ".gitignore")
    (root / "gbk-note.md").write_bytes(GBK_NOTE.encode("gbk"))
    deep = root.joinpath(*["d"] * 500)
    deep.mkdir(parents=True)
    (deep / "bottom.md").write_text("The note at the bottom of the well.\n", encoding="utf-8")
    (root / "blob.bin").write_bytes(os.urandom(1024 * 1024))
    (root / "random.txt").write_bytes(os.urandom(256 * 1024))
    for i in range(5):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\nThe heron waits in the reeds.\n", encoding="utf-8")
    sizes = {
        p.name: p.stat().st_size for p in sorted(root.iterdir()) if p.is_file() and p.stat().st_size > 1 << 20
    }
    print(f"folder made in {time.monotonic() - started:.1f} s: {sizes} bytes", flush=True)


def peak_kb(pid: int) -> int:
    """VmHWM of a process, in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def sample(pid: int, peaks: dict[int, int], stop: threading.Event) -> None:
    """Each process's VmHWM, every 50 ms, until ``stop``; readers found as children of ``pid``."""
    while not stop.is_set():
        for process in [pid, *children(pid)]:
            peaks[process] = max(peaks.get(process, 0), peak_kb(process))
        stop.wait(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bomb-mb", type=int, default=1024, help="what the .docx inflates to")
    parser.add_argument("--mbox-mb", type=int, default=1024, help="size of the mailbox")
    parser.add_argument("--pages", type=int, default=5000, help="pages of the PDF")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragproxy-hostile-") as tmp:
        folder, db = Path(tmp) / "hostile", Path(tmp) / "index.db"
        build_folder(folder, args.bomb_mb, args.mbox_mb, args.pages)
        run = [sys.executable, "-m", "proxy"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        process = subprocess.Popen(
            [*run, "index", str(folder), "--db", str(db)], env=env, stderr=subprocess.PIPE, text=True
        )
        peaks: dict[int, int] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(process.pid, peaks, stop))
        sampler.start()
        _, err = process.communicate()
        stop.set()
        sampler.join()
        wall = time.monotonic() - started
        largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB, over every process
        status = json.loads(
            subprocess.run(
                [*run, "status", "--json", "--db", str(db)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    (collection,) = status["collections"]
    main_mb = peaks.pop(process.pid, 0) / 1024
    readers = [kb / 1024 for kb in peaks.values()]  # in the order they were first seen
    print(err.strip())
    print(f"exit code {process.returncode}, wall time {wall:.1f} s")
    shown = ", ".join(f"{mb:.0f}" for mb in readers)
    print(f"peak RSS: ragproxy {main_mb:.0f} MB; readers, in order of start, {shown} MB")
    print("(a reader killed at its memory limit may die between two samples: the line below bounds it)")
    print(f"largest peak RSS of any process (getrusage RUSAGE_CHILDREN): {largest / 1024:.0f} MB")
    print(f"indexed: {collection['documents']} documents, {collection['chunks']} chunks")
    for entry in collection["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    within = max(main_mb, *readers, largest / 1024) <= TARGET_MB
    print(f"target {TARGET_MB} MB per process: {'met' if within else 'MISSED'}")
    sys.exit(0 if within and process.returncode == 0 else 1)


if __name__ == "__main__":
    main()
