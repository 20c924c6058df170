#!/usr/bin/env bash
# Make .venv hold the project and the extras named in $1 (comma-separated, may be empty).
# Re-installs only when pyproject.toml or the extras change, so a second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing daarion-city${extras:+[$extras]} into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import daarion_city" # fail loudly if the install did not work
  rm -f .venv/.installed-*
  touch "$stamp"
fi
