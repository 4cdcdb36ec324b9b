"""Console login in a real browser: the key goes in once, a safe cookie comes out."""

from __future__ import annotations

import httpx
from playwright.sync_api import BrowserContext, Page

from tests.e2e.network import Network
from tests.web.conftest import login


def test_logging_in_sets_a_session_cookie_scripts_cannot_read(
    console_network: Network, context: BrowserContext, tab: Page
) -> None:
    login(tab, console_network, console_network.customer_key)
    assert tab.url.endswith("/console/customer")
    (cookie,) = [c for c in context.cookies() if c["name"] == "shareai_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert console_network.customer_key not in cookie["value"]
    assert tab.evaluate("document.cookie") == ""  # HttpOnly: invisible to page scripts


def test_a_wrong_key_is_refused_with_a_message(console_network: Network, tab: Page) -> None:
    tab.goto(console_network.url + "/login")
    tab.fill("input[name=api_key]", "sk-sai-" + "x" * 40)
    tab.click("button[type=submit]")
    assert "not valid" in tab.inner_text("[role=alert]")
    assert tab.url.endswith("/login")


def test_a_console_page_without_login_goes_to_the_login_page_and_back(
    console_network: Network, tab: Page
) -> None:
    tab.goto(console_network.url + "/console/provider")
    assert "/login?next=/console/provider" in tab.url
    tab.fill("input[name=api_key]", console_network.provider_key)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/console/provider")


def test_logging_out_ends_the_session(console_network: Network, tab: Page) -> None:
    login(tab, console_network, console_network.operator_key)
    tab.click("text=Log out")
    tab.wait_for_url("**/login")
    tab.goto(console_network.url + "/console/operator")
    assert "/login" in tab.url


def test_a_form_without_the_session_csrf_token_is_refused(console_network: Network) -> None:
    with httpx.Client(base_url=console_network.url) as client:
        response = client.post("/login", data={"api_key": console_network.customer_key})
        assert response.status_code == 303
        forged = client.post("/logout", data={"csrf_token": "guessed"})
        assert forged.status_code == 403
        assert "text/html" in forged.headers["content-type"]
        cross_site = client.post("/logout", data={}, headers={"origin": "https://evil.example"})
        assert cross_site.status_code == 403
        assert "another site" in cross_site.text
        # The session survived both forgeries.
        assert client.get("/console").headers["location"] == "/console/customer"


def test_the_login_page_never_redirects_off_site(console_network: Network) -> None:
    with httpx.Client(base_url=console_network.url) as client:
        response = client.post(
            "/login",
            data={"api_key": console_network.customer_key, "next": "//evil.example/x"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/console/customer"
