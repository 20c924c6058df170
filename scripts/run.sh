#!/usr/bin/env bash
# Run the service: SQLite and in-process presence by default; DATABASE_URL / REDIS_URL switch to
# PostgreSQL and Redis. Extra arguments go to `daarion-city serve` (e.g. --port 7001 --only city).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "${CITY_EXTRAS:-}"
exec .venv/bin/daarion-city serve "$@"
