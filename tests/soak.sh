#!/usr/bin/env bash
# The reliability suite's long mode, run by hand before a release (RELIABILITY.md records its
# figures): 200 kill -9 of an indexing process, a minute of mixed load on a live server, a minute
# of hostile load (with the model server restarted twice), and the hostile files and requests. Uses the virtualenv tests/run.sh makes. Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "no .venv here: run 'bash tests/run.sh' once first (it installs what the tests need)" >&2
    exit 1
fi

export RAGPROXY_KILLS="${RAGPROXY_KILLS:-200}"
export RAGPROXY_SOAK_SECONDS="${RAGPROXY_SOAK_SECONDS:-60}"
echo "long mode: RAGPROXY_KILLS=$RAGPROXY_KILLS RAGPROXY_SOAK_SECONDS=$RAGPROXY_SOAK_SECONDS"
.venv/bin/python -m pytest -s -q --durations=0 \
    tests/test_crash.py::test_kill_minus_nine_at_random_moments \
    tests/test_soak.py \
    tests/test_soak_hostile.py \
    tests/test_hostile_requests.py \
    tests/test_hostile.py \
    "$@"
