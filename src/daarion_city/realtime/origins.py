"""Which browser origins may use the service: one rule for CORS and for WebSocket upgrades
(which the CORS middleware does not see, and which browsers send cross-site without asking).

``CITY_ALLOWED_ORIGINS`` is a comma-separated list of ``scheme://host[:port]``; ``*`` allows
any. Whatever the list, a page served by this service (its ``Origin`` names the ``Host`` it
asked) and a client that sends no ``Origin`` (not a browser: curl, a mobile app, a bot) are
allowed. Everything else, ``null`` included, is refused: Centrifugo's and Synapse's rule.

A pure function of the request's headers and the settings, kept in ``realtime`` beside its one
caller, the socket upgrade check (``realtime/endpoint.py``, which the socket lane and the router
both reach): the edge above may use it, realtime may not import the edge. The CORS middleware
(``edge/front.py``) is given the same list.
"""

from __future__ import annotations


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    if origin is None:
        return True
    if "*" in allowed:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in (o.lower().rstrip("/") for o in allowed):
        return True
    _, sep, netloc = origin.partition("://")
    return bool(sep) and host is not None and netloc == host.strip().lower()
