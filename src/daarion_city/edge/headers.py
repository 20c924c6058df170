"""The security headers of every answer: the page, static files, the API, errors, the post lane,
and what the server writes itself (400, 431, 408, 500).

They are the server's default headers (uvicorn's ``headers`` option, set in ``edge/server.py``):
the list is built once at start-up, and uvicorn already joins its default headers (the date) to
each answer, so no request builds anything. An app served by another server does not send them.

The page loads only its own files: no inline script or style, no framing. Its token lives in
``localStorage``, so a script injected into the page could read it; the policy is what keeps
such a script from running at all. The API sends the same headers (a JSON answer opened as a
page is not sniffed into HTML, and cannot be framed). ``connect-src 'self'`` covers the page's
fetches, its EventSource and its same-origin WebSockets (CSP Level 3: ``'self'`` matches ``ws:``
and ``wss:`` of the page's host and port). A deployment that serves the client from another
origin (``CITY_ALLOWED_ORIGINS``) serves its own page and sets its own policy.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)

SECURITY_HEADERS: list[tuple[str, str]] = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
