"""The portal in real Chromium: the whole journey of issue 13 against a real ``crohooks
serve`` process and a real receiver on loopback, and the escaping checked where it
matters, in the browser.

Chromium is the system's (Debian's ``chromium``); nothing downloads a browser. Without it
these tests skip, in one line, unless CROHOOKS_TEST_REQUIRE_BROWSER=1 (CI), where they fail.
Screenshots go to a temporary folder, or to CROHOOKS_TEST_SCREENSHOTS (``docs/portal``
renews the pictures docs/portal.md shows).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import Api, api_headers, free_port, mint_token, process_env, started
from tests.support.receiver import ReceivedRequest, Receiver, Reply

CHROMIUM = os.environ.get("CROHOOKS_TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("CROHOOKS_TEST_REQUIRE_BROWSER") == "1"

if not os.access(CHROMIUM, os.X_OK):
    if REQUIRE_BROWSER:
        pytest.fail(
            f"Chromium is required (CROHOOKS_TEST_REQUIRE_BROWSER=1) but {CHROMIUM} is missing",
            pytrace=False,
        )
    pytest.skip(
        f"browser tests skipped: no Chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

pytestmark = pytest.mark.slow
DEADLINE_SECONDS = 20.0
EVIL_BODY = b"<script>window.__xss = 'body'</script><img src=x onerror=\"window.__xss='img'\">"
EVIL_HEADER = "<script>window.__xss = 'header'</script>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    chosen = os.environ.get("CROHOOKS_TEST_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Answers 410 Gone with hostile content to events whose data says ``fail``."""

    def rule(request: ReceivedRequest) -> Reply:
        if b'"fail": true' in request.body:
            return Reply(410, headers=[("X-Evil", EVIL_HEADER)], body=EVIL_BODY)
        return Reply(200, body=b"ok")

    async with Receiver() as server:
        server.respond_with(rule)
        yield server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Api, dict[str, str]]]:
    env = process_env(f"sqlite:///{tmp_path / 'crohooks.db'}", poll_interval=0.1)
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    async with started("serve", args, env=env, logdir=tmp_path) as process:
        api = Api(process, f"http://127.0.0.1:{port}")
        await api.ready()
        yield api, env


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if await check():
            return
        await _pause()
    pytest.fail(f"not within {DEADLINE_SECONDS} s: {what}")


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.1)


async def _no_script_ran(page: Page) -> None:
    assert await page.evaluate("() => window.__xss === undefined")


