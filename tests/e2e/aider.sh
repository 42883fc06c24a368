#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): the real aider (aider-chat from PyPI), pointed at
# ragproxy, answers a question only the indexed documents can answer, with `aider --message`.
#   --mode openai  (default) --model openai/<model>, OPENAI_API_BASE=<ragproxy>/v1
#   --mode ollama  --model ollama_chat/<model>, OLLAMA_API_BASE=<ragproxy>
#   --window 8192|32768  the upstream's context (default 8192; 32768 stretches the model with YaRN)
#   --capture DIR  save the requests aider sent (headers and body) into DIR
# See aider.py and common.py for what runs and what is checked; exits 1 if a criterion fails.
#
# Installs what is missing into a cache outside the clone (first run: a few minutes):
#   $cache/venv-aider  a venv of its own with aider-chat (it pins its dependencies; Python 3.10-3.12)
# aider's output and ragproxy's log go to tests/e2e/output/aider-<mode>-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
venv="$cache/venv-aider"
if [ ! -x "$venv/bin/aider" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet aider-chat
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/aider.py --aider "$venv/bin/aider" "$@"
