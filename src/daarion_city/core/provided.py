"""What the app provides to its routes and socket handlers, looked up by typed key.

The app (``daarion_city.app.wiring``) builds every shared object once in its lifespan and provides
each under a :class:`Key` declared beside the object's own type (``ROOMS`` in
``rooms/service.py``, ``SETTINGS`` in ``config``, ...). A route or a socket handler asks for
what it needs with ``provided(request, ROOMS)``: it imports its own domain and the layers below
it, never the module that knows every service, so no import circle runs through the app (the way
aiohttp's ``AppKey`` types ``app[key]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from starlette.requests import HTTPConnection

T = TypeVar("T")


class Key(Generic[T]):
    """The typed name of one provided object."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class Provided(dict[Key[Any], Any]):
    """The objects one app provides, by key (``app.state.provided``). A plain dict at run time
    (a lookup costs what a dict's does, on the post lane too), typed by its keys."""

    if TYPE_CHECKING:

        def __getitem__(self, key: Key[T]) -> T: ...


def provided(conn: HTTPConnection, key: Key[T]) -> T:
    """The object the app provides under ``key``."""
    values: Provided = conn.app.state.provided
    return values[key]


INSTANCE_ID: Key[str] = Key("instance_id")
