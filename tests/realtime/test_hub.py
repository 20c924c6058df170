"""The hub's ordering guarantees: in ``seq`` order, no gap (healed from the store), no repeat.

The channel is driven directly here, with out-of-order and lost bus messages that a real run
produces only by chance; sockets are replaced by recorders of what would be queued."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from daarion_city.identity.principal import Principal
from daarion_city.pubsub import MemoryPubSub
from daarion_city.realtime.channel import batch_envelope, event_envelope, message_envelope
from daarion_city.realtime.hub import RoomHub


@dataclass(eq=False)
class Recorder:
    room_id: str = "r"
    user: Principal = field(default_factory=lambda: Principal("u_rec", "Rec"))
    seqs: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    writes: list[list[int]] = field(default_factory=list)  # the seqs of each write
    direct: None = None  # no transport: the channel's fast list never takes it (fast.py)

    def send_message(self, seq: int, frame: str, wire: bytes | None = None) -> None:
        self.seqs.append(seq)
        self.writes.append([seq])

    def send_run(self, run: list[tuple[int, str]], wires: list[bytes], joined: bytes) -> bool:
        assert joined == b"".join(wires)
        assert len(wires) == len(run)
        self.seqs += [seq for seq, _ in run]
        self.writes.append([seq for seq, _ in run])
        return True

    def send_event(self, frame: str, wire: bytes | None = None) -> None:
        self.events.append(frame)


class Store:
    """Committed messages, as the database would return them."""

    def __init__(self) -> None:
        self.frames: dict[int, str] = {}
        self.loads = 0

    async def load_frames(self, room_id: str, after: int, limit: int) -> list[tuple[int, str]]:
        self.loads += 1
        return [(s, self.frames[s]) for s in sorted(self.frames) if s > after][:limit]

    async def last_seq(self, room_id: str) -> int:
        return max(self.frames, default=0)


async def turn() -> None:
    """One event-loop turn: a channel drains what the bus brought once per turn."""
    await asyncio.sleep(0)


async def make_hub(store: Store, grace: float = 0.05) -> tuple[RoomHub, MemoryPubSub]:
    bus = MemoryPubSub()
    hub = RoomHub(bus, load_frames=store.load_frames, load_last_seq=store.last_seq, gap_grace=grace)
    return hub, bus


async def test_out_of_order_messages_are_delivered_in_order() -> None:
    store = Store()
    hub, bus = await make_hub(store, grace=5.0)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    for seq in (2, 3, 1, 1, 2, 4):
        store.frames[seq] = f"f{seq}"
        await bus.publish("room:r", message_envelope(seq, f"f{seq}"))
        await turn()
    assert rec.seqs == [1, 2, 3, 4]
    assert store.loads == 0  # nothing was missing for long: no database read
    await hub.close()


async def test_a_batch_is_delivered_in_order_in_one_write_per_socket() -> None:
    store = Store()
    hub, bus = await make_hub(store, grace=5.0)
    a, b = Recorder(), Recorder(user=Principal("u_b", "B"))
    await hub.attach(a)  # type: ignore[arg-type]
    await hub.attach(b)  # type: ignore[arg-type]
    frames = [(seq, f"f{seq}\n\u00e9") for seq in (1, 2, 3)]  # any text survives the envelope
    store.frames.update(dict(frames))
    await bus.publish("room:r", batch_envelope(frames))
    await turn()
    for rec in (a, b):
        assert rec.seqs == [1, 2, 3]
        assert rec.writes == [[1, 2, 3]]
    assert hub.delivered == 6
    await hub.close()


async def test_a_batch_after_a_gap_waits_and_goes_out_with_what_fills_it() -> None:
    store = Store()
    hub, bus = await make_hub(store, grace=5.0)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    store.frames.update({s: f"f{s}" for s in range(1, 6)})
    await bus.publish("room:r", batch_envelope([(2, "f2"), (3, "f3")]))  # 1 is late
    await turn()
    assert rec.seqs == []
    await bus.publish("room:r", batch_envelope([(1, "f1"), (2, "f2")]))  # 2 is a repeat
    await turn()
    await bus.publish("room:r", batch_envelope([(3, "f3"), (4, "f4"), (5, "f5")]))
    await turn()
    assert rec.seqs == [1, 2, 3, 4, 5]
    assert rec.writes == [[1, 2, 3], [4, 5]]
    assert store.loads == 0
    await hub.close()


async def test_messages_arriving_in_one_turn_share_a_write_and_events_keep_their_place() -> None:
    """What the bus brings while the loop is busy goes out together; an event published after
    a message is never delivered before it."""
    store = Store()
    hub, bus = await make_hub(store, grace=5.0)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    order: list[str] = []
    rec.send_event = lambda frame, wire=None: order.append(f"event after {rec.seqs}")  # type: ignore[method-assign]
    for seq in (1, 2, 3):
        store.frames[seq] = f"f{seq}"
        await bus.publish("room:r", message_envelope(seq, f"f{seq}"))
    assert rec.seqs == []  # not yet: the loop has not turned
    await turn()
    assert rec.writes == [[1, 2, 3]]
    store.frames[4] = "f4"
    await bus.publish("room:r", message_envelope(4, "f4"))
    await bus.publish("room:r", event_envelope('{"event": "room.typing"}', None))
    assert order == ["event after [1, 2, 3, 4]"]
    await turn()
    assert rec.writes == [[1, 2, 3], [4]]
    await hub.close()


async def test_a_lost_message_is_healed_from_the_store() -> None:
    store = Store()
    hub, bus = await make_hub(store)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    for seq in (1, 2, 3):
        store.frames[seq] = f"f{seq}"
    await bus.publish("room:r", message_envelope(1, "f1"))
    await bus.publish("room:r", message_envelope(3, "f3"))  # 2 was lost on the bus
    await turn()
    assert rec.seqs == [1]
    await asyncio.sleep(0.3)
    assert rec.seqs == [1, 2, 3]
    assert store.loads >= 1
    await hub.close()


async def test_heal_all_catches_up_past_the_last_message_seen() -> None:
    store = Store()
    hub, _ = await make_hub(store)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    for seq in (1, 2, 3):  # committed while the bus was down: nothing published
        store.frames[seq] = f"f{seq}"
    await hub.heal_all()
    assert rec.seqs == [1, 2, 3]
    await hub.close()


async def test_channel_starts_after_the_last_committed_message() -> None:
    store = Store()
    store.frames.update({1: "f1", 2: "f2"})
    hub, bus = await make_hub(store)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    await bus.publish("room:r", message_envelope(2, "f2"))  # older than the channel: dropped
    store.frames[3] = "f3"
    await bus.publish("room:r", message_envelope(3, "f3"))
    await turn()
    assert rec.seqs == [3]
    hub.detach(rec)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert hub.connection_count == 0
    await hub.close()


async def test_a_heal_announcement_brings_the_tail_that_was_never_published() -> None:
    store = Store()
    hub, bus = await make_hub(store)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    store.frames.update({1: "f1", 2: "f2"})  # committed while the publisher's bus was down
    from daarion_city.realtime.channel import heal_envelope

    await bus.publish("room:r", heal_envelope(2))
    await asyncio.sleep(0.1)
    assert rec.seqs == [1, 2]
    await hub.close()


async def test_failed_publishes_are_announced_when_the_bus_is_back() -> None:
    class FlakyBus(MemoryPubSub):
        down = True

        async def publish(self, channel: str, data: bytes) -> None:
            if self.down:
                raise ConnectionError("down")
            await super().publish(channel, data)

    store = Store()
    bus = FlakyBus()
    publisher = RoomHub(bus, load_frames=store.load_frames, load_last_seq=store.last_seq)
    subscriber = RoomHub(bus, load_frames=store.load_frames, load_last_seq=store.last_seq)
    rec = Recorder()
    bus.down = False
    await subscriber.attach(rec)  # type: ignore[arg-type]
    bus.down = True
    store.frames[1] = "f1"
    with contextlib.suppress(ConnectionError):
        await publisher.publish_message("r", 1, "f1")
    bus.down = False
    await publisher.heal_all()  # what the bus's reconnect listener runs
    await asyncio.sleep(0.1)
    assert rec.seqs == [1]
    await publisher.close()
    await subscriber.close()


async def test_reconcile_catches_a_channel_left_behind() -> None:
    store = Store()
    hub, _ = await make_hub(store)
    rec = Recorder()
    await hub.attach(rec)  # type: ignore[arg-type]
    store.frames.update({1: "f1"})  # the publisher died before publishing
    await hub.reconcile()
    await asyncio.sleep(0.1)
    assert rec.seqs == [1]
    await hub.close()
