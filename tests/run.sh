#!/usr/bin/env bash
# Installs everything the tests need (a virtualenv in .venv, the llama.cpp test upstream built
# once into ~/.cache/ragproxy-test) and runs the whole suite with its linters.
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash tests/upstream/build.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
