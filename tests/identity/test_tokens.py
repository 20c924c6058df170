"""The lean HS256 check (identity/tokens.py ``decode_hs256``) accepts and refuses what
``jwt.decode`` does with the options the service used before it: over crafted tokens (times,
algorithms, signatures, segments, padding, JSON, claims) and a seeded sweep of mutations of
valid tokens, both give the same claims, or both refuse, with "token expired" exactly where
PyJWT raises ExpiredSignatureError."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from typing import Any

import jwt
import pytest

from daarion_city.core.errors import Unauthorized
from daarion_city.identity.tokens import ALGORITHM, TokenAuthority, decode_hs256

SECRET = "s3cret-of-this-deployment-0123456789abcdef"
KEY = SECRET.encode()
OTHER = "another-deployment-secret-0123456789abcdef"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(signing_input: str, key: bytes = KEY) -> str:
    return b64(hmac.digest(key, signing_input.encode(), hashlib.sha256))


def raw(header: Any, payload: Any, *, key: bytes = KEY) -> str:
    """A token of any header and payload (JSON values, or bytes sent as they are)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(h)}.{b64(p)}"
    return f"{signing_input}.{sign(signing_input, key)}"


def pyjwt_outcome(token: str) -> tuple[str, dict[str, Any] | None]:
    try:
        claims = jwt.decode(
            token, SECRET, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        return "token expired", None
    except jwt.PyJWTError:
        return "invalid token", None
    return "ok", claims


def lean_outcome(token: str) -> tuple[str, dict[str, Any] | None]:
    try:
        claims = decode_hs256(token, KEY)
    except Unauthorized as exc:
        return exc.detail, None
    return "ok", claims


def crafted() -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "u_alice", "name": "Alice", "iat": now, "exp": now + 3600}
    hs = {"alg": "HS256", "typ": "JWT"}
    valid = raw(hs, good)
    h, p, s = valid.split(".")
    alg_none = b64(b'{"alg":"none"}')
    hs_only = b'{"alg":"HS256"}'
    return {
        "valid": valid,
        "valid pyjwt": jwt.encode(good, SECRET, algorithm="HS256"),
        "no typ": raw({"alg": "HS256"}, good),
        "typ other": raw({"alg": "HS256", "typ": "xyz"}, good),
        "expired": raw(hs, {**good, "exp": now - 1000}),
        "expired iat future": raw(hs, {**good, "exp": now - 1000, "iat": now + 1000}),
        "expired nbf future": raw(hs, {**good, "exp": now - 1000, "nbf": now + 1000}),
        "expired aud": raw(hs, {**good, "exp": now - 1000, "aud": "x"}),
        "expired sub int": raw(hs, {**good, "exp": now - 1000, "sub": 5}),
        "expired jti int": raw(hs, {**good, "exp": now - 1000, "jti": 5}),
        "expired other secret": raw(hs, {**good, "exp": now - 1000}, key=OTHER.encode()),
        "exp string": raw(hs, {**good, "exp": "soon"}),
        "exp numeric string": raw(hs, {**good, "exp": str(now + 3600)}),
        "exp float": raw(hs, {**good, "exp": now + 3600.5}),
        "exp float expired": raw(hs, {**good, "exp": now - 0.5 - 1000}),
        "exp true": raw(hs, {**good, "exp": True}),
        "exp false": raw(hs, {**good, "exp": False}),
        "exp null": raw(hs, {**good, "exp": None}),
        "exp list": raw(hs, {**good, "exp": [now + 3600]}),
        "exp infinity": raw(hs, b'{"sub":"u_alice","exp":Infinity}'),
        "exp nan": raw(hs, b'{"sub":"u_alice","exp":NaN}'),
        "exp huge": raw(hs, {**good, "exp": 10**30}),
        "no exp": raw(hs, {"sub": "u_alice", "iat": now}),
        "no sub": raw(hs, {"iat": now, "exp": now + 3600}),
        "sub null": raw(hs, {**good, "sub": None}),
        "sub int": raw(hs, {**good, "sub": 5}),
        "sub empty": raw(hs, {**good, "sub": ""}),
        "nbf future": raw(hs, {**good, "nbf": now + 1000}),
        "nbf past": raw(hs, {**good, "nbf": now - 1000}),
        "nbf string": raw(hs, {**good, "nbf": "x"}),
        "iat future": raw(hs, {**good, "iat": now + 1000}),
        "iat string": raw(hs, {**good, "iat": "yesterday"}),
        "iat numeric string": raw(hs, {**good, "iat": f" {now - 5} "}),
        "iat null": raw(hs, {**good, "iat": None}),
        "iat dict": raw(hs, {**good, "iat": {}}),
        "aud": raw(hs, {**good, "aud": "city"}),
        "aud list": raw(hs, {**good, "aud": ["city"]}),
        "aud empty": raw(hs, {**good, "aud": ""}),
        "aud empty list": raw(hs, {**good, "aud": []}),
        "iss": raw(hs, {**good, "iss": "someone"}),
        "iss int": raw(hs, {**good, "iss": 5}),
        "jti": raw(hs, {**good, "jti": "abc"}),
        "jti int": raw(hs, {**good, "jti": 5}),
        "extra claims": raw(hs, {**good, "admin": True, "x": [1, {"y": None}]}),
        "alg none": raw({"alg": "none"}, good),
        "alg none unsigned": f"{alg_none}.{p}.",
        "alg none pyjwt": jwt.encode(good, None, algorithm="none"),
        "alg HS512": raw({"alg": "HS512"}, good),
        "alg hs256": raw({"alg": "hs256"}, good),
        "alg RS256": raw({"alg": "RS256"}, good),
        "alg missing": raw({"typ": "JWT"}, good),
        "alg null": raw({"alg": None}, good),
        "alg list": raw({"alg": ["HS256"]}, good),
        "kid str": raw({**hs, "kid": "k1"}, good),
        "kid int": raw({**hs, "kid": 1}, good),
        "crit b64 true": raw({**hs, "crit": ["b64"], "b64": True}, good),
        "crit b64 missing": raw({**hs, "crit": ["b64"]}, good),
        "crit empty": raw({**hs, "crit": []}, good),
        "crit other": raw({**hs, "crit": ["exp"], "exp": 1}, good),
        "crit string": raw({**hs, "crit": "b64", "b64": True}, good),
        "crit int member": raw({**hs, "crit": [1], "b64": True}, good),
        "b64 false": raw({**hs, "b64": False, "crit": ["b64"]}, good),
        "b64 false no crit": raw({**hs, "b64": False}, good),
        "b64 false detached": (lambda si: f"{si}.{sign(si)}")(
            f"{b64(json.dumps({**hs, 'b64': False, 'crit': ['b64']}).encode())}."
        ),
        "b64 zero": raw({**hs, "b64": 0}, good),
        "other secret": raw(hs, good, key=OTHER.encode()),
        "bad signature": f"{h}.{p}.{s[:-4]}{'AAAA' if not s.endswith('AAAA') else 'BBBB'}",
        "signature empty": f"{h}.{p}.",
        "signature of header only": f"{h}.{p}.{sign(h)}",
        "truncated": valid[:-10],
        "truncated to two": f"{h}.{p}",
        "one segment": h,
        "empty": "",
        "dots": "..",
        "extra dots": f"{h}.{p}.{s}.",
        "four segments": f"{h}.{p}.{s}.{s}",
        "extra dot in payload": (lambda si: f"{si}.{sign(si)}")(f"{h}.{p[:5]}.{p[5:]}"),
        "header padded": (lambda si: f"{si}.{sign(si)}")(
            f"{base64.urlsafe_b64encode(json.dumps(hs).encode()).decode()}.{p}"
        ),
        "all padded": (lambda si: f"{si}.{sign(si)}=")(
            f"{base64.urlsafe_b64encode(hs_only).decode()}."
            + base64.urlsafe_b64encode(json.dumps(good).encode()).decode()
        ),
        "three pads": f"{h}===.{p}.{s}",
        "pad mid": f"{h[:4]}={h[4:]}.{p}.{s}",
        "pad wrong length": (lambda si: f"{si}.{sign(si)}")(f"{b64(hs_only + b' ')}=.{p}"),
        "standard alphabet": f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}",
        "non-canonical bits": f"{h}.{p}.{s[:-1]}{'B' if s[-1] == 'A' else 'A'}",
        "length 4n+1": f"{h}.{p}.{s}A",
        "space": f" {valid}",
        "trailing space": f"{valid} ",
        "trailing newline": f"{valid}\n",
        "inner space": f"{h}. {p}.{s}",
        "tab": f"{h}.{p}\t.{s}",
        "non-ascii": f"{h}.{p}.{s}é",
        "fullwidth digit": f"{h}.{p}.{s[:-1]}１",
        "junk": "!!!!.!!!!.!!!!",
        "header not json": raw(b"{alg: HS256}", good),
        "header list": raw([{"alg": "HS256"}], good),
        "header string": raw("HS256", good),
        "header empty": raw(b"", good),
        "header utf-16": raw(json.dumps(hs).encode("utf-16"), good),
        "header bad utf-8": raw(b'{"alg":"HS256","x":"\xff"}', good),
        "payload not json": raw(hs, b"sub=u_alice"),
        "payload list": raw(hs, [good]),
        "payload null": raw(hs, b"null"),
        "payload number": raw(hs, b"12"),
        "payload empty": raw(hs, b""),
        "payload whitespace": raw(hs, b"  " + json.dumps(good).encode() + b"\n"),
        "payload deep": raw(
            hs, b'{"sub":"u_a","exp":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        ),
        "payload duplicate keys": raw(hs, f'{{"sub":"u_x","exp":1,"exp":{now + 60}}}'.encode()),
    }


