#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): Continue's CLI `cn`, with a config file naming
# ragproxy as an OpenAI-compatible model (/v1/chat/completions), answers a question only the
# indexed documents can answer, through `cn -p`. See continue_cli.py and chat_agents.py for what runs
# and what is checked.
#
#   bash tests/e2e/continue_cli.sh [--window 8192|32768] [--capture tests/data/clients]
#
# Installs what is missing into a cache outside the clone (first run: under a minute):
#   $cache/npm-continue   the @continuedev/cli package (its command: cn) (npm install --prefix), reused on later runs
# cn's output and ragproxy's log go to tests/e2e/output/continue-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
cn="$cache/npm-continue/node_modules/.bin/cn"

if [ ! -x "$cn" ]; then
  command -v npm >/dev/null || { echo "continue_cli.sh: needs npm (Node.js 18 or later)" >&2; exit 1; }
  npm install --prefix "$cache/npm-continue" --no-audit --no-fund --loglevel=error @continuedev/cli
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/continue_cli.py --cn "$cn" "$@"
