"""The browser client: static files served at ``/`` by the city service (no build step)."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
