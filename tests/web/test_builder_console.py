"""The Builder console in a real browser, against a real coordinator and a mock node.

The Builder's app is registered with the JSON API (``POST /v1/apps``) and a customer authorises
it there, as docs/builders.md describes; requests through the app use the official ``openai``
SDK with the app-scoped key. The surcharge is changed in the browser, and the next request's
usage record (``GET /v1/generations/{id}``) must carry it.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Page

from coordinator.ledger import Pricing, charge_for, period_bounds_ms
from coordinator.web.filters import usd
from tests.e2e.network import Network
from tests.web.conftest import MOCK_MODEL, api, login, screenshot, settled_generation

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class BuilderApp:
    builder_key: str
    app_id: str
    app_key: str
    """The customer's app-scoped key for the app."""


def _new_app(net: Network, name: str, surcharge_percent: str) -> BuilderApp:
    builder = net.admin("create-account", "--role", "builder", "--name", f"{name} team")
    builder_key = str(builder["api_key"])
    app = api(
        net,
        builder_key,
        "POST",
        "/apps",
        json={"name": name, "surcharge_percent": surcharge_percent},
    )
    assert app.status_code == 201, app.text
    app_id = app.json()["id"]
    authorization = api(net, net.customer_key, "POST", f"/apps/{app_id}/authorizations")
    assert authorization.status_code == 201, authorization.text
    return BuilderApp(builder_key, app_id, authorization.json()["api_key"])


@pytest.fixture(scope="module")
def chat_pal(console_network: Network) -> BuilderApp:
    return _new_app(console_network, "Chat Pal", "2.5")


def _through_app(net: Network, app: BuilderApp, text: str, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=net.base_url, api_key=app.app_key, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model=extra.pop("model", MOCK_MODEL),
        messages=[{"role": "user", "content": text}],
        **extra,
    )


def _builder_part(generation: dict[str, Any], surcharge_bps: int) -> int:
    """The surcharge a generation owes at ``surcharge_bps`` (the ledger's rounding rule)."""
    prices, usage = generation["pricing_micro_usd_per_1m"], generation["usage"]
    pricing = Pricing(prices["input"], prices["output"], surcharge_bps=surcharge_bps)
    return charge_for(pricing, usage["prompt_tokens"], usage["completion_tokens"]).builder_micro_usd


def _int(tab: Page, selector: str, attribute: str) -> int:
    return int(tab.get_attribute(selector, attribute) or "nan")


def test_a_surcharge_changed_in_the_browser_bills_the_next_request_and_the_numbers_add_up(
    console_network: Network, chat_pal: BuilderApp, tab: Page
) -> None:
    net, app = console_network, chat_pal
    first = settled_generation(
        net, net.customer_key, _through_app(net, app, "before the change").parse().id
    )
    assert first["app_id"] == app.app_id
    assert first["pricing_micro_usd_per_1m"]["surcharge_version"] == 1
    assert first["cost"]["builder_surcharge_micro_usd"] == _builder_part(first, 250)

    login(tab, net, app.builder_key)
    assert tab.url.endswith("/console/builder")
    card = f"section[data-app='{app.app_id}']"
    assert tab.inner_text(f"{card} [data-surcharge-bps]") == "2.5 %"
    assert tab.inner_text("#cap") == "20 %"

    # Over the operator's cap: refused with a clear message, the typed value kept.
    tab.fill(f"{card} input[name=surcharge_percent]", "25")
    tab.click(f"{card} form.surcharge button")
    alert = tab.inner_text(f"{card} [role=alert]")
    assert "above this coordinator's maximum of 20%" in alert
    assert tab.input_value(f"{card} input[name=surcharge_percent]") == "25"
    assert tab.inner_text(f"{card} [data-surcharge-version]") == "1"

    tab.fill(f"{card} input[name=surcharge_percent]", "20")
    tab.click(f"{card} form.surcharge button")
    tab.wait_for_url("**/console/builder?notice=*")
    assert "version 2" in tab.inner_text("[role=status]")
    assert tab.inner_text(f"{card} [data-surcharge-bps]") == "20 %"
    assert tab.inner_text(f"{card} [data-surcharge-version]") == "2"

    # The next request through the app pays the new surcharge to the Builder.
    second = settled_generation(
        net,
        net.customer_key,
        _through_app(net, app, "after the change, a longer question").parse().id,
    )
    assert second["pricing_micro_usd_per_1m"]["surcharge_version"] == 2
    builder_part = second["cost"]["builder_surcharge_micro_usd"]
    assert builder_part == _builder_part(second, 2000)
    assert builder_part > _builder_part(second, 250)

    tab.reload()
    now_ms = time.time_ns() // 1_000_000
    this_month = time.strftime("%Y-%m", time.gmtime(now_ms / 1000))
    generations = [first, second]
    starts = {
        "Today": now_ms - now_ms % _DAY_MS,
        "This month": period_bounds_ms(this_month)[0],
        "All time": 0,
    }
    for window, start_ms in starts.items():
        inside = [g for g in generations if g["created_at_ms"] >= start_ms]
        row = f"{card} tr[data-window='{window}']"
        assert _int(tab, f"{row} [data-requests]", "data-requests") == len(inside)
        assert _int(tab, f"{row} [data-prompt-tokens]", "data-prompt-tokens") == sum(
            g["usage"]["prompt_tokens"] for g in inside
        )
        assert _int(tab, f"{row} [data-completion-tokens]", "data-completion-tokens") == sum(
            g["usage"]["completion_tokens"] for g in inside
        )
        spend = sum(g["cost"]["total_micro_usd"] for g in inside)
        assert _int(tab, f"{row} [data-spend]", "data-spend") == spend
        assert tab.inner_text(f"{row} [data-spend]") == usd(spend)
        earned = sum(g["cost"]["builder_surcharge_micro_usd"] for g in inside)
        assert _int(tab, f"{row} [data-earned]", "data-earned") == earned

    earned = sum(g["cost"]["builder_surcharge_micro_usd"] for g in generations)
    assert _int(tab, "[data-earned='All time']", "data-micro-usd") == earned
    ledger = api(net, app.builder_key, "GET", "/account").json()["earnings"]["builder_micro_usd"]
    assert ledger == earned  # nothing paid out yet: the ledger holds all of it
    assert _int(tab, "[data-unpaid]", "data-micro-usd") == ledger
    assert _int(tab, f"#statements tr[data-period='{this_month}'] [data-net]", "data-net") == earned
    screenshot(tab, "builder-console")
    tab.goto(net.url + "/console/builder")  # without the notice: the picture in the docs
    screenshot(tab, "builder-console-viewport", full_page=False)

    statement = tab.request.get(f"{net.url}/console/builder/statement.csv?period={this_month}")
    assert statement.ok
    assert statement.headers["content-type"].startswith("text/csv")
    (line,) = csv.DictReader(io.StringIO(statement.text()))
    assert (line["payee_kind"], int(line["requests"]), int(line["net_micro_usd"])) == (
        "builder",
        2,
        earned,
    )


