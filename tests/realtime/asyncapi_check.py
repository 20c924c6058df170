"""Checking frames against the served AsyncAPI document: the official AsyncAPI 3.0.0 JSON Schema
(vendored, ``asyncapi/README.md``), and the frames both ways validated against the document's
message payloads with ``jsonschema``, each message and event counted as it is seen."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from tests.support import Socket

OFFICIAL = Path(__file__).parent / "asyncapi" / "3.0.0.json"
OFFICIAL_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
DOC_URI = "urn:daarion-city:asyncapi"


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # every schema is bundled: nothing is downloaded


def official_validator() -> Draft7Validator:
    raw = OFFICIAL.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == OFFICIAL_SHA256, "the vendored schema was changed"
    return Draft7Validator(json.loads(raw), registry=Registry(retrieve=_offline))


class Frames:
    """The document's messages per channel and direction (``receive``: what the client sends;
    ``send``: what the server sends), and what the sockets were seen to carry."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry(retrieve=_offline).with_resource(
            DOC_URI, DRAFT7.create_resource(doc)
        )
        self.seen: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        self._validators: dict[str, Draft7Validator] = {}

    def names(self, channel: str, action: str) -> list[str]:
        (op,) = [
            o
            for o in self.doc["operations"].values()
            if o["channel"]["$ref"] == f"#/channels/{channel}" and o["action"] == action
        ]
        return [m["$ref"].rsplit("/", 1)[1] for m in op["messages"]]

    def validator(self, name: str) -> Draft7Validator:
        if name not in self._validators:
            ref = {"$ref": f"{DOC_URI}#/components/messages/{name}/payload"}
            self._validators[name] = Draft7Validator(ref, registry=self.registry)
        return self._validators[name]

    def matches(self, channel: str, action: str, frame: Any) -> list[str]:
        return [n for n in self.names(channel, action) if self.validator(n).is_valid(frame)]

    def check(self, channel: str, action: str, frame: Any) -> str:
        """The one message of the channel's ``action`` that ``frame`` is; noted as seen."""
        found = self.matches(channel, action, frame)
        if len(found) != 1:
            why = {
                n: [e.message for e in self.validator(n).iter_errors(frame)][:3]
                for n in self.names(channel, action)
                if n.lower().startswith(str(frame.get("event", "")).split(".")[0][:4])
            }
            raise AssertionError(f"{channel} {action}: {frame} is {found or 'no message'}: {why}")
        self.seen[(channel, action)].add((found[0], frame["event"]))
        return found[0]

    def events(self, name: str) -> set[str]:
        """The ``event`` values a message's payload takes."""
        payload = self.doc["components"]["messages"][name]["payload"]
        ref = payload.get("$ref") or payload["allOf"][0]["$ref"]
        event = self.doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["event"]
        return {event["const"]} if "const" in event else set(event["enum"])

    def unseen(self) -> list[tuple[str, str, str, str]]:
        """Every (channel, action, message, event) of the document no socket carried."""
        return [
            (channel, action, name, event)
            for channel in self.doc["channels"]
            for action in ("receive", "send")
            for name in self.names(channel, action)
            for event in sorted(self.events(name))
            if (name, event) not in self.seen[(channel, action)]
        ]


class Checked:
    """A socket whose every frame, both ways, is checked against the document."""

    def __init__(self, ws: Socket, frames: Frames, channel: str) -> None:
        self.ws, self.frames, self.channel = ws, frames, channel

    async def send(self, frame: dict[str, Any]) -> None:
        self.frames.check(self.channel, "receive", frame)
        await self.ws.send(frame)

    async def send_invalid(self, raw: str) -> None:
        """A frame the server refuses: no client message of the document takes it either."""
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            frame = raw
        assert self.frames.matches(self.channel, "receive", frame) == [], raw
        await self.ws.send(raw)

    async def expect(self, event: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``event`` matching ``match``; every frame read is checked."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.recv(timeout)
                self.frames.check(self.channel, "send", frame)
                if frame["event"] == event and all(frame.get(k) == v for k, v in match.items()):
                    return frame
