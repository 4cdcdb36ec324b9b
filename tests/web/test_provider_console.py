"""The Provider console in a real browser, against a real coordinator and mock nodes.

A Provider sees its live node, sets its own price and the next customer request (official
``openai`` SDK) is billed at it, clears it and the node's price is back; makes a one-time
enrollment token, enrolls a second node with ``shareai node init --enroll-token`` (a real
process), sees it online and revokes it, which closes its session. The JSON API
(``GET /v1/generations/{id}``, ``GET /v1/models``) is the reference for what the page shows.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import openai
from playwright.sync_api import Dialog, Page

from coordinator.ledger import Pricing, charge_for
from protocol import Identity
from tests.e2e.network import Network, NodeProcess, run_shareai
from tests.web.conftest import ARTIFACTS, MOCK_MODEL, login, screenshot, settled_generation

NODE_PRICE = (500_000, 1_500_000)  # the mock node's own price, micro-USD per 1M tokens
SECOND_MODEL = "mock/second"

SECOND_NODE = f"""[[models]]
name = "{SECOND_MODEL}"
backend = "mock"
price_in_usd_per_1m = "0.30"
price_out_usd_per_1m = "0.90"
max_concurrency = 2
context_length = 2048
"""


def _request_and_bill(net: Network) -> dict[str, Any]:
    """One chat request with the customer's key; its settled generation."""
    client = openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "What does this cost?"}]
    )
    return settled_generation(net, net.customer_key, reply.id)


def _assert_billed_at(generation: dict[str, Any], price_in: int, price_out: int) -> None:
    assert generation["pricing_micro_usd_per_1m"]["input"] == price_in
    assert generation["pricing_micro_usd_per_1m"]["output"] == price_out
    usage = generation["usage"]
    expected = charge_for(
        Pricing(price_in, price_out), usage["prompt_tokens"], usage["completion_tokens"]
    )
    assert generation["cost"]["provider_micro_usd"] == expected.provider_micro_usd
    assert expected.provider_micro_usd > 0


def _with_notice(url: str) -> bool:
    """Back on the console after a form, with its one-line notice."""
    return "/console/provider?notice=" in url


def _node_id(config: Path) -> str:
    return Identity.load(config.parent / "node.key").public_key.node_id


def _first_node_id(net: Network) -> str:
    return _node_id(net.nodes["node-a"].config)


def test_the_page_shows_the_live_node_with_its_offer_load_and_reputation(
    console_network: Network, tab: Page
) -> None:
    net = console_network
    login(tab, net, net.provider_key)
    assert tab.url.endswith("/console/provider")
    row = f"tr[data-node='{_first_node_id(net)}']"
    assert tab.get_attribute(row, "data-online") == "true"
    assert tab.inner_text(f"{row} [data-state=online]") == "online"
    offer = f"{row} .offer[data-model='{MOCK_MODEL}']"
    assert tab.get_attribute(offer, "data-price-in") == str(NODE_PRICE[0])
    assert tab.get_attribute(offer, "data-price-out") == str(NODE_PRICE[1])
    assert "$0.50 / 1M in" in tab.inner_text(offer)
    assert "context 4096 · up to 4 at once" in tab.inner_text(offer)
    assert tab.inner_text(f"{row} [data-load]") == "0 / 4"
    assert "no GPU reported" in tab.inner_text(row)
    tab.click(f"{row} details.why summary")
    reasons = tab.inner_text(f"{row} details.why")
    assert "In probation" in reasons
    assert f"{MOCK_MODEL}: " in reasons
    assert "circuit closed" in reasons
    assert tab.inner_text("[data-stat=online]") == "1 / 1"
    screenshot(tab, "provider-console")


def test_an_own_price_bills_the_next_request_and_clearing_it_restores_the_nodes(
    console_network: Network, tab: Page
) -> None:
    net = console_network
    _assert_billed_at(_request_and_bill(net), *NODE_PRICE)

    login(tab, net, net.provider_key)
    price_row = f"#price-table tr[data-model='{MOCK_MODEL}']"
    assert tab.get_attribute(f"{price_row} [data-own-price]", "data-own-price") == "none"
    tab.fill(f"{price_row} input[name=input_usd_per_1m]", "0.20")
    tab.fill(f"{price_row} input[name=output_usd_per_1m]", "0.60")
    tab.click(f"{price_row} form.set-price button")
    tab.wait_for_url(_with_notice)
    assert "is now $0.20 in / $0.60 out per 1M tokens" in tab.inner_text(".notice")
    assert tab.get_attribute(f"{price_row} [data-own-price]", "data-own-price") == "set"
    offer = f"tr[data-node='{_first_node_id(net)}'] .offer[data-model='{MOCK_MODEL}']"
    assert tab.get_attribute(offer, "data-price-in") == "200000"
    assert "node announces $0.50 / 1M / $1.50 / 1M" in tab.inner_text(offer)
    # Every public view of the network shows the price customers now pay.
    models = httpx.get(net.base_url + "/models").json()["data"]
    (mock,) = [m for m in models if m["id"] == MOCK_MODEL]
    assert mock["pricing"]["lowest"] == {"input": 200_000, "output": 600_000}
    screenshot(tab, "provider-console-own-price")

    _assert_billed_at(_request_and_bill(net), 200_000, 600_000)

    tab.click(f"{price_row} form.clear-price button")
    tab.wait_for_url(_with_notice)
    assert "each node's own price applies again" in tab.inner_text(".notice")
    assert tab.get_attribute(f"{price_row} [data-own-price]", "data-own-price") == "none"
    _assert_billed_at(_request_and_bill(net), *NODE_PRICE)

    # The month's statement lists what the node earned, as a table and as CSV.
    tab.goto(net.url + "/console/provider")
    assert tab.locator("#statement-lines tbody tr").count() >= 1
    tab.click(f"tr[data-node='{_first_node_id(net)}'] details.why summary")
    assert "3 completed jobs" in tab.inner_text(f"tr[data-node='{_first_node_id(net)}'] .why")
    # What docs/providers.md shows: the first screen of the page, after some traffic.
    tab.screenshot(path=str(ARTIFACTS / "provider-console-viewport.png"))
    csv_text = httpx.get(
        net.url + "/console/provider/statement.csv",
        cookies={c["name"]: c["value"] for c in tab.context.cookies()},
    ).text
    lines = list(csv.DictReader(io.StringIO(csv_text)))
    assert sum(int(line["requests"]) for line in lines) >= 3
    assert {line["payee_kind"] for line in lines} == {"provider"}
    net_total = sum(int(line["net_micro_usd"]) for line in lines)
    assert tab.get_attribute("[data-statement-net]", "data-statement-net") == str(net_total)


