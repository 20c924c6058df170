"""The socket policy holds together: the close-code table of ``realtime/closes.py``, the close
codes the domain errors carry, and section 11 of docs/API.md."""

from __future__ import annotations

import re
from pathlib import Path

from daarion_city.core import errors
from daarion_city.realtime.caps import TooManySockets
from daarion_city.realtime.closes import ABRUPT_CLOSES, CLOSES

API = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def _documented() -> dict[int, str]:
    """Section 11's rows: code -> what the client should do."""
    text = API.read_text("utf-8")
    section = text[text.index("## 11. WebSocket close codes") : text.index("## 12.")]
    rows = re.findall(r"^\| (\d{4}) \|.*\| ([^|]+) \|$", section, re.MULTILINE)
    return {int(code): advice.strip() for code, advice in rows}


def test_the_docs_list_the_close_codes_of_the_table_with_the_same_advice() -> None:
    assert _documented() == {code: close.advice for code, close in CLOSES.items()}


def test_every_close_code_a_domain_error_carries_is_in_the_table() -> None:
    kinds = [
        k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.CityError)
    ]
    for kind in [*kinds, TooManySockets]:
        assert kind.close_code in CLOSES, kind
    assert (errors.NotFound.close_code, errors.Unauthorized.close_code) == (4404, 4401)
    assert (errors.Unavailable.close_code, TooManySockets.close_code) == (1013, 4429)
    assert not ABRUPT_CLOSES & CLOSES.keys()  # reported for a dropped connection, never sent
