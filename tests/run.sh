#!/usr/bin/env bash
# Installs everything the tests need (a virtualenv in .venv, the llama.cpp test upstream built
# once into ~/.cache/ragproxy-test, systemd-analyze, Debian's chromium for the status page's
# browser test, driven by the playwright package of the test extra, the fonts tests/test_ocr.py
# draws with) and runs the whole suite
# with its linters.
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash tests/upstream/build.sh
# systemd-analyze checks the service unit (Debian package systemd; no running systemd needed).
# chromium runs tests/test_ui_browser.py (Playwright drives it; `playwright install` is never run).
# DejaVu and WenQuanYi Micro Hei draw the English and Chinese text tests/test_ocr.py reads back.
missing=""
command -v systemd-analyze >/dev/null || missing="$missing systemd"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$missing fonts-dejavu-core"
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$missing fonts-wqy-microhei"
if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    # shellcheck disable=SC2086  # one word per package
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest --durations=15 "$@"
