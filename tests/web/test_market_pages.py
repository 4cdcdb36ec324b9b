"""The public marketplace (/models, /models/{model}, /providers) in Chromium on a real network.

One coordinator (SQLite) and one mock node run as processes for the module; requests go through
the official ``openai`` SDK. The node's Provider has an account name with an e-mail address in
it: neither, nor any key or account id, may reach a public page or its JSON.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Page

from tests.e2e.network import Network, network
from tests.web.conftest import MOCK_MODEL, MOCK_NODE, login, screenshot

PROVIDER_NAME = "Ada Lovelace Compute"
PROVIDER_EMAIL = "ada.lovelace@example.com"
CUSTOMER_NAME = "Brian Kernighan <bwk@example.org>"
ROW = f"tr[data-model='{MOCK_MODEL}']"
NAMED_CUSTOMER: dict[str, str] = {}
"""The key of a customer with a name and an e-mail address (set by the ``net`` fixture)."""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("market")) as running:
        provider = running.admin(
            "create-account", "--role", "provider", "--name", f"{PROVIDER_NAME} <{PROVIDER_EMAIL}>"
        )
        running.provider_key = str(provider["api_key"])
        customer = running.admin(
            "create-account", "--role", "customer", "--name", CUSTOMER_NAME, "--credits", "10"
        )
        named_key = str(customer["api_key"])
        running.add_node("node-a", MOCK_NODE)
        running.wait_for_nodes(MOCK_MODEL, 1)
        for key in (running.customer_key, named_key, running.customer_key):
            with openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0) as client:
                client.chat.completions.create(
                    model=MOCK_MODEL,
                    messages=[{"role": "user", "content": "hello there"}],
                    max_tokens=16,
                )
        NAMED_CUSTOMER["key"] = named_key
        yield running


def _json(net: Network, path: str) -> Any:
    response = httpx.get(net.url + path, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_models_page_lists_the_model_with_live_numbers(net: Network, tab: Page) -> None:
    tab.goto(net.url + "/models")
    assert tab.title().startswith("Models")
    assert tab.locator("header nav a[href='/models']").count() == 1
    assert tab.locator("header nav a[href='/providers']").count() == 1
    row = tab.locator(ROW)
    assert row.count() == 1
    assert row.locator("[data-col=nodes]").inner_text() == "1"
    assert row.locator("[data-col=price]").inner_text() == "$0.50 / 1M · $1.50 / 1M"
    assert row.locator("[data-col=ttft]").inner_text().endswith(" ms")  # measured: not a dash
    assert row.locator("[data-col=availability]").inner_text() == "100 % · 100 %"
    assert row.locator("[data-col=high-reputation]").inner_text() == "0 %"  # on probation
    (listed,) = _json(net, "/v1/market/models")["data"]
    assert listed["id"] == MOCK_MODEL
    assert listed["ttft_ms_p50"] > 0
    assert listed["availability"] == {"last_hour": 1.0, "last_day": 1.0}
    screenshot(tab, "public-models")


def test_the_models_page_sorts_and_filters_without_script(net: Network, tab: Page) -> None:
    tab.goto(net.url + "/models")
    tab.fill("#model-filters input[name=q]", "TINY")
    tab.select_option("#model-filters select[name=sort]", "price")
    tab.click("#model-filters button[type=submit]")
    tab.wait_for_url("**/models?*sort=price*")
    assert "q=TINY" in tab.url
    assert tab.locator(ROW).count() == 1
    assert tab.locator("#model-filters select[name=sort]").input_value() == "price"

    tab.goto(net.url + "/models?q=no-such-model&sort=speed")
    assert tab.locator(ROW).count() == 0
    assert "No model matches this search." in tab.inner_text("table[data-table=models]")
    tab.goto(net.url + "/models?max_price=0.10")  # the mock's output price is $1.50
    assert tab.locator(ROW).count() == 0
    tab.goto(net.url + "/models?max_price=2&min_availability=99")
    assert tab.locator(ROW).count() == 1


def test_a_bad_models_query_is_a_clear_400(net: Network) -> None:
    page = httpx.get(net.url + "/models", params={"sort": "<cheapest>"}, timeout=10)
    assert page.status_code == 400
    assert "sort must be one of name, price, speed" in page.text
    assert "<cheapest>" not in page.text  # escaped
    api = httpx.get(net.url + "/v1/market/models", params={"max_price": "free"}, timeout=10)
    assert api.status_code == 400
    assert api.json()["error"]["param"] == "max_price"
    assert httpx.get(net.url + "/models/no/such-model", timeout=10).status_code == 404


def test_the_model_page_shows_endpoints_a_chart_and_snippets_that_work(
    net: Network, tab: Page
) -> None:
    (endpoint,) = _json(net, f"/v1/models/{MOCK_MODEL}/endpoints")["data"]
    tab.goto(net.url + "/models")
    tab.click(f"{ROW} a")
    tab.wait_for_url(f"**/models/{MOCK_MODEL}")
    row = tab.locator(f"table[data-table=endpoints] tr[data-node='{endpoint['node']}']")
    assert endpoint["provider"].startswith("pv_")
    assert endpoint["provider"] in row.inner_text()
    assert "$0.50 / 1M · $1.50 / 1M" in row.inner_text()
    assert row.locator("[data-col=ttft]").inner_text().count("ms") == 2
    charts = tab.locator("[data-charts] svg.chart")
    assert charts.count() == 2
    assert tab.locator("[data-charts] svg.chart :is(polyline, circle)").count() >= 2
    screenshot(tab, "public-model")

    python = tab.inner_text("pre[data-snippet=python]")
    assert f'model="{MOCK_MODEL}"' in python
    assert f'base_url="{net.base_url}"' in python
    env = {**os.environ, "SHAREAI_API_KEY": net.customer_key}
    ran = subprocess.run(
        [sys.executable, "-c", python],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()  # the model's answer
    curl = tab.inner_text("pre[data-snippet=curl]")
    assert net.base_url + "/chat/completions" in curl
    if shutil.which("curl") is not None:
        answered = subprocess.run(
            ["bash", "-c", curl.replace("curl ", "curl -sf ", 1)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert answered.returncode == 0, answered.stderr
        assert '"chat.completion"' in answered.stdout

    tab.goto(net.url + f"/models/{MOCK_MODEL}?window=24h")
    assert tab.locator("[data-charts] svg.chart").count() == 2


def test_the_providers_page_shows_the_handle_and_tokens_served(net: Network, tab: Page) -> None:
    def served() -> bool:
        return any(p["tokens_served"] > 0 for p in _json(net, "/v1/providers")["data"])

    net.wait_until(served, "the requests to settle", 30)
    (profile,) = [p for p in _json(net, "/v1/providers")["data"] if p["nodes"]]
    assert profile["provider"].startswith("pv_")
    assert profile["models"] == [MOCK_MODEL]
    tab.goto(net.url + "/providers")
    row = tab.locator(f"tr[data-provider='{profile['provider']}']")
    assert MOCK_MODEL in row.inner_text()
    assert (
        int(row.locator("[data-col=tokens]").inner_text().replace(",", ""))
        == (profile["tokens_served"])
    )
    screenshot(tab, "public-providers")


PUBLIC_PATHS = (
    "/models",
    "/models?q=tiny&sort=price",
    f"/models/{MOCK_MODEL}",
    f"/models/{MOCK_MODEL}?window=24h",
    "/providers",
    "/v1/market/models",
    f"/v1/market/models/{MOCK_MODEL}",
    "/v1/providers",
    "/v1/models",
    f"/v1/models/{MOCK_MODEL}/endpoints",
)


def test_public_market_pages_and_json_show_no_secret_or_customer_data(net: Network) -> None:
    _scan_public_pages(net)


def _scan_public_pages(net: Network) -> None:
    """No key, account id, e-mail or unpublished name on any public page or its JSON."""
    keys = (net.customer_key, net.provider_key, net.operator_key, NAMED_CUSTOMER["key"])
    ids = []
    for key in keys:
        me = httpx.get(
            net.base_url + "/me", headers={"authorization": f"Bearer {key}"}, timeout=10
        ).json()
        ids.append(me["account_id"])
    assert "Brian Kernighan" in str(
        httpx.get(
            net.base_url + "/me",
            headers={"authorization": f"Bearer {NAMED_CUSTOMER['key']}"},
            timeout=10,
        ).json()
    )
    for path in PUBLIC_PATHS:
        response = httpx.get(net.url + path, timeout=10)
        assert response.status_code == 200, path
        text = response.text
        assert MOCK_MODEL in text, path  # the page has content: the scan means something
        for secret in (
            *keys,
            *ids,
            "sk-sai-",
            "acc_",
            PROVIDER_NAME,
            PROVIDER_EMAIL,
            "Brian Kernighan",
            "bwk@example.org",
            "@",
        ):
            assert secret not in text, (path, secret)


PUBLIC_NAME = "Open Weights Co-op"


def _published_names(net: Network) -> dict[str, set[str | None]]:
    """What each public JSON says of the node's Provider's name."""
    providers = {p["provider_name"] for p in _json(net, "/v1/providers")["data"] if p["nodes"]}
    market = {
        e["provider_name"] for e in _json(net, f"/v1/market/models/{MOCK_MODEL}")["endpoints"]
    }
    endpoints = {
        e["provider_name"] for e in _json(net, f"/v1/models/{MOCK_MODEL}/endpoints")["data"]
    }
    return {"providers": providers, "market": market, "endpoints": endpoints}


def test_a_provider_publishes_a_public_name_and_clears_it(net: Network, tab: Page) -> None:
    (profile,) = [p for p in _json(net, "/v1/providers")["data"] if p["nodes"]]
    handle = profile["provider"]
    assert profile["provider_name"] is None  # anonymous until the Provider opts in
    login(tab, net, net.provider_key)
    tab.goto(net.url + "/console/provider#public-name")
    assert handle in tab.locator("#public-name + section").inner_text()

    tab.fill("#set-public-name input[name=public_name]", "pv_impostor")
    tab.click("#set-public-name button[type=submit]")
    assert "may not start with pv_, nd_ or acc_" in tab.content()
    assert _published_names(net)["providers"] == {None}

    tab.goto(net.url + "/console/provider")
    tab.fill("#set-public-name input[name=public_name]", f"  {PUBLIC_NAME} ")
    tab.click("#set-public-name button[type=submit]")
    tab.wait_for_url("**/console/provider*")
    assert f"Your public name is now '{PUBLIC_NAME}'" in tab.content()
    assert PUBLIC_NAME in tab.locator("#public-name-now").inner_text()
    assert _published_names(net) == {
        "providers": {PUBLIC_NAME},
        "market": {PUBLIC_NAME},
        "endpoints": {PUBLIC_NAME},
    }
    tab.goto(net.url + "/providers")
    row = tab.locator(f"tr[data-provider='{handle}']")
    assert PUBLIC_NAME in row.inner_text()
    assert handle in row.inner_text()
    screenshot(tab, "public-providers-named")
    tab.goto(net.url + f"/models/{MOCK_MODEL}")
    endpoint = tab.locator("table[data-table=endpoints] tbody tr").first
    assert PUBLIC_NAME in endpoint.inner_text()
    assert handle in endpoint.inner_text()
    _scan_public_pages(net)  # the published name is public; the account's name still is not

    tab.goto(net.url + "/console/provider")
    tab.click("#clear-public-name button[type=submit]")
    tab.wait_for_url("**/console/provider*")
    assert "Your public name is cleared" in tab.content()
    assert _published_names(net)["providers"] == {None}
    assert _published_names(net)["endpoints"] == {None}
    for path in ("/providers", f"/models/{MOCK_MODEL}", "/v1/providers"):
        assert PUBLIC_NAME not in httpx.get(net.url + path, timeout=10).text, path
    _scan_public_pages(net)
