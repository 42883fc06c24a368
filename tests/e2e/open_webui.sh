#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): a real Open WebUI with its default chat settings,
# driven in headless Chromium, gets context from ragproxy and shows the sources, once over an
# OpenAI connection and once over an Ollama connection. See open_webui.py.
#
# Installs what is missing into a cache outside the clone (first run: several minutes):
#   $cache/venv        Python 3.11 with open-webui (its own dependencies, kept apart from ragproxy's)
#   $cache/playwright  the Playwright package alone, imported by the repo's .venv (which runs
#                      ragproxy in-process); its bundled browsers are never downloaded
#   /usr/bin/chromium  Debian's Chromium, which Playwright drives instead
# Arguments are passed to open_webui.py (e.g. --only openai). Screenshots: tests/e2e/output/.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
mkdir -p "$cache"

python311="$(command -v python3.11 || command -v python3)"
"$python311" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "open_webui.sh: needs Python 3.11" >&2; exit 1; }

if [ ! -x "$cache/venv/bin/open-webui" ]; then
  [ -x "$cache/venv/bin/python" ] || "$python311" -m venv "$cache/venv"
  # torch first, pinned: that CPU wheel is at hand, while open-webui's unpinned torch would
  # pull gigabytes of CUDA libraries.
  "$cache/venv/bin/pip" install --quiet torch==2.13.0
  "$cache/venv/bin/pip" install --quiet open-webui
fi

if [ ! -d "$cache/playwright/playwright" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --target "$cache/playwright.part" playwright
  rm -rf "$cache/playwright"
  mv "$cache/playwright.part" "$cache/playwright"
fi

if [ ! -x /usr/bin/chromium ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

PYTHONPATH="$cache/playwright" exec .venv/bin/python tests/e2e/open_webui.py \
  --open-webui "$cache/venv/bin/open-webui" "$@"
