#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): the real Codex CLI, with ragproxy as its model
# provider over the Responses API, answers a question only the indexed documents can answer,
# through `codex exec`. See codex.py for what runs and what is checked.
#
# Passes when codex exits 0 with its turn completed, ragproxy logged the POST /v1/responses with
# passages sent (rag_sources >= 1), the fact and Codex's tools reached the upstream, the answer
# shows the sources, and (with an Ollama upstream) num_ctx held the prompt. Whether the tiny test
# model (SmolLM2 135M) states the fact is not a criterion: it is reported only. Arguments are passed
# to codex.py (--window 8192|32768, --upstream ollama|openai, --capture DIR, --timeout S).
#
# Installs what is missing into a cache outside the clone (first run: under a minute):
#   $cache/npm   the @openai/codex package (npm install --prefix), reused on later runs
# Codex's events and stderr and ragproxy's log go to tests/e2e/output/.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
codex="$cache/npm/node_modules/.bin/codex"

if [ ! -x "$codex" ]; then
  command -v npm >/dev/null || { echo "codex.sh: needs npm (Node.js 16 or later)" >&2; exit 1; }
  npm install --prefix "$cache/npm" --no-audit --no-fund --loglevel=error @openai/codex
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/codex.py --codex "$codex" "$@"
