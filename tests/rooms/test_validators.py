"""Public reads carry a validator: ``ETag`` and ``Cache-Control: no-cache``; a client that polls
with ``If-None-Match`` gets 304 while nothing changed, and the new answer as soon as a change
is acknowledged to its writer (read-your-writes), on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support import Api

READS = [
    "/city/rooms",
    "/city/rooms/science",
    "/city/rooms/science/messages?limit=20",
    "/city/feed",
    "/city/presence",
]


async def test_a_read_polled_with_its_etag_is_304_until_a_post_changes_it(api: Api) -> None:
    alice = await api.guest("Alice")
    tags = {}
    for path in READS:
        first = await api.http.get(path)
        assert first.status_code == 200, path
        assert first.headers["cache-control"] == "no-cache"
        tag = first.headers["etag"]
        assert tag.startswith('"')
        assert tag.endswith('"')
        again = await api.http.get(path, headers={"If-None-Match": tag})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["etag"] == tag
        for header in ("*", f'"other", W/{tag}'):  # any tag, and a weak copy in a list
            assert (await api.http.get(path, headers={"If-None-Match": header})).status_code == 304
        stale = await api.http.get(path, headers={"If-None-Match": '"not-it"'})
        assert stale.status_code == 200
        assert stale.headers["etag"] == tag
        tags[path] = tag
    await alice.say("science", "fresh news")  # answered 201: committed
    for path in READS[:4]:  # every read that shows the message
        r = await api.http.get(path, headers={"If-None-Match": tags[path]})
        assert r.status_code == 200, path
        assert r.headers["etag"] != tags[path]
        assert "fresh news" in r.text, path
