"""Structured logs: one JSON object per line, carrying the request id of the request in flight.

Secrets never reach a log line: whatever a library logs (uvicorn logs a WebSocket's URL, query
string included), ``?token=``/``access_token=`` values, bearer tokens and JWT-shaped strings
are masked by the formatter, which sees every line. Percent-encoding hides nothing: a query key
is read decoded, as the server reads it (``?%74oken=`` is ``?token=``), and a run of URL
characters with escapes is masked when, decoded, it holds a JWT. ``mask_url`` masks the
credentials of the URLs in the configuration (``check-config``).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime
from urllib.parse import unquote, unquote_plus

import orjson

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


# Each pass runs only on a line that holds what it looks for (most lines hold none of it).
_PAIR = re.compile(r"(?<![\w.~%-])([\w.~%-]++)=([^&\s\"'\\]++)")  # query strings, form bodies
_BEARER = re.compile(r"((?i:bearer)\s+)[A-Za-z0-9._~+/=-]+")  # Authorization headers
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")  # any JWT
_ESCAPED_RUN = re.compile(r"(?<![\w.~%-])[\w.~-]*+%[\w.~%-]*+")  # what may hide a JWT
_SECRET_KEYS = ("token", "api_key", "password")  # and whatever ends so: access_token ...


def _decoded(text: str) -> str:
    """As the server reads it (once), and as a reader of the log could (a few times more)."""
    for _ in range(3):
        if "%" not in text:
            break
        text = unquote(text)
    return text


def _mask_pair(m: re.Match[str]) -> str:
    key = m.group(1)  # ?%74oken= is ?token= to the server
    return f"{key}=****" if _decoded(key).lower().endswith(_SECRET_KEYS) else m.group(0)


def _mask_escaped(m: re.Match[str]) -> str:
    return "****" if _JWT.search(_decoded(m.group(0))) else m.group(0)


def mask_secrets(text: str) -> str:
    """Mask secret query values (their keys read percent-decoded, as the server reads them),
    bearer tokens, and JWTs, whether written plainly or percent-encoded."""
    if "=" in text:
        text = _PAIR.sub(_mask_pair, text)
    if "eyJ" in text:
        text = _JWT.sub("****", text)
    if "%" in text:
        text = _ESCAPED_RUN.sub(_mask_escaped, text)
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1****", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_secrets(orjson.dumps(entry, default=str).decode())


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware writes the access log, with the request id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


# --- URLs in the configuration (check-config) ------------------------------------------------
MASK = "********"
# Query parameters whose values are shown: the connection options of the URLs this service
# takes (PostgreSQL/asyncpg, Redis, SQLite, OpenAI-compatible servers), none of them a secret.
# Every other query value is masked, whatever its name: a key of a provider or an option not
# listed here is never printed.
HARMLESS_QUERY = frozenset(
    {
        "sslmode",
        "ssl",
        "connect_timeout",
        "command_timeout",
        "timeout",
        "application_name",
        "target_session_attrs",
        "prepared_statement_cache_size",
        "db",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "decode_responses",
        "encoding",
        "client_name",
        "mode",
        "cache",
        "uri",
        "check_same_thread",
        "host",
        "port",
        "dbname",
        "api-version",
        "api_version",
    }
)


def mask_url(url: str) -> str:
    """``url`` with its credentials masked: a password (``user:********@``), a user part without
    password as a whole (``********@``: it is often a token, as in ``http://sk-...@host/``),
    every query value but those of ``HARMLESS_QUERY``, and a fragment. Scheme, host, port and
    path are kept. A string without ``://`` is returned as it is."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    # The user part ends at the last "@" before the query: a password with an unencoded "@"
    # or "/" is still masked whole.
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = -1 if head.startswith("/") else head.rfind("@")  # sqlite:///path: no user part
    userinfo, rest = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    rest, hashmark, fragment = rest.partition("#")
    location, question, query = rest.partition("?")
    out = f"{scheme}://"
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if colon:
            out += f"{user}:{MASK if password else ''}@"
        else:
            out += f"{MASK if user else ''}@"
    out += location
    if question:
        out += "?" + "&".join(_mask_param(p) for p in query.split("&"))
    if hashmark:
        out += "#" + (MASK if fragment else "")
    return out


def _mask_param(param: str) -> str:
    name, equals, value = param.partition("=")
    if not equals:
        return MASK if name else ""  # a bare value (``?sk-...``) may be a key
    if not value or unquote_plus(name).strip().lower() in HARMLESS_QUERY:
        return param
    return f"{name}={MASK}"
