#!/usr/bin/env bash
# Install what the tests need, start PostgreSQL and Redis if they are down, then run the linters,
# the type checker and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,local-llm
scripts/setup-synapse.sh
scripts/setup-browser.sh
scripts/services.sh
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy --strict" >&2
.venv/bin/mypy
echo "== lint-imports (the import contract in pyproject.toml)" >&2
.venv/bin/lint-imports --no-cache
echo "== pytest" >&2
.venv/bin/pytest "$@"
