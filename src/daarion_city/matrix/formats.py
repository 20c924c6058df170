"""Message bodies between the city and Matrix (SPEC 6b, 12): a city ``<@id>`` mention becomes a
``matrix.to`` pill (the puppet's id for a city user, the Matrix id itself for a Matrix user) in
``formatted_body``, with the name in the plain ``body`` and the id in ``m.mentions``; a pill in
a Matrix message becomes ``<@id>`` again. Replies' fallbacks (``<mx-reply>`` and the quoted
lines of the plain body) are dropped: the city keeps the reply as ``reply_to_seq``."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from daarion_city.core.validation import MENTION
from daarion_city.matrix.ids import MXID, city_user_of, puppet_id

HTML = "org.matrix.custom.html"
_PILL = re.compile(
    r"<a\s+href=[\"']https://matrix\.to/#/([^\"'?]+)[^\"']*[\"'][^>]*>.*?</a>",
    re.IGNORECASE | re.DOTALL,
)
_REPLY = re.compile(r"<mx-reply>.*?</mx-reply>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_HELD = re.compile("\ue000(\\d+)\ue001")


def matrix_id_of(mentioned: str, server_name: str) -> str:
    """The Matrix user a city mention names: a Matrix id as it is, a city user's puppet."""
    return mentioned if mentioned.startswith("@") else puppet_id(mentioned, server_name)


def to_matrix(body: str, names: Mapping[str, str], server_name: str) -> dict[str, Any]:
    """An ``m.text`` content for a city body; ``names`` the display names of mentioned ids."""
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    mentioned = list(dict.fromkeys(MENTION.findall(body))) if "<@" in body else []
    if not mentioned:
        content["m.mentions"] = {}
        return content
    plain: list[str] = []
    rich: list[str] = []
    at = 0
    for match in MENTION.finditer(body):
        text = body[at : match.start()]
        plain.append(text)
        rich.append(html.escape(text))
        who = match.group(1)
        name = names.get(who) or who
        plain.append(name)
        url = f"https://matrix.to/#/{matrix_id_of(who, server_name)}"
        rich.append(f'<a href="{html.escape(url)}">{html.escape(name)}</a>')
        at = match.end()
    plain.append(body[at:])
    rich.append(html.escape(body[at:]))
    content["body"] = "".join(plain)
    content["format"] = HTML
    content["formatted_body"] = "".join(rich).replace("\n", "<br>")
    content["m.mentions"] = {"user_ids": [matrix_id_of(m, server_name) for m in mentioned]}
    return content


def _city_mention(matrix_user_id: str, server_name: str) -> str:
    city = city_user_of(matrix_user_id, server_name)
    return f"<@{city if city is not None else matrix_user_id}>"


def _pill(match: re.Match[str], server_name: str) -> str:
    target = unquote(match.group(1))
    if not MXID.fullmatch(target):
        return _TAG.sub("", match.group(0))  # a link to a room or an event: its text
    return _city_mention(target, server_name)


def from_matrix(content: Mapping[str, Any], server_name: str) -> str | None:
    """The city body of an ``m.text``/``m.notice``/``m.emote`` content (an emote as
    ``* text``), or None when it has no text."""
    body = content.get("body")
    formatted = content.get("formatted_body")
    if content.get("format") == HTML and isinstance(formatted, str) and formatted.strip():
        pills: list[str] = []

        def hold(match: re.Match[str]) -> str:  # kept aside while the tags are stripped
            pills.append(_pill(match, server_name))
            return f"\ue000{len(pills) - 1}\ue001"

        text = _PILL.sub(hold, _REPLY.sub("", formatted))
        text = html.unescape(_TAG.sub("", _BREAK.sub("\n", text)))
        text = _HELD.sub(lambda m: _held(m, pills), text)
    elif isinstance(body, str):
        text = body
        relates = content.get("m.relates_to")
        if isinstance(relates, dict) and "m.in_reply_to" in relates:
            text = _drop_quoted_fallback(text)
    else:
        return None
    text = text.strip()
    if not text:
        return None
    return f"* {text}" if content.get("msgtype") == "m.emote" else text


def _held(match: re.Match[str], pills: list[str]) -> str:
    i = int(match.group(1))
    return pills[i] if i < len(pills) else match.group(0)


def _drop_quoted_fallback(body: str) -> str:
    """A reply's plain body without the quoted lines (``> ...``) it starts with."""
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i and i < len(lines) and not lines[i].strip():
        return "\n".join(lines[i + 1 :])
    return body
