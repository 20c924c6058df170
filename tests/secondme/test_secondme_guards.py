"""The pure parts of Second Me's guards: the stop on a repeated line and the circuit breakers,
driven by a clock of the test's own."""

from __future__ import annotations

import pytest

from daarion_city.secondme.breaker import Breakers, CircuitOpen
from daarion_city.secondme.repetition import LineRepeatGuard


def stream(text: str, *, step: int = 1) -> tuple[str, bool]:
    """Feed ``text`` in pieces of ``step`` characters, as a model streams it."""
    guard = LineRepeatGuard()
    out = []
    for i in range(0, len(text), step):
        out.append(guard.feed(text[i : i + step]))
        if guard.stopped:
            break
    out.append(guard.finish())
    return "".join(out), guard.stopped


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_repeated_line_stops_the_answer_and_is_not_sent(step: int) -> None:
    text = "Paris is the capital.\nIt is in France.\nParis is the capital.\nIt is in France.\n"
    assert stream(text, step=step) == ("Paris is the capital.\nIt is in France.\n", True)
    # Also when the repeat is the very end, without a newline.
    assert stream("Hello there\nHello there", step=step) == ("Hello there\n", False)


@pytest.mark.parametrize("step", [1, 4])
def test_lines_that_only_begin_alike_pass_whole(step: int) -> None:
    text = "1. Sleep well\n1. Sleep well and eat well\n---\n---\nHel"
    assert stream(text, step=step) == (text, False)


def test_text_is_held_back_only_while_it_may_be_a_repeat() -> None:
    guard = LineRepeatGuard()
    assert guard.feed("Good morning\n") == "Good morning\n"
    assert guard.feed("Good") == ""  # the start of "Good morning": held
    assert guard.feed(" night") == "Good night"  # differs: passed on at once


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_user_opens_only_their_own_breaker_until_the_cooldown() -> None:
    clock = Clock()
    breakers = Breakers(failures=2, cooldown=30, users=2, clock=clock)
    for _ in range(2):
        breakers.before_call("alice")
        breakers.failure("alice")
    with pytest.raises(CircuitOpen, match="circuit open"):
        breakers.before_call("alice")
    breakers.before_call("bob")  # not refused because of Alice
    breakers.success("bob")
    clock.now += 31
    breakers.before_call("alice")  # her trial call after the cooldown
    with pytest.raises(CircuitOpen):
        breakers.before_call("alice")  # one trial at a time
    breakers.success("alice")
    breakers.before_call("alice")


def test_the_provider_breaker_needs_failures_from_several_users() -> None:
    clock = Clock()
    breakers = Breakers(failures=3, cooldown=30, users=2, clock=clock)
    for _ in range(3):
        breakers.before_call("alice")
        breakers.failure("alice")
    breakers.before_call("bob")
    breakers.failure("bob")  # four in a row, from two users: the agent is failing
    with pytest.raises(CircuitOpen):
        breakers.before_call("carol")
    clock.now += 31
    breakers.before_call("carol")  # the trial
    breakers.success("carol")
    breakers.before_call("dave")
    # A released call (the input's fault, or the client left) is no verdict either way.
    breakers.release("dave")
    assert breakers.shared.failures == 0


def test_forgotten_users_past_the_tracked_number() -> None:
    breakers = Breakers(failures=5, cooldown=30, users=3, tracked=3)
    for n in range(10):
        breakers.failure(f"u{n}")
    assert list(breakers.per_user) == ["u7", "u8", "u9"]
