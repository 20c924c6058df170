#!/usr/bin/env bash
# A Synapse homeserver for the Matrix tests, in a virtualenv of its own (.venv-synapse), so its
# dependencies never mix with the service's. Installed once; later runs take a second.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv-synapse/bin/python ] || ! .venv-synapse/bin/python -c "import synapse" 2>/dev/null; then
  echo "setup: installing matrix-synapse into .venv-synapse" >&2
  "$python" -m venv .venv-synapse
  if ! .venv-synapse/bin/python -m pip install -q --disable-pip-version-check matrix-synapse \
      > .venv-synapse/pip.log 2>&1; then
    grep -v '^WARNING: Location' .venv-synapse/pip.log >&2 || true
    echo "setup: pip install matrix-synapse failed" >&2
    exit 1
  fi
fi
