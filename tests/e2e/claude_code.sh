#!/usr/bin/env bash
# End-to-end check, run by hand (not in CI): the real Claude Code, in print mode (`claude -p`)
# with ANTHROPIC_BASE_URL pointing at ragproxy, answers a question only the indexed documents
# can answer; ragproxy retrieves for its /v1/messages requests, the passage and Claude Code's tools
# reach the upstream, the reply shows the sources, and Claude Code reaches nothing outside loopback. Whether the tiny test model
# (SmolLM2 135M) states the fact is reported, not checked. See claude_code.py.
#
# Installs what is missing into a cache outside the clone (first run: a minute or so):
#   $cache/npm-claude  the @anthropic-ai/claude-code npm package and its native binary
# Needs Node.js with npm. Arguments are passed to claude_code.py (--tools, --full, --only lean|tools|full,
# --window 8192|32768, --upstream ollama|openai, --capture DIR).
# Claude Code's output and logs, and ragproxy's log: tests/e2e/output/.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${RAGPROXY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-e2e}"
mkdir -p "$cache"

command -v npm >/dev/null || { echo "claude_code.sh: needs Node.js with npm" >&2; exit 1; }
claude="$cache/npm-claude/node_modules/.bin/claude"
if ! "$claude" --version >/dev/null 2>&1; then
  npm install --prefix "$cache/npm-claude" --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code
  # The package's postinstall puts the platform's native binary in place of a stub; npm may
  # have skipped install scripts.
  if ! "$claude" --version >/dev/null 2>&1; then
    (cd "$cache/npm-claude/node_modules/@anthropic-ai/claude-code" && node install.cjs)
  fi
fi

# ragproxy itself, and llama-server with its tiny model (tests/upstream/build.sh's cache).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import proxy' 2>/dev/null \
  || .venv/bin/python -m pip install --quiet -e '.[test]'
bash tests/upstream/build.sh >/dev/null

exec .venv/bin/python tests/e2e/claude_code.py --claude "$claude" "$@"
