"""Circuit breakers of the Second Me provider, pure functions of ``now``.

One :class:`CircuitBreaker`: closed, calls go through. After ``failures`` consecutive failures
(from at least ``users`` distinct users) it opens: calls fail at once with ``agent_unavailable``
for ``cooldown`` seconds. Then one trial call is let through (half-open): its success closes the
breaker, its failure opens it for another cooldown.

:class:`Breakers` keeps one breaker per user (``users`` = 1: a user whose own calls keep failing
is refused for a while, nobody else is) and one for the whole provider that opens only when the
failures in a row come from ``SECONDME_BREAKER_USERS`` distinct users (an agent that fails for
everyone). Failures the input caused (a prompt too long, a 4xx from the agent) are never
counted: the service calls :meth:`Breakers.release` for them.
"""

from __future__ import annotations

from daarion_city.core.clock import Clock, system_clock
from daarion_city.secondme.providers.base import AgentUnavailable


class CircuitOpen(AgentUnavailable):
    """Refused without calling the agent: it has been failing."""


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        users: int = 1,
        clock: Clock = system_clock,
        whose: str = "the agent is failing",
    ) -> None:
        self.threshold = failures
        self.users_needed = users
        self.cooldown = cooldown
        self.clock = clock
        self.whose = whose
        self.failures = 0
        # The users behind the current run of failures; at most max(failures, users) of them
        # are ever needed to decide, so the set stays that small.
        self.failed_users: set[str] = set()
        self.open_until = 0.0
        self.trial = False

    def _tripped(self) -> bool:
        return self.failures >= self.threshold and len(self.failed_users) >= self.users_needed

    @property
    def state(self) -> str:
        if not self._tripped():
            return "closed"
        return "half-open" if self.clock() >= self.open_until else "open"

    def before_call(self) -> None:
        state = self.state
        if state == "open" or (state == "half-open" and self.trial):
            wait = max(0.0, self.open_until - self.clock())
            raise CircuitOpen(f"{self.whose}; circuit open, retry in {wait:.0f}s")
        if state == "half-open":
            self.trial = True

    def success(self) -> None:
        self.failures = 0
        self.failed_users.clear()
        self.trial = False

    def failure(self, user_id: str = "") -> None:
        self.failures += 1
        if len(self.failed_users) < max(self.threshold, self.users_needed):
            self.failed_users.add(user_id)
        self.trial = False
        if self._tripped():
            self.open_until = self.clock() + self.cooldown

    def release(self) -> None:
        """The call ended for another reason (the client left): no verdict on the agent."""
        self.trial = False


class Breakers:
    """A breaker per user plus one for the provider (see the module's docstring)."""

    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        users: int,
        clock: Clock = system_clock,
        tracked: int = 10_000,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.tracked = tracked
        self.shared = CircuitBreaker(
            failures=failures,
            cooldown=cooldown,
            users=users,
            clock=clock,
            whose=f"the agent is failing for {users} or more users",
        )
        # Only users whose last call failed; the oldest are forgotten past ``tracked``.
        self.per_user: dict[str, CircuitBreaker] = {}

    def before_call(self, user_id: str) -> None:
        self.shared.before_call()
        own = self.per_user.get(user_id)
        if own is None:
            return
        try:
            own.before_call()
        except CircuitOpen:
            self.shared.release()
            raise

    def success(self, user_id: str) -> None:
        self.shared.success()
        self.per_user.pop(user_id, None)

    def failure(self, user_id: str) -> None:
        self.shared.failure(user_id)
        own = self.per_user.pop(user_id, None) or CircuitBreaker(
            failures=self.failures,
            cooldown=self.cooldown,
            clock=self.clock,
            whose="your last prompts failed",
        )
        own.failure(user_id)
        self.per_user[user_id] = own  # newest last
        while len(self.per_user) > self.tracked:
            del self.per_user[next(iter(self.per_user))]

    def release(self, user_id: str) -> None:
        self.shared.release()
        own = self.per_user.get(user_id)
        if own is not None:
            own.release()
