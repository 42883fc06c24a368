#!/usr/bin/env bash
# Installs everything the tests need (a virtualenv in .venv, the llama.cpp test upstream built
# once into ~/.cache/ragproxy-test, systemd-analyze) and runs the whole suite with its linters.
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash tests/upstream/build.sh
# systemd-analyze checks the service unit (Debian package systemd; no running systemd needed).
if ! command -v systemd-analyze >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