def mutations(token: str, rng: random.Random, count: int) -> list[str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ "
    out = []
    for _ in range(count):
        i = rng.randrange(len(token))
        kind = rng.randrange(3)
        if kind == 0:
            out.append(token[:i] + rng.choice(alphabet) + token[i + 1 :])
        elif kind == 1:
            out.append(token[:i] + token[i + 1 :])
        else:
            out.append(token[:i] + rng.choice(alphabet) + token[i:])
    return out


@pytest.mark.parametrize("name", sorted(crafted()))
def test_lean_check_agrees_with_pyjwt(name: str) -> None:
    token = crafted()[name]
    assert lean_outcome(token) == pyjwt_outcome(token), name


def test_lean_check_agrees_with_pyjwt_on_mutated_and_truncated_tokens() -> None:
    rng = random.Random(26)
    now = int(time.time())
    bases = [
        raw({"alg": "HS256", "typ": "JWT"}, {"sub": "u_alice", "exp": now + 3600}),
        raw({"alg": "HS256"}, {"sub": "u_bob", "name": "Bob", "iat": now, "exp": now - 900}),
        jwt.encode({"sub": "u_carol", "exp": now + 60, "nbf": now - 5}, SECRET, algorithm="HS256"),
    ]
    tokens = [b[:i] for b in bases for i in range(len(b) + 1)]
    for b in bases:
        tokens += mutations(b, rng, 1500)
    outcomes = {"ok": 0, "token expired": 0, "invalid token": 0}
    for token in tokens:
        lean, pyjwt = lean_outcome(token), pyjwt_outcome(token)
        assert lean == pyjwt, token
        outcomes[lean[0]] += 1
    assert all(outcomes.values())  # the sweep reached each outcome


def test_authority_keeps_its_messages() -> None:
    authority = TokenAuthority(SECRET)
    issued = authority.mint("u_alice", "Alice", 60)
    principal = authority.verify(issued.token)
    assert (principal.user_id, principal.name) == ("u_alice", "Alice")
    for token, detail in [
        (authority.mint("u_alice", "Alice", -60).token, "token expired"),
        (TokenAuthority(OTHER).mint("u_alice", "Alice", 60).token, "invalid token"),
        (
            jwt.encode({"sub": "u_alice", "exp": int(time.time()) + 60}, None, algorithm="none"),
            "invalid token",
        ),
        (
            raw({"alg": "HS256"}, {"sub": "ag_helper", "exp": int(time.time()) + 60}),
            "invalid token subject",
        ),
        ("", "missing bearer token"),
    ]:
        with pytest.raises(Unauthorized) as caught:
            TokenAuthority(SECRET).verify(token)
        assert caught.value.detail == detail