async def _portal_link(http: httpx.AsyncClient, base: str, token: str, **body: Any) -> str:
    response = await http.post(
        f"{base}/portal/links", headers=api_headers(token), json=body or None
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


async def test_the_whole_journey_in_chromium(
    browser: Browser,
    server: tuple[Api, dict[str, str]],
    receiver: Receiver,
    shots: Path,
    tmp_path: Path,
) -> None:
    api, env = server
    base = api.base_url
    token = await mint_token(env, tmp_path)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        link = await _portal_link(http, base, token)

        async def deliveries(hook_id: int, status: str | None = None) -> list[dict[str, Any]]:
            query = f"?status={status}" if status else ""
            answer = await http.get(
                f"{base}/hooks/{hook_id}/deliveries{query}", headers=api_headers(token)
            )
            results: list[dict[str, Any]] = answer.json()["results"]
            return results

        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # Open the link: the landing page trades the code for a session, and the code
        # is gone from the address bar.
        await page.goto(link)
        await page.wait_for_url(f"{base}/portal/hooks")
        assert "code=" not in page.url
        cookies = await context.cookies()
        [session] = [c for c in cookies if c["name"] == "crohooks_portal"]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"

        # Create a hook pointing at the receiver, events as checkboxes.
        await page.get_by_label("URL").fill(receiver.url_for("/hooks/cro"))
        await page.get_by_label("Job", exact=True).check()
        await page.get_by_label("Customer", exact=True).check()
        await page.get_by_role("button", name="Create hook").click()
        await page.wait_for_url(re.compile(r".*/portal/hooks/\d+$"))
        hook_id = int(page.url.rsplit("/", 1)[1])

        # Ping, and read what was sent.
        await page.get_by_role("button", name="Ping").click()
        await expect(page.locator("#ping-status")).to_have_text("200")
        await expect(page.locator("#ping-message")).to_have_text("No exceptions raised.")
        [pinged] = [r for r in receiver.requests if r.header("X-Cro-Event") == "Ping"]
        await expect(page.locator("#ping-signature")).to_have_text(
            pinged.header("X-Cro-Signature") or "?"
        )

        # Publish: the platform's backend over the API, and a test event from the page.
        for n in range(3):
            await http.post(
                f"{base}/events",
                headers=api_headers(token),
                json={"event": "Job", "data": {"n": n}},
            )
        for n in range(2):
            await http.post(
                f"{base}/events",
                headers=api_headers(token),
                json={"event": "Customer", "data": {"n": n, "fail": True}},
            )
        await page.get_by_label("Event", exact=True).select_option("Job")
        await page.get_by_role("button", name="Publish to the tenant's hooks").click()
        await expect(page.locator("#published")).to_contain_text("queued for 1 hook(s)")

        async def settled() -> bool:
            return not await deliveries(hook_id, "pending") and len(await deliveries(hook_id)) == 7

        await _eventually(settled, "every delivery attempted")

        # The chart shows what happened, as pictures.
        await page.goto(f"{base}/portal/hooks/{hook_id}")
        await expect(page.locator("#chart rect[data-status=succeeded]")).to_have_count(1)
        await expect(page.locator("#chart rect[data-status=failed]")).to_have_count(1)
        await expect(page.locator("#durations")).to_contain_text("p99")
        await page.screenshot(path=str(shots / "hook.png"), full_page=True)
        await page.goto(f"{base}/portal/hooks")
        await page.screenshot(path=str(shots / "hooks.png"), full_page=True)

        # The log: filter the failures, open one, read the hostile reply as text.
        await page.goto(f"{base}/portal/hooks/{hook_id}")
        await page.get_by_role("link", name="Delivery log").click()
        await expect(page.locator("#total")).to_contain_text("7 deliveries")
        await page.get_by_label("Status").select_option("failed")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("#total")).to_contain_text("2 deliveries")
        await page.screenshot(path=str(shots / "deliveries.png"), full_page=True)
        await page.locator("#deliveries a").first.click()
        await expect(page.locator(".response-body")).to_have_text(EVIL_BODY.decode())
        await expect(page.locator(".response-headers")).to_contain_text(EVIL_HEADER)
        await _no_script_ran(page)
        await page.screenshot(path=str(shots / "delivery.png"), full_page=True)

        # Redeliver it, once the receiver has recovered.
        receiver.respond(200)
        await page.get_by_role("button", name="Redeliver").click()
        delivery_id = page.url.rsplit("/", 1)[1]

        async def redelivered() -> bool:
            answer = await http.get(
                f"{base}/hooks/{hook_id}/deliveries/{delivery_id}", headers=api_headers(token)
            )
            return bool(answer.json()["status"] == "succeeded")

        await _eventually(redelivered, "the redelivery succeeded")
        await page.reload()
        await expect(page.locator("#delivery-status")).to_have_text("succeeded")
        await expect(page.locator("#attempt-2 .attempt-status")).to_have_text("200")

        # Recover the window that holds the other failure: a count first, then the queue.
        await page.goto(f"{base}/portal/hooks/{hook_id}/recover")
        await page.get_by_label("From (UTC)").fill("2020-01-01T00:00:00")
        await page.get_by_role("button", name="Count failed deliveries").click()
        await expect(page.locator("#recover-count")).to_have_text(
            "1 failed deliveries in this window."
        )
        await page.screenshot(path=str(shots / "recover.png"), full_page=True)
        await page.get_by_role("button", name="Re-queue 1 deliveries").click()
        await expect(page.locator("#recovered")).to_have_text("1 failed deliveries re-queued.")

        async def recovered() -> bool:
            return not await deliveries(hook_id, "failed")

        await _eventually(recovered, "the recovered delivery succeeded")

        # Sign out: the session is over, on the server too.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.locator("#signed-out")).to_be_visible()
        await page.goto(f"{base}/portal/hooks")
        await expect(page.locator("h1")).to_have_text("Not signed in")
        reused = await context.new_page()
        await reused.goto(link)
        await expect(reused.locator("h1")).to_have_text("This link can't be used")
        assert errors == []
        await context.close()


async def test_a_script_in_a_hook_url_runs_nothing(
    browser: Browser,
    server: tuple[Api, dict[str, str]],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    api, env = server
    token = await mint_token(env, tmp_path)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        link = await _portal_link(http, api.base_url, token)
    hostile = receiver.url_for("/<script>window.__xss='url'</script>")
    page = await browser.new_page()
    await page.goto(link)
    await page.wait_for_url(f"{api.base_url}/portal/hooks")
    await page.get_by_label("URL").fill(hostile)
    await page.get_by_role("button", name="Create hook").click()
    await page.wait_for_url(re.compile(r".*/portal/hooks/\d+$"))
    await expect(page.locator("#hook-url")).to_have_text(hostile)
    await _no_script_ran(page)
    await page.goto(f"{api.base_url}/portal/hooks")
    await expect(page.locator("#hooks .url")).to_have_text(hostile)
    await _no_script_ran(page)
    await page.close()


async def test_usable_at_360_pixels_and_from_the_keyboard(
    browser: Browser,
    server: tuple[Api, dict[str, str]],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    api, env = server
    token = await mint_token(env, tmp_path)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        link = await _portal_link(http, api.base_url, token, role="Dispatcher")
    page = await browser.new_page(viewport={"width": 360, "height": 740})
    await page.goto(link)
    await page.wait_for_url(f"{api.base_url}/portal/hooks")
    # Everything by keyboard: to the URL field, type, tick an event, submit.
    await page.get_by_label("URL").focus()
    await page.keyboard.type(receiver.url)
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Space")
    await page.get_by_label("URL").press("Enter")
    await page.wait_for_url(re.compile(r".*/portal/hooks/\d+$"))
    await expect(page.locator("dl.facts dd").nth(1)).to_have_text("Job")
    for path in ("/portal/hooks", page.url.removeprefix(api.base_url)):
        await page.goto(f"{api.base_url}{path}")
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, path
    # A Dispatcher is offered no publishing, as the API allows a Dispatcher none.
    assert await page.get_by_role("button", name="Publish to the tenant's hooks").count() == 0
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
              .filter(e => !(e.labels && e.labels.length)).length"""
    )
    assert unlabelled == 0
    await page.close()
