"""The machine's limit for fan-out: a minimal broadcast server with no storage.

    .venv/bin/python -m bench.baseline --port 7999

Clients connect to ``ws://host:port/ws/city/rooms/{room}`` (any token is accepted) and get a
``room.state`` frame. ``POST /publish/{room}`` with a JSON body builds one WebSocket frame
``{"event": "room.message", "room_id", "message": <a Message with that body>}`` (the
service's Message shape, so a delivery carries as many bytes as the service's), serialises it
once, and writes the same bytes straight to every subscriber's transport: nothing is stored,
nothing is queued per socket, nothing is encoded per socket. The load generator measures the
service against it in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

ROOMS: dict[str, set[ServerConnection]] = defaultdict(set)


def frame_bytes(payload: bytes) -> bytes:
    """A server-to-client text frame (unmasked), ready to write to any transport."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


# A new message's v2 fields (SPEC 5b), as the service sends them; the floors use them too.
V2_FIELDS: dict[str, Any] = {
    "reply_to_seq": None,
    "mentions": [],
    "edited_at": None,
    "deleted": False,
    "deleted_by": None,
    "reactions": [],
}


def message_of(room: str, seq: int, body: dict[str, Any]) -> dict[str, Any]:
    """A Message of the service's shape (SPEC 2 and 5b: every field, v2's included), so a
    delivery carries as many bytes as the service's; ``body`` holds the post's fields."""
    return {
        "id": f"m_{seq:020d}",
        "room_id": f"room_city_{room}",
        "seq": seq,
        "author_user_id": "u_publisher",
        "author_agent_id": None,
        "username": "u_publisher",
        **body,
        "client_msg_id": None,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **V2_FIELDS,
    }


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else ""
    room = path.split("?")[0].rsplit("/", 1)[-1]
    ROOMS[room].add(ws)
    try:
        await ws.send(
            orjson.dumps({"event": "room.state", "room_id": room, "last_seq": 0}).decode()
        )
        async for _ in ws:
            pass
    finally:
        ROOMS[room].discard(ws)


async def publish_server(port: int) -> asyncio.Server:
    """A bare HTTP/1.1 keep-alive endpoint: ``POST /publish/{room}`` with a JSON body."""
    seq: dict[str, int] = defaultdict(int)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                room = lines[0].split(" ")[1].rsplit("/", 1)[-1]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = orjson.loads(await reader.readexactly(length)) if length else {}
                seq[room] += 1
                message = message_of(room, seq[room], body)
                data = frame_bytes(
                    orjson.dumps({"event": "room.message", "room_id": room, "message": message})
                )
                for conn in ROOMS.get(room, ()):
                    conn.transport.write(data)
                answer = orjson.dumps(message)
                writer.write(
                    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()

    return await asyncio.start_server(on_client, "127.0.0.1", port)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7999, help="WebSocket port")
    parser.add_argument("--publish-port", type=int, default=7998, help="HTTP publish port")
    args = parser.parse_args()
    publisher = await publish_server(args.publish_port)
    async with serve(handler, "127.0.0.1", args.port, compression=None, max_size=65536):
        print(f"baseline ready ws={args.port} publish={args.publish_port}", flush=True)
        async with publisher:
            await asyncio.Future()


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
