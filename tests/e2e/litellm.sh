#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): LiteLLM as a library (litellm from PyPI), in a short
# program calling litellm.completion() against ragproxy, answers a question only the indexed
# documents can answer.
#   --mode openai  (default) model="openai/<model>", api_base=<ragproxy>/v1
#   --mode ollama  model="ollama_chat/<model>", api_base=<ragproxy>
#   --window 8192|32768  the upstream's context (default 8192; 32768 stretches the model with YaRN)
#   --stream       ask for a streamed reply
#   --tools        offer the model one function (its name must reach the upstream)
#   --capture DIR  save the requests LiteLLM sent (headers and body) into DIR
# See litellm.py and common.py for what runs and what is checked; exits 1 if a criterion fails.
#
# Installs what is missing into a cache outside the clone (first run: a minute or two):
#   $cache/venv-litellm  a venv of its own with litellm
# The program's output and ragproxy's log go to tests/e2e/output/litellm-<mode>-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
venv="$cache/venv-litellm"
if ! "$venv/bin/python" -c 'import litellm' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet litellm
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/litellm.py --python "$venv/bin/python" "$@"
