"""A circuit breaker per provider, a pure function of ``now``.

Closed: calls go through. After ``failures`` consecutive failures it opens: calls fail at once
with ``agent_unavailable`` for ``cooldown`` seconds. Then one trial call is let through
(half-open): its success closes the breaker, its failure opens it for another cooldown.
"""

from __future__ import annotations

from daarion_city.clock import Clock, system_clock
from daarion_city.secondme.providers.base import AgentUnavailable


class CircuitOpen(AgentUnavailable):
    """Refused without calling the agent: it has been failing."""


class CircuitBreaker:
    def __init__(self, *, failures: int, cooldown: float, clock: Clock = system_clock) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.trial = False

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "half-open" if self.clock() >= self.open_until else "open"

    def before_call(self) -> None:
        state = self.state
        if state == "open" or (state == "half-open" and self.trial):
            wait = max(0.0, self.open_until - self.clock())
            raise CircuitOpen(f"the agent is failing; circuit open, retry in {wait:.0f}s")
        if state == "half-open":
            self.trial = True

    def success(self) -> None:
        self.failures = 0
        self.trial = False

    def failure(self) -> None:
        self.failures += 1
        self.trial = False
        if self.failures >= self.threshold:
            self.open_until = self.clock() + self.cooldown

    def release(self) -> None:
        """The call ended for another reason (the client left): no verdict on the agent."""
        self.trial = False
