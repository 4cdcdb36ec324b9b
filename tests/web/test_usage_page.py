"""The usage dashboard in a real browser: its numbers are the sum of the generations.

Requests go through the official ``openai`` SDK with two keys of one customer; the reference is
the JSON API (``GET /v1/generations/{id}`` for each request). The page, its CSV download and
``GET /v1/usage`` must all agree with it, and another customer's usage never appears.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Page

from coordinator.billing.usage import CSV_COLUMNS
from tests.e2e.network import Network
from tests.web.conftest import MOCK_MODEL, api, login, screenshot, settled_generation


def _client(net: Network, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=net.base_url, api_key=key, max_retries=0, default_headers={"connection": "close"}
    )


def _ask(net: Network, key: str, text: str) -> dict[str, Any]:
    reply = _client(net, key).chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": text}]
    )
    return settled_generation(net, key, reply.id)


def _micro_usd(tab: Page, selector: str) -> int:
    return int(tab.get_attribute(selector, "data-micro-usd") or "nan")


def test_the_usage_page_adds_up_the_generations_per_key_with_charts_and_csv(
    console_network: Network, tab: Page
) -> None:
    net = console_network
    made = net.admin("create-account", "--role", "customer", "--name", "usage", "--credits", "10")
    first_key = str(made["api_key"])
    created = api(net, first_key, "POST", "/keys")
    assert created.status_code == 201, created.text
    second_key, second_id = str(created.json()["api_key"]), str(created.json()["id"])
    keys = {k["id"]: k for k in api(net, first_key, "GET", "/keys").json()["data"]}
    (first_id,) = set(keys) - {second_id}

    generations = {
        first_id: [_ask(net, first_key, f"question {n} with the first key") for n in range(3)],
        second_id: [_ask(net, second_key, "one question with the second key")],
    }
    # Another customer's request, at the same time: it must not show anywhere.
    theirs = _ask(net, net.customer_key, "somebody else's question")
    their_keys = api(net, net.customer_key, "GET", "/keys").json()["data"]
    every = [g for rows in generations.values() for g in rows]
    spent = sum(g["cost"]["total_micro_usd"] for g in every)
    prompt = sum(g["usage"]["prompt_tokens"] for g in every)
    completion = sum(g["usage"]["completion_tokens"] for g in every)
    assert spent > 0

    # The JSON API is the same report.
    usage = api(net, first_key, "GET", "/usage", params={"period": "7d"}).json()
    assert usage["totals"]["cost_micro_usd"] == spent
    assert usage["totals"]["requests"] == 4
    assert len(usage["daily"]) == 7
    bad = api(net, first_key, "GET", "/usage", params={"period": "2025-13"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_period"

    login(tab, net, first_key)
    tab.click("nav a:text-is('Usage')")
    tab.wait_for_url("**/console/customer/usage")
    assert tab.get_attribute("#period", "data-period") == "30d"
    assert _micro_usd(tab, "[data-total=cost]") == spent
    assert tab.inner_text("[data-total=requests]") == "4"
    assert tab.inner_text("[data-total=prompt_tokens]") == str(prompt)
    assert tab.inner_text("[data-total=completion_tokens]") == str(completion)
    for key_id, rows in generations.items():
        row = f"#by-key tr[data-key='{key_id}']"
        assert tab.get_attribute(row, "data-prefix") == keys[key_id]["prefix"]
        assert _micro_usd(tab, f"{row} [data-cost]") == sum(
            g["cost"]["total_micro_usd"] for g in rows
        )
        assert tab.inner_text(f"{row} [data-requests]") == str(len(rows))
        assert tab.inner_text(f"{row} td").startswith(keys[key_id]["prefix"])
    assert tab.locator("#by-key tbody tr").count() == 2
    assert _micro_usd(tab, f"#by-model tr[data-model='{MOCK_MODEL}'] [data-cost]") == spent
    assert _micro_usd(tab, "#by-app tr[data-app=''] [data-cost]") == spent
    days = tab.locator("#by-day tbody [data-cost]")
    assert (
        sum(int(days.nth(n).get_attribute("data-micro-usd") or "") for n in range(days.count()))
        == spent
    )
    charts = tab.locator("#charts svg.chart")
    assert charts.count() == 2
    assert charts.nth(0).get_attribute("aria-label") == "Spend per day (USD)"
    assert charts.nth(1).get_attribute("aria-label") == "Tokens per day"
    assert tab.locator("#charts svg.chart polyline").count() == 3  # spend; prompt, completion
    html = tab.content()
    for key in their_keys:
        assert key["id"] not in html
        assert key["prefix"] not in html
    assert theirs["id"] not in html
    assert first_key not in html
    assert second_key not in html
    screenshot(tab, "usage", full_page=False)

    # The CSV download: one line per day x model x key x app, adding up to the same.
    with tab.expect_download() as download_info:
        tab.click("#csv-link")
    download = download_info.value
    assert download.suggested_filename == "shareai-usage-30d.csv"
    text = Path(download.path()).read_bytes().decode("utf-8")
    lines = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert {line["key_id"] for line in lines} == {first_id, second_id}
    assert sum(int(line["cost_micro_usd"]) for line in lines) == spent
    assert sum(int(line["requests"]) for line in lines) == 4
    for key_id, rows in generations.items():
        # One line a day: two if the requests straddled midnight (UTC).
        own = [line for line in lines if line["key_id"] == key_id]
        assert {(line["key_prefix"], line["model"]) for line in own} == {
            (keys[key_id]["prefix"], MOCK_MODEL)
        }
        assert sum(int(line["prompt_tokens"]) for line in own) == sum(
            g["usage"]["prompt_tokens"] for g in rows
        )
    for key in their_keys:
        assert key["id"] not in text
    response = tab.request.get(net.url + "/console/customer/usage.csv?period=7d")
    assert response.status == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="shareai-usage-7d.csv"'
    )
    assert response.text() == text  # the same groups, today is in both periods

    # A month and a bad period.
    month = str(usage["daily"][-1]["date"])[:7]
    tab.goto(net.url + f"/console/customer/usage?period={month}")
    assert _micro_usd(tab, "[data-total=cost]") == spent
    answer = tab.goto(net.url + "/console/customer/usage?period=2025-13")
    assert answer is not None
    assert answer.status == 400
    assert tab.inner_text("#period-error") == "'2025-13' is not a month: use YYYY-MM, e.g. 2025-03"
    assert tab.locator("#totals").count() == 0


@pytest.mark.parametrize("period", ["7d", "90d"])
def test_another_customer_sees_only_their_own_usage(
    console_network: Network, tab: Page, period: str
) -> None:
    net = console_network
    made = net.admin("create-account", "--role", "customer", "--name", f"new {period}")
    login(tab, net, str(made["api_key"]))
    tab.goto(net.url + f"/console/customer/usage?period={period}")
    assert _micro_usd(tab, "[data-total=cost]") == 0
    assert tab.inner_text("[data-total=requests]") == "0"
    assert tab.locator("#by-key tbody tr[data-key]").count() == 0
    assert tab.locator("#charts svg.chart").count() == 2
    assert tab.locator("#charts svg.chart polyline").count() == 3  # flat lines at zero