def test_a_node_enrolled_with_a_console_token_shows_online_and_revoking_closes_it(
    console_network: Network, tab: Page, tmp_path: Path
) -> None:
    net = console_network
    login(tab, net, net.provider_key)
    tab.click("#create-token button")
    token = tab.inner_text("#enroll-token").strip()
    command = tab.inner_text("#enroll-command").strip()
    assert token.startswith("sai-enroll-")
    assert token not in tab.url
    assert command == f"shareai node init --coordinator {net.url} --enroll-token {token}"
    screenshot(tab, "provider-console-enroll-token")

    # The token is listed (by its prefix only) until it is used.
    tab.goto(net.url + "/console/provider")
    assert token[:19] in tab.inner_text("#tokens")
    assert token not in tab.content()

    node_dir = tmp_path / "node-b"
    config = node_dir / "node.toml"
    args = [*shlex.split(command), "--key-file", str(node_dir / "node.key")]
    init = run_shareai(*args[1:], "--config", str(config))
    assert init.returncode == 0, init.stderr
    node_b = _node_id(config)
    assert f"node id          {node_b}" in init.stdout
    again = run_shareai(*args[1:], "--config", str(tmp_path / "other.toml"), "--force")
    assert again.returncode == 1
    assert "401 enroll_token_used" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    config.write_text(config.read_text().split("[[models]]")[0] + SECOND_NODE)
    node = NodeProcess("node-b", config, node_dir / "node.log")
    node.start()
    net.nodes["node-b"] = node
    net.wait_for_nodes(SECOND_MODEL, 1)

    tab.goto(net.url + "/console/provider")
    row = f"tr[data-node='{node_b}']"
    assert tab.get_attribute(row, "data-online") == "true"
    assert tab.locator("#tokens").count() == 0  # used: no longer pending
    assert tab.inner_text("[data-stat=online]") == "2 / 2"

    tab.once("dialog", _accept)
    tab.click(f"{row} form.revoke-node button")
    tab.wait_for_url(_with_notice)
    assert f"Node {node_b} is revoked: its session was closed" in tab.inner_text(".notice")
    assert tab.locator(row).count() == 0
    assert node_b in tab.inner_text("#revoked-nodes")
    net.wait_for_nodes(SECOND_MODEL, 0)
    assert node.process is not None
    assert node.process.wait(timeout=30) == 1  # refused as revoked on reconnecting: it stops
    assert "revoked" in (node_dir / "node.log").read_text()


def _accept(dialog: Dialog) -> None:
    dialog.accept()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def test_other_accounts_cannot_see_or_touch_a_providers_nodes_and_tokens(
    console_network: Network, tab: Page
) -> None:
    net = console_network
    login(tab, net, net.customer_key)
    tab.goto(net.url + "/console/provider")
    assert "this page is for provider accounts" in tab.inner_text("[role=alert]")

    other = net.admin("create-account", "--role", "provider", "--name", "Mallory")
    node_a = _first_node_id(net)
    with httpx.Client(base_url=net.url) as owner, httpx.Client(base_url=net.url) as mallory:
        owner.post("/login", data={"api_key": net.provider_key})
        owner.post(
            "/console/provider/tokens",
            data={"csrf_token": _csrf(owner.get("/console/provider").text)},
        )
        token_id = re.findall(r'data-token="(et_[a-z0-9]+)"', owner.get("/console/provider").text)
        assert token_id

        mallory.post("/login", data={"api_key": str(other["api_key"])})
        page = mallory.get("/console/provider")
        assert page.status_code == 200
        assert node_a not in page.text
        csrf = _csrf(page.text)
        for target, missing in (
            (f"/console/provider/nodes/{node_a}/revoke", "/console/provider/nodes/nd_none/revoke"),
            (
                f"/console/provider/tokens/{token_id[0]}/revoke",
                "/console/provider/tokens/et_none/revoke",
            ),
        ):
            theirs = mallory.post(target, data={"csrf_token": csrf})
            unknown = mallory.post(missing, data={"csrf_token": csrf})
            assert theirs.status_code == unknown.status_code == 404
            assert "of yours" in theirs.text
            # The same words for someone else's object as for one that does not exist.
            assert theirs.text.replace(target.split("/")[-2], "X") == unknown.text.replace(
                missing.split("/")[-2], "X"
            )
        # Without the session's CSRF token nothing happens either.
        forged = owner.post(
            f"/console/provider/nodes/{node_a}/revoke", data={"csrf_token": "guessed"}
        )
        assert forged.status_code == 403
    assert net.model_nodes(MOCK_MODEL) == 1  # node-a was never revoked
