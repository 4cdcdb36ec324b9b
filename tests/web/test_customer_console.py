"""The customer console in a real browser, against a real coordinator and mock nodes.

Requests go through the official ``openai`` SDK; what the page shows is checked against the
JSON API (``GET /v1/account``, ``GET /v1/generations/{id}``), which is the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Page

from coordinator.web.filters import usd
from tests.e2e.network import Network
from tests.web.conftest import MOCK_MODEL, api, login, screenshot, settled_generation

OTHER_MODEL = "mock/large"

OTHER_NODE = f"""[[models]]
name = "{OTHER_MODEL}"
backend = "mock"
price_in_usd_per_1m = "2.00"
price_out_usd_per_1m = "6.00"
max_concurrency = 4
context_length = 4096
"""


@pytest.fixture(scope="module")
def net(console_network: Network) -> Network:
    """The console network with a second model, so a route's choice is visible in the answer."""
    console_network.add_node("node-large", OTHER_NODE)
    console_network.wait_for_nodes(OTHER_MODEL, 1)
    return console_network


def _client(net: Network, key: str) -> openai.OpenAI:
    # "connection: close": these clients are never closed, and a kept-alive socket left for
    # the garbage collector would fail a later test with a ResourceWarning.
    return openai.OpenAI(
        base_url=net.base_url, api_key=key, max_retries=0, default_headers={"connection": "close"}
    )


def _micro_usd(tab: Page, selector: str) -> int:
    return int(tab.get_attribute(selector, "data-micro-usd") or "nan")


def test_the_page_shows_the_balance_and_a_request_with_its_cost_breakdown(
    net: Network, tab: Page
) -> None:
    reply = _client(net, net.customer_key).chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "Count the costs, please."}]
    )
    generation = settled_generation(net, net.customer_key, reply.id)

    login(tab, net, net.customer_key)
    assert tab.url.endswith("/console/customer")
    account = api(net, net.customer_key, "GET", "/account").json()["balance"]
    for part in ("available", "held", "charged_not_yet_posted"):
        cell = f"[data-balance={part}]"
        assert _micro_usd(tab, cell) == account[part]
        assert tab.inner_text(cell) == usd(account[part])
    assert account["available"] < 100_000_000  # the request was paid from the 100 USD

    row = f"tr[data-generation='{reply.id}']"
    cost = generation["cost"]
    for part, key in (
        ("provider", "provider_micro_usd"),
        ("builder", "builder_surcharge_micro_usd"),
        ("platform", "platform_fee_micro_usd"),
        ("total", "total_micro_usd"),
    ):
        cell = f"{row} [data-part={part}]"
        assert _micro_usd(tab, cell) == cost[key], part
        assert tab.inner_text(cell) == usd(cost[key])
    assert cost["total_micro_usd"] > 0
    assert tab.get_attribute(f"{row} [data-model]", "data-model") == generation["model"]
    assert tab.get_attribute(f"{row} [data-node]", "data-node") == generation["node"]
    usage = generation["usage"]
    assert tab.inner_text(f"{row} [data-tokens]") == (
        f"{usage['prompt_tokens']} / {usage['completion_tokens']}"
    )
    ttft = generation["timings_ms"]["time_to_first_token"]
    assert tab.inner_text(f"{row} [data-ttft-ms]") == f"{ttft} ms"
    screenshot(tab, "customer-console")
    screenshot(tab, "customer-console-viewport", full_page=False)

    # The balance and the requests refresh without a reload (live.js, every 5 s).
    url = tab.url
    later = _client(net, net.customer_key).chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "And one more."}]
    )
    tab.wait_for_selector(f"tr[data-generation='{later.id}']")
    assert tab.url == url
    assert _micro_usd(tab, "[data-balance=available]") < account["available"]


def test_a_key_made_in_the_browser_works_until_it_is_revoked_there(net: Network, tab: Page) -> None:
    login(tab, net, net.customer_key)
    tab.click("#create-key button")
    raw_key = tab.inner_text("#new-key").strip()
    key_id = tab.get_attribute("#new-key", "data-key-id") or ""
    assert raw_key.startswith("sk-sai-")
    assert raw_key not in tab.url
    screenshot(tab, "customer-console-new-key")

    reply = _client(net, raw_key).chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "with my new key"}]
    )
    assert reply.choices[0].message.content

    tab.goto(net.url + "/console/customer")
    assert raw_key not in tab.content()  # shown once, never again
    revoke = tab.locator(f"tr[data-key='{key_id}'] button", has_text="Revoke")
    revoke.click()
    tab.wait_for_url("**/console/customer?notice=*")
    assert "is revoked" in tab.inner_text("[role=status]")
    assert "revoked" in tab.inner_text(f"tr[data-key='{key_id}']")

    with pytest.raises(openai.AuthenticationError) as refused:
        _client(net, raw_key).chat.completions.create(
            model=MOCK_MODEL, messages=[{"role": "user", "content": "still there?"}]
        )
    assert refused.value.status_code == 401


_ROUTE: dict[str, Any] = {
    "description": "classification to the large model",
    "rules": [{"name": "classify", "when": {"task": ["classification"]}, "models": [MOCK_MODEL]}],
    "default": {"models": [MOCK_MODEL]},
}


