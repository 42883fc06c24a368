#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): the real GitHub Copilot CLI, offline, with ragproxy
# as its own OpenAI-compatible provider (/v1/chat/completions), answers a question only the
# indexed documents can answer, through `copilot -p`. See copilot.py and chat_agents.py for what runs
# and what is checked.
#
#   bash tests/e2e/copilot.sh [--window 8192|32768] [--capture tests/data/clients]
#
# Installs what is missing into a cache outside the clone (first run: under a minute):
#   $cache/npm-copilot   the @github/copilot package (npm install --prefix), reused on later runs
# Copilot's output and logs and ragproxy's log go to tests/e2e/output/copilot-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
copilot="$cache/npm-copilot/node_modules/.bin/copilot"

if [ ! -x "$copilot" ]; then
  command -v npm >/dev/null || { echo "copilot.sh: needs npm (Node.js 18 or later)" >&2; exit 1; }
  npm install --prefix "$cache/npm-copilot" --no-audit --no-fund --loglevel=error @github/copilot
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/copilot.py --copilot "$copilot" "$@"