def test_a_builder_manages_an_app_route_in_the_browser_and_the_app_s_requests_follow_it(
    console_network: Network, chat_pal: BuilderApp, tab: Page
) -> None:
    net, app = console_network, chat_pal
    login(tab, net, app.builder_key)
    tab.click(f"section[data-app='{app.app_id}'] a:text('task routes')")
    tab.wait_for_url(f"**/console/builder/apps/{app.app_id}/routes")
    tab.fill("#new-route input[name=name]", "main")
    tab.fill(
        "#new-route textarea[name=document]",
        '[[rules]]\nname = "short"\nwhen = { max_output_tokens = 64 }\n'
        f'models = ["{MOCK_MODEL}"]\n\n[default]\nmodels = ["{MOCK_MODEL}"]\n',
    )
    tab.click("#new-route button[type=submit]")
    tab.wait_for_url(f"**/console/builder/apps/{app.app_id}/routes/main?notice=*")
    tab.fill("#dry-run input[name=max_tokens]", "16")
    tab.click("#dry-run button[type=submit]")
    assert tab.inner_text("#dry-run-result [data-rule]") == "short"

    raw = _through_app(net, app, "short please", model="route:main", max_tokens=16)
    assert (raw.headers["x-shareai-route"], raw.headers["x-shareai-route-rule"]) == (
        "main@v1",
        "short",
    )
    # The customer's own key does not see the app's routes.
    customer = openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        customer.chat.completions.create(
            model="route:main", messages=[{"role": "user", "content": "mine?"}]
        )


@contextmanager
def _console(net: Network, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=net.url) as client:
        assert client.post("/login", data={"api_key": key}).status_code == 303
        yield client


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path).text
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_builder_pages_refuse_other_roles_and_other_builders_apps(
    console_network: Network, chat_pal: BuilderApp
) -> None:
    net = console_network
    rival = _new_app(net, "Rival", "1")
    with _console(net, rival.builder_key) as other:
        token = _csrf(other, "/console/builder")
        assert chat_pal.app_id not in other.get("/console/builder").text
        pages = [
            other.get(f"/console/builder/apps/{chat_pal.app_id}/routes"),
            other.get("/console/builder/apps/app_nosuchapp/routes"),
        ]
        assert [p.status_code for p in pages] == [404, 404]
        assert f"no app &#39;{chat_pal.app_id}&#39; of yours" in pages[0].text
        changed = other.post(
            f"/console/builder/apps/{chat_pal.app_id}/surcharge",
            data={"csrf_token": token, "surcharge_percent": "0"},
        )
        assert changed.status_code == 404
        unknown = other.post(
            "/console/builder/apps/app_nosuchapp/surcharge",
            data={"csrf_token": token, "surcharge_percent": "0"},
        )
        assert unknown.status_code == 404
        route_page = f"/console/builder/apps/{chat_pal.app_id}/routes"
        created = other.post(route_page, data={"csrf_token": token, "name": "x", "document": "{}"})
        assert created.status_code == 404
        forged = other.post(
            f"/console/builder/apps/{rival.app_id}/surcharge",
            data={"csrf_token": "guess", "surcharge_percent": "0"},
        )
        assert forged.status_code == 403
    apps = api(net, chat_pal.builder_key, "GET", "/apps").json()["data"]
    (mine,) = [a for a in apps if a["id"] == chat_pal.app_id]
    assert mine["surcharge"]["surcharge_percent"] != "0"  # untouched by the rival
    with _console(net, net.customer_key) as customer:
        assert customer.get("/console/builder").status_code == 403
        assert customer.get(f"/console/builder/apps/{chat_pal.app_id}/routes").status_code == 403
        assert customer.get("/console/builder/statement.csv").status_code == 403