def _ask_route(net: Network, task: str) -> tuple[str, str, str]:
    """A request to ``route:support``: the model that served, the route header and its rule."""
    raw = _client(net, net.customer_key).chat.completions.with_raw_response.create(
        model="route:support",
        messages=[{"role": "user", "content": "Is this spam? 'You won a prize'"}],
        metadata={"task": task},
    )
    reply = raw.parse()
    return reply.model, raw.headers["x-shareai-route"], raw.headers["x-shareai-route-rule"]


def test_a_task_route_is_created_edited_dry_run_and_deleted_in_the_browser(
    net: Network, tab: Page
) -> None:
    login(tab, net, net.customer_key)
    tab.goto(net.url + "/console/customer/routes")
    tab.fill("#new-route input[name=name]", "support")
    tab.fill("#new-route textarea[name=document]", json.dumps(_ROUTE, indent=2))
    tab.click("#new-route button[type=submit]")
    tab.wait_for_url("**/console/customer/routes/support?notice=*")
    assert "created (version 1)" in tab.inner_text("[role=status]")
    assert _ask_route(net, "classification") == (MOCK_MODEL, "support@v1", "classify")

    # A mistake is named precisely, and what was typed stays in the form.
    bad = {**_ROUTE, "rules": [{**_ROUTE["rules"][0], "models": ["no/such-model"]}]}
    typed = json.dumps(bad, indent=2)
    tab.fill("#edit-route textarea[name=document]", typed)
    tab.click("#edit-route button[type=submit]")
    alert = tab.inner_text("[role=alert]")
    assert alert.startswith("rules[0].models[0]: ")
    assert "no such model" in alert
    assert tab.input_value("#edit-route textarea[name=document]") == typed.replace("\r\n", "\n")

    # Classification now goes to the large model.
    good = {**_ROUTE, "rules": [{**_ROUTE["rules"][0], "models": [OTHER_MODEL]}]}
    tab.fill("#edit-route textarea[name=document]", json.dumps(good))
    tab.click("#edit-route button[type=submit]")
    tab.wait_for_url("**/console/customer/routes/support?notice=*")
    assert "version 2" in tab.inner_text("[role=status]")
    assert tab.locator("#versions tr[data-version]").count() == 2

    tab.fill("#dry-run input[name=task]", "classification")
    tab.click("#dry-run button[type=submit]")
    assert tab.inner_text("#dry-run-result [data-rule]") == "classify"
    assert tab.inner_text("#dry-run-result [data-models]") == OTHER_MODEL
    assert tab.inner_text(f"#dry-run-result tr[data-model='{OTHER_MODEL}'] td.num") == "1"
    assert tab.input_value("#dry-run input[name=task]") == "classification"
    screenshot(tab, "customer-routes")
    tab.fill("#dry-run input[name=task]", "chat")
    tab.click("#dry-run button[type=submit]")
    assert tab.inner_text("#dry-run-result [data-rule]") == "default"

    # Real requests follow the route the browser saved.
    assert _ask_route(net, "classification") == (OTHER_MODEL, "support@v2", "classify")
    assert _ask_route(net, "chat") == (MOCK_MODEL, "support@v2", "default")

    tab.click("#delete-route button")
    tab.wait_for_url("**/console/customer/routes?notice=*")
    assert "deleted" in tab.inner_text("[role=status]")
    assert tab.locator("tr[data-route=support]").count() == 0
    with pytest.raises(openai.NotFoundError):
        _ask_route(net, "classification")


@contextmanager
def _console(net: Network, key: str) -> Iterator[httpx.Client]:
    """An HTTP client logged in to the console (cookie) with ``key``."""
    with httpx.Client(base_url=net.url) as client:
        assert client.post("/login", data={"api_key": key}).status_code == 303
        yield client


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path).text
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_customer_pages_refuse_other_roles_and_other_accounts_keys(net: Network) -> None:
    other = net.admin("create-account", "--role", "customer", "--name", "someone else")
    other_key = str(other["api_key"])
    (other_key_id,) = [k["id"] for k in api(net, other_key, "GET", "/keys").json()["data"]]
    with _console(net, net.operator_key) as operator:
        for path in ("/console/customer", "/console/customer/routes", "/console/customer/live"):
            assert operator.get(path).status_code == 403
    with _console(net, net.customer_key) as customer:
        token = _csrf(customer, "/console/customer")
        theirs = customer.post(
            f"/console/customer/keys/{other_key_id}/revoke", data={"csrf_token": token}
        )
        unknown = customer.post(
            "/console/customer/keys/key_doesnotexist/revoke", data={"csrf_token": token}
        )
        assert theirs.status_code == unknown.status_code == 404
        assert f"no API key &#39;{other_key_id}&#39; of yours" in theirs.text
        assert api(net, other_key, "GET", "/me").status_code == 200  # still alive
        forged = customer.post("/console/customer/keys", data={"csrf_token": "guess"})
        assert forged.status_code == 403
        # Another account's route is not found, like one that was never made.
        api(net, other_key, "PUT", "/routes/theirs", json={"default": {"models": [MOCK_MODEL]}})
        assert customer.get("/console/customer/routes/theirs").status_code == 404
        assert customer.get("/console/builder").status_code == 403
