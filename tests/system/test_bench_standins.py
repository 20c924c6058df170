"""The benchmarks' stand-ins speak the service's shapes: the raw broadcast baseline sends a
``room.message`` whose message has every field of the service's Message (so a delivery carries as
many bytes as the service's), and the framework floors answer a post with one (FastAPI checks it
against the response model: a floor missing a field answered 500 to every post, and the suite's
post scenario failed). Real processes, started as ``bench.suite`` starts them."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from bench.loadgen import token
from bench.suite import start_baseline, start_floor
from websockets.asyncio.client import connect

from daarion_city.rooms.schemas import Message


def assert_message_shape(message: dict[str, object]) -> None:
    assert set(message) == set(Message.model_fields)
    Message.model_validate(message)


async def test_the_baseline_broadcasts_the_services_message_shape() -> None:
    proc, ws_port, publish_port = start_baseline()
    try:
        async with connect(f"ws://127.0.0.1:{ws_port}/ws/city/rooms/plaza") as ws:
            state = orjson.loads(await ws.recv())
            assert state["event"] == "room.state"
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{publish_port}/publish/plaza", json={"body": "hello"}
                )
            assert answer.status_code == 201
            frame = orjson.loads(await ws.recv())
        assert frame["event"] == "room.message"
        assert frame["message"]["body"] == "hello"
        assert_message_shape(frame["message"])
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("kind", ["fastapi", "asgi"])
async def test_the_floors_answer_a_post_with_the_services_message_shape(kind: str) -> None:
    proc, port = start_floor(kind)
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"http://127.0.0.1:{port}/city/rooms/science/messages",
                json={"body": "hello", "client_msg_id": "c1"},
                headers={"Authorization": f"Bearer {token('u_poster')}"},
            )
        assert answer.status_code == 201, answer.text
        message = answer.json()
        assert (message["body"], message["client_msg_id"]) == ("hello", "c1")
        assert_message_shape(message)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_rooms_floor_fans_a_post_out_to_its_rooms_sockets_only() -> None:
    proc, port = start_floor("rooms")
    try:
        base = f"ws://127.0.0.1:{port}/ws/city/rooms"
        async with connect(f"{base}/plaza") as here, connect(f"{base}/garden") as there:
            for ws in (here, there):
                assert orjson.loads(await ws.recv())["event"] == "room.state"
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/city/rooms/plaza/messages",
                    json={"body": "hello"},
                    headers={"Authorization": f"Bearer {token('u_poster')}"},
                )
            assert answer.status_code == 201, answer.text
            frame = orjson.loads(await here.recv())
            assert frame["event"] == "room.message"
            assert frame["message"] == answer.json()
            assert_message_shape(frame["message"])
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(there.recv(), 0.3)
    finally:
        proc.terminate()
        proc.wait(10)
