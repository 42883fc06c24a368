from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.settings import Settings, load_settings, setting_fields

ROOT = Path(__file__).parent.parent


def test_defaults() -> None:
    settings = load_settings(env={})
    assert (settings.host, settings.port, settings.upstream, settings.upstream_api, settings.model) == (
        "127.0.0.1",
        11435,
        "http://127.0.0.1:11434",
        "ollama",
        "deepseek-r1:1.5b",
    )


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 9001\nmodel = "from-file"\nupstream-api = "openai"\nidle_timeout = 7\n')
    env = {"RAGPROXY_PORT": "9002", "RAGPROXY_MODEL": "from-env"}
    settings = load_settings(cli={"port": 9003}, env=env, config_file=config)
    assert settings.port == 9003  # flag beats env and file
    assert settings.model == "from-env"  # env beats file
    assert settings.upstream_api == "openai"  # file beats default
    assert settings.idle_timeout == 7.0
    assert settings.host == "127.0.0.1"  # default


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("log_content = true\n")
    assert load_settings(env={"RAGPROXY_CONFIG": str(config)}).log_content is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RAGPROXY_PORT": "eleven"}, "port must be a number"),
        ({"RAGPROXY_UPSTREAM_API": "grpc"}, "upstream_api must be one of"),
        ({"RAGPROXY_UPSTREAM": "file:///etc/passwd"}, "http:// or https://"),
        ({"RAGPROXY_IDLE_TIMEOUT": "0"}, "idle_timeout must be positive"),
        ({"RAGPROXY_LOG_CONTENT": "maybe"}, "true or false"),
    ],
)
def test_bad_values_are_refused_with_the_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("upstream_url = 'http://x'\n")
    with pytest.raises(ConfigError, match="unknown setting 'upstream_url'"):
        load_settings(env={}, config_file=config)


def test_bad_flag_exits_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--upstream", "ftp://x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "upstream must be an http:// or https:// URL" in result.stderr


@pytest.mark.parametrize(
    ("db", "said"),
    [
        (
            "sqlite:///index.db",
            "db must be a SQLite file's path (e.g. --db ~/ragproxy/index.db) or a postgresql",
        ),
        ("mysql://rag:hunter2@db.example/rag", "got a mysql:// URL"),
        ("postgresql://rag:hunter2@127.0.0.1:9/rag", "cannot connect to the index database"),
    ],
)
def test_database_urls_other_than_postgresql_are_refused_and_create_nothing(
    tmp_path: Path, db: str, said: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--db", db],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert said in result.stderr and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr  # a URL's password is not echoed
    assert list(tmp_path.iterdir()) == []  # no folder named after the URL


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help_describes_every_setting(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *argv], capture_output=True, text=True, cwd=ROOT, check=True
    )
    for f in setting_fields():
        assert "--" + f.name.replace("_", "-") in result.stdout
        assert "RAGPROXY_" + f.name.upper() in result.stdout


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for f in dataclasses.fields(Settings):
        assert f"`--{f.name.replace('_', '-')}`" in readme, f.name


def test_sample_config_holds_every_setting_at_its_default(tmp_path: Path) -> None:
    import tomllib

    from proxy.settings import sample_config

    sample = ROOT / "config.sample.toml"
    assert sample.read_text() == sample_config(), "regenerate: ragproxy sample-config > config.sample.toml"
    keys = set(tomllib.loads(sample.read_text()))
    names = {f.name for f in setting_fields()}
    assert keys - names == set(), "keys in the sample that are no setting"
    assert names - keys == set(), "settings missing from the sample"
    for f in setting_fields():
        assert f.metadata["help"].split()[0] in sample.read_text()
    assert load_settings(env={}, config_file=sample) == Settings()
