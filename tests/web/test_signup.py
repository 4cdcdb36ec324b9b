"""Self-serve sign-up in the browser (headless Chromium) against real coordinator processes.

One coordinator runs with ``SHAREAI_SIGNUP=invite`` and a 5 USD starter credit and a mock node;
another keeps the default (sign-up off). The operator makes codes with ``shareai admin invite``;
the key a person gets on the page works with the official ``openai`` SDK.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.network import Network, network
from tests.web.conftest import MOCK_MODEL, MOCK_NODE, screenshot

SIGNUP_ENV = {"SHAREAI_SIGNUP": "invite", "SHAREAI_SIGNUP_STARTER_CREDIT_USD": "5"}


@pytest.fixture(scope="module")
def invite_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("signup"), env=SIGNUP_ENV) as net:
        net.add_node("node-a", MOCK_NODE)
        net.wait_for_nodes(MOCK_MODEL, 1)
        yield net


def _invite(net: Network, *options: str) -> str:
    return str(net.admin("invite", "create", *options)["code"])


def _sign_up(tab: Page, net: Network, role: str, name: str, code: str) -> None:
    tab.goto(net.url + "/login")
    tab.click("#signup-link")
    tab.wait_for_url("**/signup")
    tab.check(f"input[name=role][value={role}]")
    tab.fill("input[name=name]", name)
    tab.fill("input[name=invite_code]", code)
    tab.click("#signup-form button[type=submit]")


def test_a_customer_signs_up_with_an_invite_and_uses_the_key_at_once(
    invite_network: Network, tab: Page
) -> None:
    net = invite_network
    code = _invite(net, "--uses", "1", "--role", "customer")
    _sign_up(tab, net, "customer", "Ada Lovelace", code)

    expect(tab.locator("h1")).to_have_text("Welcome, Ada Lovelace")
    expect(tab.locator(".notice")).to_contain_text("Store your API key now")
    raw_key = tab.locator("#new-key").inner_text().strip()
    assert raw_key.startswith("sk-sai-")
    assert raw_key not in tab.url
    screenshot(tab, "signup-key")

    tab.click("#to-console")
    tab.wait_for_url("**/console/customer")
    expect(tab.locator("#top-ups")).to_contain_text("starter credit")
    expect(tab.locator("#top-ups")).to_contain_text("5.00")
    assert raw_key not in tab.content()  # shown once: never again

    client = openai.OpenAI(
        base_url=net.base_url,
        api_key=raw_key,
        max_retries=0,
        default_headers={"connection": "close"},
    )
    answer = client.chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert answer.choices[0].message.content
    account = httpx.get(
        net.base_url + "/account", headers={"authorization": f"Bearer {raw_key}"}
    ).json()
    assert account["role"] == "customer"

    # The code had one use: the next person is told it is used up.
    tab.context.clear_cookies()
    _sign_up(tab, net, "customer", "Someone else", code)
    expect(tab.locator("#signup-error")).to_contain_text("used up")


@pytest.mark.parametrize(
    ("options", "code", "reason"),
    [
        ((), "sai-invite-wrong", "not valid"),
        (("--role", "provider"), None, "for provider accounts only"),
    ],
)
def test_an_unusable_code_is_refused_with_a_specific_message(
    invite_network: Network, tab: Page, options: tuple[str, ...], code: str | None, reason: str
) -> None:
    given = code if code is not None else _invite(invite_network, *options)
    _sign_up(tab, invite_network, "customer", "Mallory", given)
    expect(tab.locator("#signup-error")).to_contain_text(reason)
    assert "/console" not in tab.url


def test_an_expired_code_is_refused(invite_network: Network) -> None:
    code = _invite(invite_network)
    _age_invites(invite_network.data_dir / "coordinator.db")
    response = _post_signup(invite_network, "customer", "Late", code)
    assert response.status_code == 403
    assert "expired" in response.text


def _age_invites(database: Path) -> None:
    """Move every unused code's expiry into the past (the network's SQLite file)."""
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE invite_codes SET expires_at_ms = 1 WHERE uses = 0")


def _post_signup(net: Network, role: str, name: str, code: str) -> httpx.Response:
    return httpx.post(
        net.url + "/signup",
        data={"role": role, "name": name, "invite_code": code},
        headers={"origin": net.url},
    )


def test_a_provider_signs_up_and_lands_on_the_provider_console(
    invite_network: Network, tab: Page
) -> None:
    code = _invite(invite_network, "--role", "provider")
    _sign_up(tab, invite_network, "provider", "Grace's GPUs", code)
    expect(tab.locator("#new-key")).to_contain_text("sk-sai-")
    expect(tab.locator("#signup-form")).to_have_count(0)
    tab.click("#to-console")
    tab.wait_for_url("**/console/provider")
    expect(tab.locator("h1").first).to_be_visible()


def test_the_signup_page_for_the_docs(invite_network: Network, tab: Page) -> None:
    tab.set_viewport_size({"width": 1100, "height": 760})
    tab.goto(invite_network.url + "/signup")
    tab.fill("input[name=name]", "Ada Lovelace")
    tab.fill("input[name=invite_code]", "sai-invite-…")
    screenshot(tab, "signup")


def test_nobody_may_sign_up_as_operator(invite_network: Network) -> None:
    code = _invite(invite_network)
    response = _post_signup(invite_network, "operator", "Eve", code)
    assert response.status_code == 400
    assert "a customer, a provider or a builder" in response.text


def test_sign_up_from_another_site_is_refused(invite_network: Network) -> None:
    response = httpx.post(
        invite_network.url + "/signup",
        data={"role": "customer", "name": "Eve", "invite_code": "x"},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_sign_up_off_refuses_and_the_login_page_has_no_link(
    console_network: Network, tab: Page
) -> None:
    tab.goto(console_network.url + "/login")
    expect(tab.locator("#signup-link")).to_have_count(0)
    page = httpx.get(console_network.url + "/signup")
    assert page.status_code == 404
    assert "sign-up is switched off" in page.text
    refused = _post_signup(console_network, "customer", "Eve", "")
    assert refused.status_code == 404


def test_too_many_sign_ups_from_one_address_get_a_429_page(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {"SHAREAI_SIGNUP": "open"}
    with network(tmp_path_factory.mktemp("signup-open"), env=env) as net:
        statuses = [_post_signup(net, "builder", f"b{n}", "").status_code for n in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = _post_signup(net, "builder", "b6", "")
        assert refused.status_code == 429
        assert "too many sign-ups from your address" in refused.text
