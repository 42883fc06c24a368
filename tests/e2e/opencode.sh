#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): the real opencode, with ragproxy as an
# OpenAI-compatible provider (/v1/chat/completions), answers a question only the indexed
# documents can answer, through `opencode run`. See opencode.py and chat_agents.py for what runs
# and what is checked.
#
#   bash tests/e2e/opencode.sh [--window 8192|32768] [--capture tests/data/clients]
#
# Installs what is missing into a cache outside the clone (first run: under a minute):
#   $cache/npm-opencode   the opencode-ai package (npm install --prefix), reused on later runs
# opencode's output and ragproxy's log go to tests/e2e/output/opencode-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
opencode="$cache/npm-opencode/node_modules/.bin/opencode"

if [ ! -x "$opencode" ]; then
  command -v npm >/dev/null || { echo "opencode.sh: needs npm (Node.js 18 or later)" >&2; exit 1; }
  npm install --prefix "$cache/npm-opencode" --no-audit --no-fund --loglevel=error opencode-ai
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/opencode.py --opencode "$opencode" "$@"
