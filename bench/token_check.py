"""The cost of refusing erased users' tokens (issue 25): ``TokenAuthority.verify`` of a cached
token, without the retirement check and with it (100,000 retired ids held), best of 5 runs of
1,000,000 calls each (CPU only: what every authenticated request adds).

    .venv/bin/python -m bench.token_check
"""

from __future__ import annotations

import functools
import timeit

from daarion_city.identity.tokens import TokenAuthority

SECRET = "x" * 40
CALLS = 1_000_000


def main() -> None:
    retired = {f"u_{i:016x}" for i in range(100_000)}
    variants: dict[str, dict[str, object]] = {
        "without the check": {},
        "with 100,000 retired ids": {"retired": retired.__contains__},
    }
    for label, extra in variants.items():
        authority = TokenAuthority(SECRET, **extra)  # type: ignore[arg-type]
        token = authority.mint("u_alice", "Alice", 3600).token
        authority.verify(token)  # verified once: cached as every later request finds it
        verify = functools.partial(authority.verify, token)
        best = min(timeit.repeat(verify, number=CALLS, repeat=5))
        print(f"{label}: {best / CALLS * 1e9:.0f} ns per verify")


if __name__ == "__main__":
    main()
