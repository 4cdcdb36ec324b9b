"""Browser tests: the real coordinator and nodes as processes, pages in Debian's Chromium.

Playwright drives ``/usr/bin/chromium`` (Debian's ``chromium`` package, installed by
``scripts/test``); it never downloads a browser. A missing Chromium fails the tests loudly, it
never skips them. Screenshots are saved as test artefacts under ``SHAREAI_ARTIFACTS`` (default
``test-artifacts/`` in the repository) with :func:`screenshot`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.e2e.network import Network, network

CHROMIUM = os.environ.get("SHAREAI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("SHAREAI_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)

MOCK_MODEL = "mock/tiny"

MOCK_NODE = f"""[[models]]
name = "{MOCK_MODEL}"
backend = "mock"
price_in_usd_per_1m = "0.50"
price_out_usd_per_1m = "1.50"
max_concurrency = 4
context_length = 4096
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module. Not session-wide: Playwright's sync API keeps an event
    loop running while it is open, and async tests of other modules need theirs."""
    executable = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if executable is None:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium package"
            " (scripts/test installs it; or set SHAREAI_CHROMIUM)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, laptop-sized."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 850})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def tab(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture(scope="module")
def console_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A coordinator (SQLite) with one mock node, shared by a module's browser tests."""
    with network(tmp_path_factory.mktemp("console")) as net:
        net.add_node("node-a", MOCK_NODE)
        net.wait_for_nodes(MOCK_MODEL, 1)
        yield net


def login(tab: Page, net: Network, api_key: str) -> None:
    """Log in through the login form, as a person would; lands on the role's console."""
    tab.goto(net.url + "/login")
    tab.fill("input[name=api_key]", api_key)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/console/**")


def screenshot(tab: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot as a test artefact; returns its path. ``full_page=False`` keeps what a
    laptop screen shows (the pictures docs/ uses)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=full_page)
    return path


def api(net: Network, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One call of the JSON API (``path`` under ``/v1``) with ``key`` as the bearer."""
    return httpx.request(
        method, net.base_url + path, headers={"authorization": f"Bearer {key}"}, **kwargs
    )


def settled_generation(net: Network, key: str, generation_id: str) -> dict[str, Any]:
    """The generation once its charge is posted to the ledger (``settled``)."""
    found: dict[str, Any] = {}

    def settled() -> bool:
        response = api(net, key, "GET", f"/generations/{generation_id}")
        found.clear()
        found.update(response.json())
        return response.status_code == 200 and found.get("settled") is True

    net.wait_until(settled, f"generation {generation_id} to be posted")
    return found
