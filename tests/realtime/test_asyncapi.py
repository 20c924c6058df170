"""``GET /asyncapi.json`` (SPEC section 11): an AsyncAPI 3.0.0 document of both sockets, fetched
from a running server, valid against the official AsyncAPI 3.0.0 JSON Schema, its references
whole, every payload a valid JSON Schema, and every close code of ``realtime/closes.py`` in it.
(That every frame the sockets carry matches it: ``test_asyncapi_frames.py``.)"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

from daarion_city.realtime import closes
from tests.realtime.asyncapi_check import Frames, official_validator
from tests.support import Api


async def fetch(api: Api) -> dict[str, Any]:
    r = await api.http.get("/asyncapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


async def test_the_document_is_valid_asyncapi_3(api: Api) -> None:
    doc = await fetch(api)
    validator = official_validator()
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert doc["asyncapi"] == "3.0.0"
    # The validator is not a rubber stamp: documents broken in a few ways are refused.
    for path, value in [
        (("operations", "roomSend", "action"), "publish"),
        (("channels", "room", "bindings", "ws", "method"), "PUT"),
        (("components", "messages", "Ping", "unknown"), 1),
        (("components", "schemas", "Message", "type"), 5),
    ]:
        broken = copy.deepcopy(doc)
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert not validator.is_valid(broken), path


async def test_its_references_are_whole_and_its_payloads_are_json_schemas(api: Api) -> None:
    doc = await fetch(api)
    for ref in refs(doc):  # the AsyncAPI schema does not follow them: every one names something
        assert isinstance(pointer(doc, ref), dict), ref
    for name, schema in doc["components"]["schemas"].items():
        Draft7Validator.check_schema(schema)  # AsyncAPI's schema format is a Draft 7 superset
        if "properties" in schema:
            assert schema["type"] == "object", name
    for message in doc["components"]["messages"].values():
        Draft7Validator.check_schema(message["payload"])
    # Both sockets, where the routes serve them, with their query and path parameters.
    room, presence = doc["channels"]["room"], doc["channels"]["presence"]
    assert room["address"] == "/ws/city/rooms/{room}"
    assert presence["address"] == "/ws/city/presence"
    assert set(room["parameters"]) == {"room"}
    assert set(room["bindings"]["ws"]["query"]["properties"]) == {"token", "since_seq"}
    assert set(presence["bindings"]["ws"]["query"]["properties"]) == {"token"}
    # Every message of a channel is in one of its operations, each way.
    for key, channel in doc["channels"].items():
        ops = [o for o in doc["operations"].values() if o["channel"]["$ref"] == f"#/channels/{key}"]
        assert sorted(o["action"] for o in ops) == ["receive", "send"]
        in_ops = [m["$ref"].rsplit("/", 1)[1] for o in ops for m in o["messages"]]
        assert sorted(in_ops) == sorted(channel["messages"])


async def test_every_close_code_is_in_the_document(api: Api) -> None:
    doc = await fetch(api)
    table = {c["code"]: c for c in doc["x-close-codes"]}
    constants = {v for k, v in vars(closes).items() if k.startswith("CLOSE_")}
    assert set(table) == set(closes.CLOSES) == constants
    for code, close in closes.CLOSES.items():
        assert table[code] == {
            "code": code,
            "meaning": close.meaning,
            "reconnect": close.reconnect,
            "advice": close.advice,
        }
    sent = set(doc["channels"]["room"]["x-close-codes"]) | set(
        doc["channels"]["presence"]["x-close-codes"]
    )
    assert sent == set(closes.CLOSES)
    assert {4400, 4404, 1013}.isdisjoint(doc["channels"]["presence"]["x-close-codes"])


def built_events() -> set[str]:
    """The events of the frames the source writes out as ``{"event": "name", ...}``."""
    src = Path(__file__).resolve().parents[2] / "src" / "daarion_city"
    return {
        m
        for path in src.rglob("*.py")
        for m in re.findall(r'"event": "([a-z_.]+)"', path.read_text(encoding="utf-8"))
    }


async def test_every_frame_the_source_builds_is_in_the_document(api: Api) -> None:
    """A new frame kind built as a dict (``{"event": "...", ...}``) without a model in the
    document fails here, before any socket test would have to produce it."""
    frames = Frames(await fetch(api))
    documented = {
        event
        for channel in frames.doc["channels"]
        for action in ("receive", "send")
        for name in frames.names(channel, action)
        for event in frames.events(name)
    }
    built = built_events()
    assert len(built) >= 12, built
    assert built <= documented, built - documented


async def test_the_error_frames_list_their_codes(api: Api) -> None:
    doc = await fetch(api)
    room_error = doc["components"]["messages"]["RoomError"]["payload"]["allOf"][1]
    presence_error = doc["components"]["messages"]["PresenceError"]["payload"]["allOf"][1]
    room = {c["const"] for c in room_error["properties"]["code"]["oneOf"]}
    presence = {c["const"] for c in presence_error["properties"]["code"]["oneOf"]}
    codec = {"invalid_json", "invalid_frame", "unknown_event", "unavailable", "unauthorized"}
    assert codec | {"rate_limited", "resync_required", "banned", "kicked", "suspended"} <= room
    assert codec | {"rate_limited", "suspended"} == presence


async def test_it_is_encoded_once_and_served_with_its_etag(api: Api) -> None:
    first = await api.http.get("/asyncapi.json")
    again = await api.http.get("/asyncapi.json")
    assert first.content == again.content
    tag = first.headers["etag"]
    assert again.headers["etag"] == tag
    r = await api.http.get("/asyncapi.json", headers={"If-None-Match": tag})
    assert (r.status_code, r.content) == (304, b"")
    assert (await api.http.get("/asyncapi.json", headers={"Authorization": "Bearer x"})).is_success
