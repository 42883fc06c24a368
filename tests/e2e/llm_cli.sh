#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): Simon Willison's `llm` command-line tool (llm from
# PyPI), with ragproxy's /v1 as an OpenAI-compatible model (extra-openai-models.yaml in a fresh
# LLM_USER_PATH), answers a question only the indexed documents can answer.
#   --window 8192|32768  the upstream's context (default 8192; 32768 stretches the model with YaRN)
#   --tool NAME    offer one of llm's own tools (llm_time, llm_version); may repeat
#   --capture DIR  save the requests llm sent (headers and body) into DIR
# See llm_cli.py and common.py for what runs and what is checked; exits 1 if a criterion fails.
#
# Installs what is missing into a cache outside the clone (first run: under a minute):
#   $cache/venv-llm  a venv of its own with llm
# llm's output and ragproxy's log go to tests/e2e/output/llm-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
venv="$cache/venv-llm"
if [ ! -x "$venv/bin/llm" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet llm
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/llm_cli.py --llm "$venv/bin/llm" "$@"
