"""The public status page and the operator's console, in Chromium against a real network.

One coordinator (SQLite) and one mock node run as processes for the module. The node belongs to
a Provider whose account name (with an e-mail address in it) must never reach the public page.
Requests go through the official ``openai`` SDK, as a customer would send them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.e2e.network import Network, network
from tests.web.conftest import ARTIFACTS, MOCK_MODEL, MOCK_NODE, login, screenshot

PROVIDER_NAME = "Grace Hopper GPU Farm"
PROVIDER_EMAIL = "grace.hopper@example.com"
LIVE_TIMEOUT_MS = 20_000
"""The live part refreshes every 5 s; a change shows within a few refreshes."""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("status")) as running:
        provider = running.admin(
            "create-account", "--role", "provider", "--name", f"{PROVIDER_NAME} <{PROVIDER_EMAIL}>"
        )
        running.provider_key = str(provider["api_key"])  # the node below is this Provider's
        running.add_node("node-a", MOCK_NODE)
        running.wait_for_nodes(MOCK_MODEL, 1)
        yield running


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _get(net: Network, path: str, key: str | None = None) -> Any:
    response = httpx.get(net.base_url + path, headers=_bearer(key) if key else {}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _node_id(net: Network) -> str:
    (node,) = _get(net, "/network/status")["nodes"]["live"]
    node_id: str = node["node"]
    return node_id


def _chat(net: Network) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0) as client:
        return client.chat.completions.create(
            model=MOCK_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5
        )


def _stat(tab: Page, name: str) -> int:
    return int(tab.inner_text(f"[data-stat={name}] .value").replace(",", ""))


def _viewport_shot(tab: Page, name: str, anchor: str | None = None) -> None:
    """A screenshot of what the window shows (from ``anchor`` down): docs/img's size."""
    if anchor is not None:
        tab.evaluate(
            "(selector) => window.scrollTo(0, document.querySelector(selector).offsetTop - 12)",
            anchor,
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _notice(tab: Page) -> str:
    tab.wait_for_url(lambda url: "notice=" in url)
    return tab.inner_text("p.notice[role=status]")


def test_the_public_page_shows_the_live_numbers_and_updates_without_a_reload(
    net: Network, tab: Page
) -> None:
    tab.goto(net.url + "/status")
    assert tab.title().startswith("Network status")
    node_id = _node_id(net)
    assert node_id in tab.inner_text("table[data-table=nodes]")
    assert MOCK_MODEL in tab.inner_text("table[data-table=models]")
    assert _stat(tab, "nodes-online") == 1
    before = _stat(tab, "requests-hour")
    tab.evaluate("window.loadedOnce = true")  # gone if the page reloads

    for _ in range(3):
        _chat(net)

    tab.wait_for_function(
        """(wanted) => {
            const value = document.querySelector("[data-stat=requests-hour] .value");
            return value !== null && Number(value.textContent.replace(/,/g, "")) >= wanted;
        }""",
        arg=before + 3,
        timeout=LIVE_TIMEOUT_MS,
    )
    assert tab.evaluate("window.loadedOnce") is True  # the numbers changed in place
    assert "completed" in tab.inner_text("table[data-table=outcomes]")
    charts = tab.locator("#live svg.chart")
    assert charts.count() == 3
    assert tab.locator("#live svg.chart polyline").count() >= 2  # requests and tokens
    assert "Requests per minute" in (charts.first.text_content() or "")
    screenshot(tab, "public-status-full")
    _viewport_shot(tab, "public-status")


def test_the_public_page_shows_no_account_detail(net: Network) -> None:
    ids = [_get(net, "/me", key)["account_id"] for key in _keys(net)]
    node_id = _node_id(net)
    for path in ("/status", "/status/live"):
        response = httpx.get(net.url + path, timeout=10)
        assert response.status_code == 200
        html = response.text
        assert node_id in html
        assert "pv_" in html  # the Provider's anonymous handle
        for secret in (*ids, *_keys(net), "sk-sai-", "acc_", PROVIDER_NAME, PROVIDER_EMAIL, "@"):
            assert secret not in html, (path, secret)


def _keys(net: Network) -> tuple[str, ...]:
    return (net.customer_key, net.provider_key, net.operator_key)


def test_the_operator_suspends_a_node_and_restores_it(net: Network, tab: Page) -> None:
    node_id = _node_id(net)
    _chat(net)  # the node serves before
    login(tab, net, net.operator_key)
    assert tab.url.endswith("/console/operator")
    row = f"#live tr[data-node='{node_id}']"
    assert PROVIDER_NAME in tab.inner_text(row)  # the operator sees whose node it is
    assert "active" in tab.inner_text(row)

    tab.select_option("#suspend-node select[name=node_id]", node_id)
    tab.fill("#suspend-node input[name=reason]", "wrong answers reported by customers")
    tab.click("#suspend-node button[type=submit]")
    assert f"Node {node_id} is suspended" in _notice(tab)
    assert "wrong answers reported by customers" in tab.inner_text(row)
    assert "suspended" in tab.inner_text(row)

    with pytest.raises(openai.APIStatusError) as refused:
        _chat(net)
    assert refused.value.status_code == 503
    assert "suspended by the operator" in str(refused.value)
    request_id = refused.value.response.headers["x-request-id"]
    route = _get(net, f"/admin/routes/{request_id}", net.operator_key)
    assert route["served_by"] is None
    assert route["decision"]["excluded"] == [
        {"node": node_id, "model": MOCK_MODEL, "reason": "suspended by the operator"}
    ]
    status = _get(net, "/network/status")
    assert status["nodes"]["online"] == 1  # still connected, only kept from new jobs
    screenshot(tab, "operator-status-suspended")
    _viewport_shot(tab, "operator-status", anchor="#nodes")

    tab.select_option("#restore-node select[name=node_id]", node_id)
    tab.click("#restore-node button[type=submit]")
    assert f"Node {node_id} is restored" in _notice(tab)
    assert "active" in tab.inner_text(row)
    answer = _chat(net)  # traffic comes back
    assert answer.choices[0].message.content
    screenshot(tab, "operator-status-restored")


def _available(net: Network) -> int:
    def settled() -> bool:
        balance = _get(net, "/account", net.customer_key)["balance"]
        return bool(balance["held"] == 0 and balance["charged_not_yet_posted"] == 0)

    net.wait_until(settled, "the customer's requests to settle", 30)
    available: int = _get(net, "/account", net.customer_key)["balance"]["available"]
    return available


def test_the_operator_tops_up_a_customer_once_even_if_the_form_is_sent_twice(
    net: Network, context: BrowserContext, tab: Page
) -> None:
    customer_id = _get(net, "/me", net.customer_key)["account_id"]
    before = _available(net)
    login(tab, net, net.operator_key)
    tab.select_option("#top-up select[name=account_id]", customer_id)
    tab.fill("#top-up input[name=amount_usd]", "2.50")
    fields: dict[str, str | float | bool] = tab.evaluate(
        "Object.fromEntries(new FormData(document.querySelector('#top-up')))"
    )
    assert str(fields["transfer_id"]).startswith("topup_op_")
    tab.click("#top-up button[type=submit]")
    assert "Added $2.50" in _notice(tab)

    # The same form again (a double click, the browser's "resend"): nothing is added twice.
    again = context.request.post(
        net.url + "/console/operator/credits",
        form=fields,
        headers={"origin": net.url},
        max_redirects=0,
    )
    assert again.status == 303
    assert "already made" in unquote(again.headers["location"])
    assert _available(net) == before + 2_500_000


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_the_operator_console_refuses_other_roles(net: Network) -> None:
    node_id = _node_id(net)
    with httpx.Client(base_url=net.url, timeout=10) as client:
        anonymous = client.get("/console/operator")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/login?next=/console/operator"
        assert client.get("/console/operator/live").status_code == 401  # never the login page
        assert client.post("/login", data={"api_key": net.customer_key}).status_code == 303
        assert client.get("/console/operator").status_code == 403
        assert client.get("/console/operator/live").status_code == 403
        token = _csrf(client.get("/status").text)  # a real token of this customer's session
        forged = client.post(
            "/console/operator/nodes/suspend",
            data={"csrf_token": token, "node_id": node_id, "reason": "not yours"},
        )
        assert forged.status_code == 403
        top_up = client.post(
            "/console/operator/credits",
            data={"csrf_token": token, "account_id": "x", "amount_usd": "100", "transfer_id": "y"},
        )
        assert top_up.status_code == 403
    report = _get(net, f"/admin/nodes/{node_id}", net.operator_key)
    assert report["suspended"] is False


def _suspended(net: Network, node_id: str) -> bool | None:
    response = httpx.get(
        f"{net.base_url}/admin/nodes/{node_id}", headers=_bearer(net.operator_key), timeout=10
    )
    if response.status_code != 200:
        return None
    suspended: bool | None = response.json()["suspended"]
    return suspended


def test_a_suspension_made_with_the_admin_cli_reaches_the_coordinator_and_survives_a_restart(
    net: Network,
) -> None:
    """``shareai admin`` writes only the database: the running coordinator picks the
    suspension up by itself, and a restarted one reads it back when the node reconnects."""
    node_id = _node_id(net)
    suspended = net.admin("suspend-node", "--node-id", node_id, "--reason", "from the CLI")
    assert (suspended["suspended"], suspended["reason"]) == (True, "from the CLI")
    net.wait_until(lambda: _suspended(net, node_id) is True, "the coordinator to see it", 30)
    with pytest.raises(openai.APIStatusError) as refused:
        _chat(net)
    assert refused.value.status_code == 503

    net.stop_coordinator()
    net.start_coordinator()
    # The node reconnects and is admitted suspended (the restarted router knew nothing of it).
    net.wait_until(lambda: _suspended(net, node_id) is True, "the node to reconnect", 90)
    live = httpx.get(f"{net.base_url}/network/status", timeout=10).json()["nodes"]["live"]
    assert node_id in [node["node"] for node in live]
    assert net.model_nodes(MOCK_MODEL) == 0  # connected, but not listed as serving the model
    with pytest.raises(openai.APIStatusError) as still:
        _chat(net)
    assert "suspended by the operator" in str(still.value)

    net.admin("restore-node", "--node-id", node_id)
    net.wait_until(lambda: _suspended(net, node_id) is False, "the restore to reach it", 30)
    assert _chat(net).choices[0].message.content


def test_a_node_gone_offline_is_listed_with_its_provider_for_the_operator_only(
    net: Network,
) -> None:
    node_id = _node_id(net)
    net.nodes["node-a"].stop()
    net.wait_for_nodes(MOCK_MODEL, 0)
    public = httpx.get(net.url + "/status/live", timeout=10).text
    assert node_id in public.split('data-table="offline"')[1]
    assert PROVIDER_NAME not in public
    with httpx.Client(base_url=net.url, timeout=10) as client:
        assert client.post("/login", data={"api_key": net.operator_key}).status_code == 303
        operator = client.get("/console/operator/live").text
    offline = operator.split('data-table="offline"')[1]
    assert node_id in offline
    assert PROVIDER_NAME in offline
