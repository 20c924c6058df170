#!/usr/bin/env bash
# Refresh the README's pictures (docs/screenshots/*.png) from the web client in Debian's headless
# Chromium. The test suite takes the same screenshots into tests/artifacts/screenshots (ignored by
# git), so running the tests never modifies tracked files; this command is the only one that does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,local-llm  # the same installation as scripts/test.sh: no reinstall between them
scripts/setup-browser.sh
CITY_SCREENSHOTS_DIR=docs/screenshots .venv/bin/pytest tests/system/test_web.py -q -k screenshots "$@"
echo "screenshots: docs/screenshots updated (git status shows which changed)" >&2
