"""``ragproxy doctor`` as a process, against the real test upstreams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.doctor import check_inotify
from proxy.index.service import IndexService
from proxy.settings import Settings
from tests.conftest import CHAT_MODEL
from tests.servers import Server, free_port


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "doctor", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line, by the check's name."""
    found = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        assert status.strip() in ("OK", "WARN", "FAIL"), line
        found[rest.strip().partition(":")[0]] = line
    return found


def healthy_ollama(ollama: Server, docs_index: tuple[Path, Path]) -> list[str]:
    folder, db = docs_index
    return ["--upstream", ollama.url, "--model", CHAT_MODEL, "--db", str(db), "--docs", f"manuals={folder}"]


def test_healthy_ollama_setup(ollama: Server, docs_index: tuple[Path, Path]) -> None:
    result = doctor(*healthy_ollama(ollama, docs_index))
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert "FAIL" not in result.stdout
    assert found["upstream"].startswith("OK") and "Ollama 0.12.6" in found["upstream"]
    assert found["model"].startswith("OK")
    capabilities = found["model capabilities"]
    assert (
        capabilities.startswith("OK")
        and "8192 tokens" in capabilities
        and "completion, tools" in capabilities
    )
    assert found["index"].startswith("OK") and "quick_check" in found["index"]
    assert (
        found["embedder e5"].startswith("OK") and "384 dimensions), as the index's vectors" in result.stdout
    )
    assert found[f"docs manuals={docs_index[0]}"].startswith("OK")
    assert found["port"].startswith("OK") and found["access"].startswith("OK")
    assert found["inotify"].startswith("OK") and found["disk"].startswith(("OK", "WARN"))
    assert result.stderr == ""


def test_healthy_openai_compatible_setup(llama: Server, tmp_path: Path) -> None:
    result = doctor(
        "--upstream",
        llama.url,
        "--upstream-api",
        "openai",
        "--model",
        "smollm2",
        "--db",
        str(tmp_path / "i.db"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert found["upstream"].startswith("OK") and "OpenAI-compatible" in found["upstream"]
    assert found["model"].startswith("OK")
    assert found["model capabilities"].startswith("OK") and "2048 tokens" in found["model capabilities"]
    assert found["index"].startswith("WARN") and "ragproxy index" in found["index"]
    assert not (tmp_path / "i.db").exists()  # the doctor creates nothing


def test_ollama_behind_openai_setting_is_a_warning(ollama: Server, tmp_path: Path) -> None:
    result = doctor("--upstream", ollama.url, "--upstream-api", "openai", "--db", str(tmp_path / "i.db"))
    assert lines(result)["upstream"].startswith("WARN")
    assert "--upstream-api ollama" in lines(result)["upstream"]


def test_unreachable_upstream(tmp_path: Path) -> None:
    result = doctor("--upstream", f"http://127.0.0.1:{free_port()}", "--db", str(tmp_path / "i.db"))
    assert result.returncode == 1
    line = lines(result)["upstream"]
    assert line.startswith("FAIL") and "does not answer" in line and "— start the model server" in line


def test_missing_model(ollama: Server, tmp_path: Path) -> None:
    result = doctor("--upstream", ollama.url, "--model", "nosuch:7b", "--db", str(tmp_path / "i.db"))
    assert result.returncode == 1
    line = lines(result)["model"]
    assert line.startswith("FAIL") and "'nosuch:7b' is not on the upstream" in line
    assert "ollama pull nosuch:7b" in line and CHAT_MODEL in line


def test_missing_docs_folder(ollama: Server, docs_index: tuple[Path, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = doctor(*healthy_ollama(ollama, docs_index), "--docs", str(missing))
    assert result.returncode == 1
    assert lines(result)[f"docs {missing}"].startswith(f"FAIL  docs {missing}: not a directory — ")


def test_corrupt_database(ollama: Server, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    db.write_bytes(b"not a database, just garbage " * 200)
    result = doctor("--upstream", ollama.url, "--model", CHAT_MODEL, "--db", str(db))
    assert result.returncode == 1
    line = lines(result)["index"]
    assert line.startswith("FAIL") and "file is not a database" in line and "ragproxy index" in line
    assert "Traceback" not in result.stderr


def test_network_address_without_keys(ollama: Server, tmp_path: Path) -> None:
    args = (
        "--upstream",
        ollama.url,
        "--model",
        CHAT_MODEL,
        "--db",
        str(tmp_path / "i.db"),
        "--host",
        "0.0.0.0",
    )
    result = doctor(*args)
    assert result.returncode == 1
    assert lines(result)["access"].startswith("FAIL") and "--api-key" in lines(result)["access"]
    with_key = doctor(*args, "--api-key", "k-123")
    assert lines(with_key)["access"].startswith("OK") and with_key.returncode == 0, with_key.stdout


def test_port_taken_by_ragproxy(rag_proxy: str, ollama: Server, docs_index: tuple[Path, Path]) -> None:
    port = rag_proxy.rpartition(":")[2]
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "doctor", *healthy_ollama(ollama, docs_index), "--port", port],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lines(result)["port"].startswith("WARN") and "a ragproxy already running" in result.stdout


def test_json(tmp_path: Path) -> None:
    result = doctor("--upstream", f"http://127.0.0.1:{free_port()}", "--db", str(tmp_path / "i.db"), "--json")
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    assert {tuple(sorted(f)) for f in findings} == {("check", "detail", "fix", "status")}
    assert {"check": "upstream", "status": "FAIL"}.items() <= findings[0].items()


@pytest.mark.parametrize(("limit", "status"), [("1000000", "OK"), ("3", "WARN"), ("2", "FAIL")])
def test_inotify_limit(tmp_path: Path, limit: str, status: str) -> None:
    for name in ("a", "b"):
        (tmp_path / "docs" / name).mkdir(parents=True)
    (tmp_path / "limit").write_text(limit + "\n")
    finding = check_inotify(Settings(docs=(str(tmp_path / "docs"),)), tmp_path / "limit")
    assert finding.status == status and "3 directories" in finding.detail
    assert status == "OK" or "sysctl fs.inotify.max_user_watches=" in finding.fix


def test_a_key_limited_to_a_collection_the_index_lacks_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "more").mkdir()
    db = tmp_path / "i.db"
    service = IndexService(Settings(db=str(db)))
    try:
        service.add_folders([("notes", tmp_path / "notes")])
    finally:
        service.close()
    base = (
        "--upstream",
        f"http://127.0.0.1:{free_port()}",
        "--db",
        str(db),
        "--docs",
        f"more={tmp_path / 'more'}",
    )
    # 'sk-p@ssword' is read as the key 'sk-p' limited to a collection 'ssword'
    result = doctor(*base, "--api-key", "k-1234@notes:more", "--api-key", "sk-p@ssword")
    (flagged,) = [line for line in result.stdout.splitlines() if "api keys:" in line]
    assert flagged.startswith("WARN") and "limited to 'ssword', which the index does not have" in flagged
    assert "ssword" not in flagged.partition("limited to")[0]  # the entry is shown redacted
    refused = doctor(*base, "--api-key", "sk-p@ss@notes")
    assert [line for line in refused.stdout.splitlines() if line.startswith("FAIL  api keys:")], (
        refused.stdout
    )
    assert refused.returncode == 1
