"""The Playground in a real browser, against a real coordinator and a mock node.

The page's answer is checked against the JSON API (``GET /v1/generations/{id}``,
``GET /v1/account``), which is the reference; the chat endpoint's CSRF checks and the
generation endpoint's ownership are checked over plain HTTP with a logged-in session.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from coordinator.web.filters import usd
from tests.e2e.network import Network
from tests.web.conftest import MOCK_MODEL, api, login, screenshot, settled_generation

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "playground.png"
PLAYGROUND = "/console/customer/playground"
CHAT = PLAYGROUND + "/chat"


def _available(net: Network, key: str) -> int:
    return int(api(net, key, "GET", "/account").json()["balance"]["available"])


def _usage_count(net: Network, key: str) -> int:
    return len(api(net, key, "GET", "/account").json()["recent_usage"])


@contextmanager
def _session(net: Network, api_key: str) -> Iterator[tuple[httpx.Client, str]]:
    """A logged-in console session over HTTP and its CSRF token (from the Playground page)."""
    with httpx.Client(base_url=net.url, timeout=30) as client:
        assert client.post("/login", data={"api_key": api_key}).status_code == 303
        page = client.get(PLAYGROUND)
        assert page.status_code == 200, page.text
        found = re.search(r'data-csrf="([^"]+)"', page.text)
        assert found is not None
        yield client, found.group(1)


def _chat_body(content: str, *, stream: bool = False, model: str = MOCK_MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}


_RECORD_LENGTHS = """() => {
  window.answerLengths = [];
  new MutationObserver(() => {
    const text = document.querySelector("#pg-transcript li.assistant:last-child .text");
    if (text) { window.answerLengths.push(text.textContent.length); }
  }).observe(document.getElementById("pg-transcript"),
             { childList: true, subtree: true, characterData: true });
}"""


def test_a_streamed_answer_appears_with_the_ledgers_cost(
    console_network: Network, tab: Page
) -> None:
    net = console_network
    login(tab, net, net.customer_key)
    tab.click("nav a:has-text('Playground')")
    tab.wait_for_url(f"**{PLAYGROUND}")
    tab.select_option("#pg-model", MOCK_MODEL)
    assert "/ 1M input" in tab.inner_text("#pg-price")
    before = _available(net, net.customer_key)

    tab.fill("#pg-system", "You are terse.")
    tab.fill("#pg-temperature", "0.2")
    tab.fill("#pg-max-tokens", "48")
    tab.select_option("#pg-sort", "price")
    tab.fill("#pg-max-completion", "5")
    tab.fill("#pg-min-reputation", "0")
    tab.evaluate(_RECORD_LENGTHS)
    tab.fill("#pg-message", "Tell me something about ledgers.")
    tab.click("#pg-send")

    answer = tab.wait_for_selector("#pg-transcript li.assistant[data-generation]")
    assert answer is not None
    generation_id = answer.get_attribute("data-generation") or ""
    assert generation_id.startswith("chatcmpl-")
    text = tab.inner_text("#pg-transcript li.assistant .text")
    lengths: list[int] = tab.evaluate("window.answerLengths")
    growing = sorted(set(lengths))
    assert len(growing) >= 3, f"the answer did not stream in pieces: {lengths}"
    assert lengths == sorted(lengths), "the shown answer only grows"
    assert growing[-1] == len(text) > 0

    generation = settled_generation(net, net.customer_key, generation_id)
    assert generation["usage"]["completion_tokens"] <= 48  # max tokens reached the node
    item = "#pg-transcript li.assistant"
    cost = generation["cost"]
    for part, key in (
        ("provider", "provider_micro_usd"),
        ("builder", "builder_surcharge_micro_usd"),
        ("platform", "platform_fee_micro_usd"),
        ("total", "total_micro_usd"),
    ):
        cell = f"{item} [data-part={part}]"
        assert int(tab.get_attribute(cell, "data-micro-usd") or "-1") == cost[key], part
        assert tab.inner_text(cell).endswith(usd(cost[key])), part
    assert cost["total_micro_usd"] > 0
    assert before - _available(net, net.customer_key) == cost["total_micro_usd"]
    assert tab.get_attribute(f"{item} [data-node]", "data-node") == generation["node"]
    ttft = generation["timings_ms"]["time_to_first_token"]
    assert tab.get_attribute(f"{item} [data-ttft-ms]", "data-ttft-ms") == str(ttft)
    assert "tokens/s" in tab.inner_text(f"{item} [data-tokens-per-s]")

    # The conversation goes on in the page: the second request carries the first exchange.
    tab.fill("#pg-message", "And another thing?")
    tab.click("#pg-send")
    answered = tab.locator("#pg-transcript li.assistant[data-generation]")
    second = answered.nth(1).get_attribute("data-generation") or ""
    later = settled_generation(net, net.customer_key, second)
    assert later["usage"]["prompt_tokens"] > generation["usage"]["prompt_tokens"]
    shot = screenshot(tab, "playground")
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, DOCS_IMAGE)


def test_a_customer_without_credits_reads_why(console_network: Network, tab: Page) -> None:
    made = console_network.admin("create-account", "--role", "customer", "--name", "broke")
    login(tab, console_network, str(made["api_key"]))
    tab.goto(console_network.url + PLAYGROUND)
    tab.fill("#pg-message", "Hello?")
    tab.click("#pg-send")
    tab.wait_for_selector("#pg-error:not([hidden])")
    assert tab.inner_text("#pg-error").startswith("Not enough credits:")
    assert tab.locator("#pg-transcript li.assistant").count() == 0


def test_the_chat_endpoint_answers_like_the_api(console_network: Network) -> None:
    net = console_network
    with _session(net, net.customer_key) as (client, csrf):
        headers = {"x-csrf-token": csrf, "origin": net.url}
        answer = client.post(CHAT, json=_chat_body("hello"), headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        generation_id = answer.json()["id"]
        generation = settled_generation(net, net.customer_key, generation_id)
        mine = client.get(f"{PLAYGROUND}/generations/{generation_id}")
        assert mine.status_code == 200
        assert mine.json() == generation

        missing = client.post(CHAT, json=_chat_body("hi", model="no/such-model"), headers=headers)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda net, csrf: {"origin": net.url}, id="no-csrf-header"),
        pytest.param(lambda net, csrf: {"origin": net.url, "x-csrf-token": "x"}, id="wrong-token"),
        pytest.param(
            lambda net, csrf: {"origin": "https://evil.example", "x-csrf-token": csrf},
            id="other-origin",
        ),
        pytest.param(lambda net, csrf: {"x-csrf-token": csrf}, id="no-origin"),
    ],
)
def test_a_chat_request_without_csrf_proof_is_refused_and_not_made(
    console_network: Network, headers: Any
) -> None:
    net = console_network
    with _session(net, net.customer_key) as (client, csrf):
        before = (_available(net, net.customer_key), _usage_count(net, net.customer_key))
        for stream in (False, True):
            refused = client.post(
                CHAT, json=_chat_body("steal", stream=stream), headers=headers(net, csrf)
            )
            assert refused.status_code == 403, refused.text
            assert refused.headers["content-type"].startswith("text/html")
        assert (_available(net, net.customer_key), _usage_count(net, net.customer_key)) == before


def test_another_customer_cannot_read_the_generation(console_network: Network) -> None:
    net = console_network
    reply = api(net, net.customer_key, "POST", "/chat/completions", json=_chat_body("mine"))
    generation_id = reply.json()["id"]
    node = settled_generation(net, net.customer_key, generation_id)["node"]
    other = net.admin("create-account", "--role", "customer", "--name", "nosy", "--credits", "1")
    with _session(net, str(other["api_key"])) as (client, _):
        theirs = client.get(f"{PLAYGROUND}/generations/{generation_id}")
    assert theirs.status_code == 404
    assert theirs.headers["cache-control"] == "no-store"
    assert node not in theirs.text
    assert "micro_usd" not in theirs.text
