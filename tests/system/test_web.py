"""The web client in a real headless Chromium (Debian's, driven by Playwright for Python)
against a real server on a loopback port. Also takes the screenshots shown in the README: into
tests/artifacts/screenshots (git-ignored), or into $CITY_SCREENSHOTS_DIR, which
scripts/screenshots.sh sets to docs/screenshots to refresh the README's pictures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    WebSocketRoute,
    async_playwright,
    expect,
)

from tests.conftest import make_settings
from tests.support import Api, Server, eventually, run_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / (os.environ.get("CITY_SCREENSHOTS_DIR") or "tests/artifacts/screenshots")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "presence_away_after": 2.0,
        "presence_heartbeat_interval": 1.0,
        "secondme_max_tokens": 24,
        "secondme_temperature": 0.0,
    }


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


# What the page's Content-Security-Policy refused, as the page itself sees it.
RECORD_CSP_VIOLATIONS = """
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
        window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`);
    });
"""


async def csp_violations(page: Page) -> list[str]:
    found: list[str] = await page.evaluate("window.cspViolations")
    return found + [e for e in page.errors if "Security Policy" in e]  # type: ignore[attr-defined]


async def sign_in(
    browser: Browser, server: Server, name: str, **ctx: Any
) -> tuple[BrowserContext, Page, str]:
    context = await browser.new_context(viewport=ctx.pop("viewport", DESKTOP), **ctx)
    await context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    page.on("console", lambda m: errors.append(m.text) if "Security Policy" in m.text else None)
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(server.base_url + "/")
    await page.get_by_test_id("guest-name").fill(name)
    await page.get_by_test_id("guest-submit").click()
    await page.get_by_test_id("room-link").first.wait_for()
    user_id = await page.evaluate("JSON.parse(localStorage.getItem('city.me')).user_id")
    return context, page, str(user_id)


async def open_room(page: Page, slug: str) -> None:
    await page.locator(f"[data-testid=room-link][data-slug={slug}]").click()
    await page.locator("#room-title").filter(has_text=slug.capitalize()).wait_for()


async def set_hidden(page: Page, hidden: bool) -> None:
    """Emulate the tab being hidden or shown again."""
    await page.evaluate(
        """(hidden) => {
            const state = hidden ? 'hidden' : 'visible';
            const opts = (value) => ({configurable: true, get: () => value});
            Object.defineProperty(document, 'visibilityState', opts(state));
            Object.defineProperty(document, 'hidden', opts(hidden));
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        hidden,
    )


def member(page: Page, user_id: str) -> Any:
    return page.locator(f"[data-testid=member][data-user-id='{user_id}']")


async def test_two_guests_chat_and_see_each_others_presence(
    browser: Browser, server: Server
) -> None:
    ctx_a, alice, alice_id = await sign_in(browser, server, "Alice")
    ctx_b, bob, _ = await sign_in(browser, server, "Bob")
    await open_room(alice, "general")
    await open_room(bob, "general")

    await alice.get_by_test_id("message-input").fill("Привіт від Аліси")
    await alice.keyboard.press("Enter")
    seen = bob.get_by_test_id("message").filter(has_text="Привіт від Аліси")
    await seen.wait_for(timeout=5000)
    assert await seen.get_attribute("data-seq") == "2"  # the seed's welcome message is seq 1

    a = member(bob, alice_id)
    await a.and_(bob.locator("[data-status=online]")).wait_for(timeout=5000)
    # The away delay is 2 s here: no input on Alice's page, and Bob sees her away.
    await a.and_(bob.locator("[data-status=away]")).wait_for(timeout=6000)
    await alice.keyboard.press("Shift")
    await a.and_(bob.locator("[data-status=online]")).wait_for(timeout=5000)
    # Hiding Alice's tab makes her away at once; showing it brings her back.
    await set_hidden(alice, True)
    await a.and_(bob.locator("[data-status=away]")).wait_for(timeout=3000)
    await set_hidden(alice, False)
    await a.and_(bob.locator("[data-status=online]")).wait_for(timeout=3000)
    # Closing Alice's page shows her offline to Bob within 2 s.
    await alice.close(run_before_unload=True)
    await a.and_(bob.locator("[data-status=offline]")).wait_for(timeout=2000)
    assert bob.errors == []  # type: ignore[attr-defined]
    await ctx_a.close()
    await ctx_b.close()


async def test_the_page_works_under_its_content_security_policy(
    browser: Browser, server: Server
) -> None:
    """A strict policy (no inline script or style, connections to its own origin only): signing
    in, the room's socket, posting and seeing the message live, presence, the feed's stream and
    Second Me all work with no violation, and the page cannot be framed."""
    ctx_a, alice, _ = await sign_in(browser, server, "Alice")
    ctx_b, bob, bob_id = await sign_in(browser, server, "Bob")
    policy = (await bob.request.get(server.base_url + "/")).headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    await open_room(alice, "general")
    await open_room(bob, "general")
    await bob.get_by_test_id("message-input").fill("під суворою політикою")
    await bob.keyboard.press("Enter")
    await alice.get_by_test_id("message").filter(has_text="під суворою політикою").wait_for()
    await member(alice, bob_id).and_(alice.locator("[data-status=online]")).wait_for()
    await alice.get_by_test_id("feed-event").filter(has_text="під суворою політикою").wait_for()
    await alice.get_by_test_id("secondme-input").fill("Hi")
    await alice.get_by_test_id("secondme-send").click()
    await alice.locator("[data-testid=secondme-answer][data-state=done]").wait_for(timeout=60000)
    for page in (alice, bob):
        assert await csp_violations(page) == []
        assert page.errors == []  # type: ignore[attr-defined]
    # What an XSS would inject is refused (and the recorder above sees it).
    await bob.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.injected = 1"; document.body.append(s); }"""
    )
    await bob.wait_for_function("window.cspViolations.length > 0")
    assert await bob.evaluate("window.injected") is None

    framer = await ctx_a.new_page()
    await framer.set_content(f'<iframe src="{server.base_url}/"></iframe>')
    await asyncio.sleep(1.0)
    frame = framer.frames[1]
    assert await frame.locator("[data-testid=guest-name]").count() == 0  # not rendered
    await ctx_a.close()
    await ctx_b.close()


async def test_a_refused_name_says_why_in_words(browser: Browser, server: Server) -> None:
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await page.goto(server.base_url + "/")
    await page.get_by_test_id("guest-name").fill("ag_system")
    await page.get_by_test_id("guest-submit").click()
    error = page.locator("#signin-error")
    await error.filter(has_text="reserved for agents").wait_for()
    assert "{" not in await error.text_content()  # words, not the JSON of the error
    await context.close()


async def test_messages_are_text_never_html(browser: Browser, server: Server) -> None:
    ctx_a, alice, _ = await sign_in(browser, server, "<b>Mallory</b>")
    ctx_b, bob, _ = await sign_in(browser, server, "Bob")
    await open_room(alice, "science")
    await open_room(bob, "science")
    evil = "<img src=x onerror=alert(1)>"
    await alice.get_by_test_id("message-input").fill(evil)
    await alice.get_by_test_id("message-send").click()
    shown = bob.get_by_test_id("message").filter(has_text=evil)
    await shown.wait_for(timeout=5000)
    assert await shown.locator(".body").inner_text() == evil
    assert await bob.locator("#messages img").count() == 0
    assert await bob.locator("#people b").count() == 0  # names are text too
    await asyncio.sleep(0.3)
    assert bob.errors == []  # type: ignore[attr-defined]  # no alert() ran
    await ctx_a.close()
    await ctx_b.close()


async def test_a_dropped_socket_reconnects_and_shows_what_was_missed_once(
    browser: Browser, server: Server
) -> None:
    ctx_a, alice, _ = await sign_in(browser, server, "Alice")
    ctx_b = await browser.new_context(viewport=DESKTOP)
    bob = await ctx_b.new_page()
    routes: list[WebSocketRoute] = []
    blocked = asyncio.Event()

    async def route(ws: WebSocketRoute) -> None:
        if blocked.is_set():  # the network is down: the connection fails at once
            await ws.close(code=4000, reason="network down")
            return
        ws.connect_to_server()
        routes.append(ws)

    await bob.route_web_socket("**/ws/city/rooms/**", route)
    await bob.goto(server.base_url + "/")
    await bob.get_by_test_id("guest-name").fill("Bob")
    await bob.get_by_test_id("guest-submit").click()
    await open_room(alice, "energy")
    await open_room(bob, "energy")
    await alice.get_by_test_id("message-input").fill("before the drop")
    await alice.keyboard.press("Enter")
    await bob.get_by_test_id("message").filter(has_text="before the drop").wait_for()

    blocked.set()
    await routes[-1].close(code=4000, reason="dropped")
    await bob.locator("#room-offline").wait_for(state="visible", timeout=3000)
    for i in range(3):
        await alice.get_by_test_id("message-input").fill(f"meanwhile {i}")
        await alice.keyboard.press("Enter")
    await alice.get_by_test_id("message").filter(has_text="meanwhile 2").wait_for()
    blocked.clear()
    await bob.get_by_test_id("message").filter(has_text="meanwhile 2").wait_for(timeout=15000)
    await bob.locator("#room-offline").wait_for(state="hidden", timeout=3000)
    await asyncio.sleep(0.5)
    bodies = await bob.locator("[data-testid=message] .body").all_inner_texts()
    assert bodies == ["before the drop", "meanwhile 0", "meanwhile 1", "meanwhile 2"]
    seqs = await bob.locator("[data-testid=message]").evaluate_all(
        "ns => ns.map(n => n.dataset.seq)"
    )
    assert seqs == ["1", "2", "3", "4"]
    await ctx_a.close()
    await ctx_b.close()


async def test_second_me_streams_an_answer_into_the_panel(browser: Browser, server: Server) -> None:
    ctx, page, _ = await sign_in(browser, server, "Alice")
    # The panel says which model answers and, for the small embedded one, what it cannot do.
    model = page.get_by_test_id("secondme-model")
    await model.wait_for(timeout=10000)
    assert "SmolLM2-135M-Instruct" in await model.inner_text()
    assert await page.locator("#secondme-model-note").is_visible()
    await page.get_by_test_id("secondme-input").fill("What is the capital of France?")
    await page.get_by_test_id("secondme-send").click()
    await page.locator("[data-testid=secondme-answer][data-state=done]").wait_for(timeout=60000)
    # The answer, once whole, sits in the history under the question.
    turns = await page.locator("#secondme-history p").all_inner_texts()
    assert len(turns) == 2
    assert turns[1].strip()
    await ctx.close()


async def test_create_a_room_and_screenshots(browser: Browser, server: Server) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx_b, bob, _ = await sign_in(browser, server, "Богдан")
    await open_room(bob, "general")
    ctx, page, _ = await sign_in(browser, server, "Олена")
    await page.locator("#new-room-slug").fill("garden")
    await page.locator("#new-room-name").fill("Міський сад")
    await page.locator("#create-room button").click()
    await page.locator("#room-title").filter(has_text="Міський сад").wait_for()
    await page.locator("[data-testid=room-link][data-slug=garden]").wait_for()
    await open_room(page, "general")
    for text in ("Привіт, місто! 🌆", "Хто йде на толоку в суботу?"):
        await page.get_by_test_id("message-input").fill(text)
        await page.keyboard.press("Enter")
    await bob.get_by_test_id("message").filter(has_text="толоку").wait_for()
    await page.get_by_test_id("feed-event").filter(has_text="толоку").wait_for()
    await page.screenshot(path=str(SCREENSHOTS / "room-desktop.png"))
    await page.goto(server.base_url + "/#/")
    await page.get_by_test_id("room-card").first.wait_for()
    await page.screenshot(path=str(SCREENSHOTS / "city-desktop.png"))
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=str(SCREENSHOTS / "city-phone.png"), full_page=True)
    await open_room(page, "general")
    await page.screenshot(path=str(SCREENSHOTS / "room-phone.png"), full_page=True)
    await ctx.close()
    await ctx_b.close()


async def test_mentions_replies_edits_deletions_and_reactions_live_and_screenshots(
    browser: Browser, server: Server
) -> None:
    ctx_a, alice, _ = await sign_in(browser, server, "Alice")
    ctx_b, bob, bob_id = await sign_in(browser, server, "Bob")
    await open_room(alice, "general")
    await open_room(bob, "general")
    await alice.get_by_test_id("message-input").fill(f"hello <@{bob_id}>")
    await alice.keyboard.press("Enter")
    first = bob.get_by_test_id("message").filter(has_text="hello")
    await first.wait_for(timeout=5000)
    seq = await first.get_attribute("data-seq")

    def message(page: Page) -> Any:
        return page.locator(f"[data-testid=message][data-seq='{seq}']")

    assert "hello @Bob" in await message(bob).inner_text()  # the mention, shown as a name
    # Bob reacts; Alice sees the chip.
    await message(bob).hover()
    await message(bob).get_by_test_id("message-react").click()
    await message(bob).get_by_test_id("emoji-picker").locator("[data-emoji='🎉']").click()
    chip = message(alice).locator("[data-testid=reaction][data-emoji='🎉'][data-count='1']")
    await chip.wait_for(timeout=5000)
    # Bob replies; Alice sees whom it answers.
    await message(bob).hover()
    await message(bob).get_by_test_id("message-reply").click()
    await bob.get_by_test_id("reply-preview").wait_for()
    await bob.get_by_test_id("message-input").fill("me too")
    await bob.keyboard.press("Enter")
    reply = alice.get_by_test_id("message").filter(has_text="me too")
    await reply.locator(".reply-to").filter(has_text="Alice").wait_for(timeout=5000)
    assert await bob.get_by_test_id("reply-preview").is_hidden()
    # Alice edits her message; Bob sees the new text, marked edited, the reaction kept.
    await message(alice).hover()
    await message(alice).get_by_test_id("message-edit").click()
    await alice.get_by_test_id("message-input").fill("hello everyone")
    await alice.keyboard.press("Enter")
    await (
        message(bob)
        .filter(has_text="hello everyone")
        .get_by_test_id("edited")
        .wait_for(timeout=5000)
    )
    assert await message(bob).get_by_test_id("reaction").count() == 1
    # The reply quotes the message as it is now.
    await reply.locator(".reply-to").filter(has_text="hello everyone").wait_for(timeout=5000)
    assert await message(bob).get_by_test_id("message-edit").count() == 0  # not his to edit
    await bob.screenshot(path=str(SCREENSHOTS / "conversation.png"))
    # Alice deletes it: a tombstone on both pages, without its text or actions.
    await message(alice).hover()
    await message(alice).get_by_test_id("message-delete").click()
    for page in (alice, bob):
        tomb = page.locator(f"[data-testid=message][data-seq='{seq}'][data-deleted=true]")
        await tomb.wait_for(timeout=5000)
        assert "hello" not in await tomb.inner_text()
        assert await tomb.get_by_test_id("message-reply").count() == 0
    assert alice.errors == []  # type: ignore[attr-defined]
    assert bob.errors == []  # type: ignore[attr-defined]
    await ctx_a.close()
    await ctx_b.close()


async def test_unread_badges_notifications_and_mention_autocomplete(
    browser: Browser, server: Server
) -> None:
    ctx_a, alice, alice_id = await sign_in(browser, server, "Alice")
    ctx_b, bob, bob_id = await sign_in(browser, server, "Bob")
    await open_room(alice, "general")
    await open_room(bob, "welcome")  # Bob is elsewhere: general fills up for him
    # Alice knows Bob from a message of his in general.
    await bob.evaluate(
        """async () => {
            const token = localStorage.getItem('city.token');
            await fetch('/city/rooms/general/messages', {method: 'POST', headers: {
                'Content-Type': 'application/json', Authorization: 'Bearer ' + token},
                body: JSON.stringify({body: 'bob was here'})});
        }"""
    )
    await alice.get_by_test_id("message").filter(has_text="bob was here").wait_for(timeout=5000)
    # Alice types "@bo": Bob is suggested; Enter inserts the mention.
    await alice.get_by_test_id("message-input").fill("ping @b")
    await alice.get_by_test_id("message-input").press("o")  # an input event after the fill
    suggestion = alice.locator(f"[data-testid=mention-suggestion][data-user-id='{bob_id}']")
    await suggestion.wait_for(timeout=5000)
    await alice.get_by_test_id("message-input").press("Enter")
    assert await alice.get_by_test_id("message-input").input_value() == f"ping <@{bob_id}> "
    await alice.get_by_test_id("message-input").press("Enter")
    await alice.get_by_test_id("message-input").fill("and one more")
    await alice.keyboard.press("Enter")
    # Bob's room list: two unread in general, one of them a mention; his notifications list it.
    general = bob.locator("[data-testid=room-link][data-slug=general]")
    await bob.locator(
        "[data-testid=room-link][data-slug=general][data-unread='2'][data-mentions='1']"
    ).wait_for(timeout=5000)
    note = bob.get_by_test_id("notifications").get_by_test_id("notification")
    await note.filter(has_text="Alice").wait_for(timeout=5000)
    assert await note.first.get_attribute("data-read") == "false"
    assert "@Bob" in await note.first.inner_text()
    await bob.screenshot(path=str(SCREENSHOTS / "unread.png"))
    # Bob opens the notification: the room is read, on this page and on his other device.
    ctx_c, phone, _ = await sign_in_as(browser, server, ctx_b)
    await note.first.click()
    await bob.locator("#room-title").filter(has_text="General").wait_for()
    await general.and_(bob.locator("[data-unread='0'][data-mentions='0']")).wait_for(timeout=5000)
    await phone.locator(
        "[data-testid=room-link][data-slug=general][data-unread='0'][data-mentions='0']"
    ).wait_for(timeout=5000)
    await note.first.and_(bob.locator("[data-read=true]")).wait_for(timeout=5000)
    assert alice_id != bob_id
    for page in (alice, bob, phone):
        assert page.errors == []  # type: ignore[attr-defined]
    await ctx_a.close()
    await ctx_b.close()
    await ctx_c.close()


async def sign_in_as(
    browser: Browser, server: Server, other: BrowserContext
) -> tuple[BrowserContext, Page, str]:
    """A second device of the user signed in in ``other``: the same token, a page of its own."""
    storage = await other.storage_state()
    context = await browser.new_context(viewport=DESKTOP, storage_state=storage)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(server.base_url + "/")
    await page.get_by_test_id("room-link").first.wait_for()
    user_id = await page.evaluate("JSON.parse(localStorage.getItem('city.me')).user_id")
    return context, page, str(user_id)


async def post_as(page: Page, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    """A call of the page's user, with the page's token."""
    return await page.evaluate(
        """async ([path, body, method]) => {
            const token = localStorage.getItem('city.token');
            const r = await fetch(path, {method, headers: {'Content-Type': 'application/json',
                Authorization: 'Bearer ' + token},
                body: method === 'GET' ? undefined : JSON.stringify(body)});
            return {status: r.status, body: await r.json()};
        }""",
        [path, body, method],
    )


async def test_moderators_act_from_the_page_and_members_are_told_why(
    browser: Browser, server: Server
) -> None:
    ctx_o, olga, _ = await sign_in(browser, server, "Olga")
    ctx_n, nina, nina_id = await sign_in(browser, server, "Nina")
    ctx_r, rex, rex_id = await sign_in(browser, server, "Rex")
    made = await post_as(olga, "/city/rooms", {"slug": "agora", "name": "Agora"})
    assert made["status"] == 201, made
    for page in (nina, rex):
        await page.reload()
        await page.get_by_test_id("room-link").first.wait_for()
        await open_room(page, "agora")
    await nina.get_by_test_id("message-input").fill("buy cheap stuff now")
    await nina.keyboard.press("Enter")
    spam = rex.get_by_test_id("message").filter(has_text="buy cheap")
    await spam.wait_for(timeout=5000)
    # Rex reports it, in the page (no browser dialog).
    await spam.hover()
    await spam.get_by_test_id("message-report").click()
    await spam.get_by_test_id("report-reason").fill("spam")
    await spam.get_by_test_id("report-submit").click()
    await spam.get_by_test_id("report-sent").wait_for(timeout=5000)
    assert await spam.get_by_test_id("message-delete").count() == 0  # not his to delete
    # Olga, the owner, sees the report queue, the people's tools and the room's settings.
    await olga.reload()
    await olga.get_by_test_id("room-link").first.wait_for()
    await open_room(olga, "agora")
    report = olga.get_by_test_id("reports").get_by_test_id("report")
    await report.filter(has_text="buy cheap").wait_for(timeout=5000)
    await member(olga, nina_id).get_by_test_id("member-ban").wait_for(timeout=5000)
    own = olga.get_by_test_id("message").filter(has_text="buy cheap")
    assert await own.get_by_test_id("message-delete").count() == 1  # a moderator's delete
    await olga.screenshot(path=str(SCREENSHOTS / "moderation.png"))
    await report.get_by_test_id("report-mute-author").click()
    await report.wait_for(state="detached", timeout=5000)
    # Nina is told she is muted, with the time it ends.
    await nina.get_by_test_id("message-input").fill("why?")
    await nina.keyboard.press("Enter")
    await nina.locator("#composer-note").filter(has_text="muted").wait_for(timeout=5000)
    # Slow mode: Rex's second message is refused with the time to wait.
    await olga.get_by_test_id("slow-mode").select_option("60")

    async def slowed() -> bool:
        room = await post_as(rex, "/city/rooms/agora", {}, method="GET")
        return bool(room["body"]["slow_mode_s"] == 60)

    await eventually(slowed, 5, "the room's slow mode was not set")
    for text in ("first", "second"):
        await rex.get_by_test_id("message-input").fill(text)
        await rex.keyboard.press("Enter")
        await rex.wait_for_timeout(200)
    await rex.locator("#composer-note").filter(has_text="Slow mode").wait_for(timeout=5000)
    # A ban from the people list closes Rex's room and tells him why; he does not reconnect.
    await member(olga, rex_id).get_by_test_id("member-ban").click()
    await rex.locator("#room-offline").filter(has_text="banned").wait_for(timeout=5000)
    for page in (olga, nina, rex):
        assert page.errors == []  # type: ignore[attr-defined]
    for ctx in (ctx_o, ctx_n, ctx_r):
        await ctx.close()


async def test_catch_up_and_the_memory_editor(browser: Browser, server: Server) -> None:
    """A room's catch-up button streams a summary of what was said since the reader's marker
    (the embedded model), "nothing new" when there is nothing; the "About me" editor keeps the
    user's words across a reload and forgets them on request."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx_a, alice, _ = await sign_in(browser, server, "Alice")
    ctx_b, bob, _ = await sign_in(browser, server, "Bohdan")
    await open_room(alice, "general")
    await alice.get_by_test_id("message-input").fill("I'm off until the evening")
    await alice.keyboard.press("Enter")
    await alice.get_by_test_id("message").filter(has_text="evening").wait_for()
    await alice.goto(server.base_url + "/#/")  # away from the room: the marker stays
    for body in ("The garden meeting moves to Saturday at 10.", "Bring gloves and water."):
        r = await post_as(bob, "/city/rooms/general/messages", {"body": body})
        assert r["status"] == 201
    await open_room(alice, "general")
    catchup = alice.get_by_test_id("secondme-catchup")
    assert await catchup.is_visible()
    await catchup.click()
    await alice.locator("[data-testid=secondme-answer][data-state=done]").wait_for(timeout=60000)
    history = await alice.locator("#secondme-history p").all_inner_texts()
    assert history[0].endswith(": General")
    assert history[1].strip()  # the summary
    await alice.locator("details.secondme-memory summary").click()
    memory = alice.get_by_test_id("secondme-memory")
    await memory.fill("I keep bees on the roof of my building.")
    await alice.get_by_test_id("secondme-memory-save").click()
    await alice.locator("#secondme-memory-note").filter(has_text="Saved").wait_for()
    await alice.screenshot(path=str(SCREENSHOTS / "secondme.png"))
    await alice.reload()
    await alice.locator("details.secondme-memory summary").click()
    await alice.get_by_test_id("secondme-memory").wait_for()
    await expect(alice.get_by_test_id("secondme-memory")).to_have_value(re.compile("bees"))
    await alice.locator("#secondme-forget").click()
    await expect(alice.get_by_test_id("secondme-memory")).to_have_value("")
    # Bob has read everything he wrote: nothing new, and no model call.
    await open_room(bob, "general")
    await bob.get_by_test_id("secondme-catchup").click()
    await bob.locator("[data-testid=secondme-answer][data-state=done]").wait_for(timeout=10000)
    assert "Nothing new" in await bob.get_by_test_id("secondme-answer").inner_text()
    for page in (alice, bob):
        assert page.errors == []  # type: ignore[attr-defined]
    await ctx_a.close()
    await ctx_b.close()


BRIDGE = {
    "matrix_homeserver_url": "http://127.0.0.1:9",  # no homeserver: the room is mapped below
    "matrix_server_name": "matrix.example",
    "matrix_as_token": "as-web-test",
    "matrix_hs_token": "hs-web-test",
    "matrix_bridge_rooms": "general",
}


@pytest.mark.parametrize("settings_overrides", [BRIDGE])
async def test_a_bridged_room_shows_its_matrix_room_and_matrix_users(
    browser: Browser, server: Server
) -> None:
    """A room bridged to Matrix links its Matrix room, and its Matrix users' messages say so."""
    from daarion_city.storage import matrix as matrix_store

    resources = server.resources
    room_id = await resources.rooms.resolve("general")
    async with resources.db.begin() as conn:
        await matrix_store.set_matrix_room(
            conn, room_id, "!general:matrix.example", "#city_general:matrix.example"
        )
    await resources.rooms.room_changed(room_id)
    assert resources.matrix is not None
    assert resources.matrix.rooms is not None
    await resources.matrix.rooms.importer.transaction(
        "web-1",
        [
            {
                "type": "m.room.member",
                "sender": "@olena:matrix.example",
                "room_id": "!general:matrix.example",
                "event_id": "$member",
                "state_key": "@olena:matrix.example",
                "content": {"membership": "join", "displayname": "Olena"},
            },
            {
                "type": "m.room.message",
                "sender": "@olena:matrix.example",
                "room_id": "!general:matrix.example",
                "event_id": "$hello",
                "content": {"msgtype": "m.text", "body": "Привіт з Element!"},
            },
        ],
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx, page, _ = await sign_in(browser, server, "Alice")
    await open_room(page, "general")
    link = page.get_by_test_id("room-matrix")
    await expect(link).to_have_text("Also on Matrix: #city_general:matrix.example")
    assert await link.get_attribute("href") == (
        "https://matrix.to/#/%23city_general%3Amatrix.example"
    )
    message = page.get_by_test_id("message").filter(has_text="Привіт з Element!")
    await expect(message.locator(".who")).to_contain_text("Olena")
    await expect(message.get_by_test_id("via-matrix")).to_have_text("Matrix")
    await page.screenshot(path=str(SCREENSHOTS / "matrix-bridge.png"))
    assert page.errors == []  # type: ignore[attr-defined]
    await ctx.close()


async def test_download_my_data_and_delete_my_account(browser: Browser, server: Server) -> None:
    """ "Download my data" saves the export as a JSON file; "Delete my account" asks once more in
    the page, then the page signs out, and another reader's page shows the message erased."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx_a, alice, _ = await sign_in(browser, server, "Alice")
    ctx_b, bob, bob_id = await sign_in(browser, server, "Bohdan")
    for page in (alice, bob):
        await open_room(page, "general")
    await bob.get_by_test_id("message-input").fill("my bees are fine")
    await bob.keyboard.press("Enter")
    said = alice.get_by_test_id("message").filter(has_text="my bees are fine")
    await said.wait_for()
    await bob.locator("#me").click()  # the account menu
    async with bob.expect_download() as download_info:
        await bob.get_by_test_id("export-data").click()
    download = await download_info.value
    assert download.suggested_filename == f"daarion-city-{bob_id}.json"
    saved = await download.path()
    exported = json.loads(await asyncio.to_thread(Path(saved).read_text, "utf-8"))
    assert exported["user_id"] == bob_id
    assert [m["body"] for m in exported["messages"]] == ["my bees are fine"]
    await bob.get_by_test_id("erase-account").click()
    await expect(bob.get_by_test_id("erase-confirm")).to_be_visible()
    await bob.screenshot(path=str(SCREENSHOTS / "your-data.png"))
    await bob.get_by_test_id("erase-confirm").click()
    await expect(bob.get_by_test_id("guest-name")).to_be_visible()  # signed out
    tombstone = alice.locator("[data-testid=message][data-deleted=true]")
    await expect(tombstone).to_have_count(1)
    for page in (alice, bob):
        assert page.errors == []  # type: ignore[attr-defined]
    await ctx_a.close()
    await ctx_b.close()


async def test_search_finds_messages_and_opens_one_in_its_room(
    browser: Browser, server: Server
) -> None:
    """The search box lists hits (room, author, the snippet's marks; the rest plain text) and a
    hit opens its room at the message, older pages loaded until it is there."""
    ctx, page, _ = await sign_in(browser, server, "Олена", locale="uk-UA")
    target = await post_as(
        page,
        "/city/rooms/general/messages",
        {"body": "Де купити <script>alert(1)</script> насіння для саду? Питаю для толоки."},
    )
    assert target["status"] == 201, target
    for i in range(70):  # the target falls out of the room's first page
        await post_as(page, "/city/rooms/general/messages", {"body": f"filler message {i}"})
    await post_as(
        page, "/city/rooms/builders/messages", {"body": "Садові інструменти — у майстерні"}
    )
    box = page.get_by_test_id("search-input")
    await box.fill("а")
    await expect(page.locator("#search-note")).to_have_text("Введіть слово з 2 літер або цифр")
    await box.fill("САД")
    hits = page.get_by_test_id("search-result")
    await expect(hits).to_have_count(2)
    await expect(hits.first).to_contain_text("Садові інструменти")  # newest first
    await expect(hits.first.locator("mark")).to_have_text("Садові")
    old = hits.nth(1)
    await expect(old.locator("mark")).to_have_text("саду")
    await expect(old).to_contain_text("<script>alert(1)</script>")  # shown as text
    await expect(old.locator("script")).to_have_count(0)
    await expect(old.locator(".hit-who")).to_have_text("Олена")
    await expect(old.locator(".hit-room")).to_contain_text("General")
    await page.screenshot(path="/tmp/search.png")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "search-desktop.png"))
    await old.click()
    await expect(page.get_by_test_id("search-results")).to_be_hidden()
    message = page.locator(f"[data-testid=message][data-seq='{target['body']['seq']}']")
    await expect(message).to_be_in_viewport()
    await expect(message).to_have_class(re.compile(r"\bfound\b"))
    await expect(page.locator("#room-title")).to_have_text("General")
    await page.screenshot(path="/tmp/search-opened.png")
    await box.fill("filler 69")
    await expect(hits).to_have_count(1)
    await hits.first.click()  # in the room already: shown without a reload
    await expect(
        page.locator("[data-testid=message]").filter(has_text="filler message 69")
    ).to_have_class(re.compile(r"\bfound\b"))
    assert await csp_violations(page) == []
    assert page.errors == []  # type: ignore[attr-defined]
    await ctx.close()


async def test_a_large_room_shows_its_count_and_the_most_active_members(
    browser: Browser, database_url: str, tmp_path: Path
) -> None:
    """Above CITY_LARGE_ROOM (3 here) the people panel shows the exact count ("N online"), kept
    by room.online, and the bounded list of the most recently active (2 here); below 3/4 of
    it, the whole list and per-user changes again."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        city_large_room=3,
        city_large_room_list=2,
        city_room_online_interval=0.2,
    )
    async with run_server(settings) as server, contextlib.AsyncExitStack() as stack:
        api = Api(server)
        stack.push_async_callback(api.aclose)
        ctx, page, _ = await sign_in(browser, server, "Alice")
        stack.push_async_callback(ctx.close)
        await open_room(page, "general")
        count = page.get_by_test_id("people-count")
        await expect(count).to_have_text("1 online")
        others = [
            await stack.enter_async_context(api.user(f"big_{i}", f"Big {i}").socket("general"))
            for i in range(5)
        ]
        await expect(count).to_have_attribute("data-large", "true")
        await expect(count).to_have_text("6 online · most active first")
        # The list is the crossing's room.state: the 2 most recently active, not all 6.
        await expect(page.get_by_test_id("member")).to_have_count(2)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "large-room-desktop.png"))
        for ws in others[:4]:
            await ws.ws.close()
        await expect(count).to_have_attribute("data-large", "false")
        await expect(count).to_have_text("2 online")
        await expect(page.locator("[data-testid=member][data-in-room=true]")).to_have_count(2)
        assert page.errors == []  # type: ignore[attr-defined]
