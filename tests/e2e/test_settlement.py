"""Money end to end: every request's charge reaches the ledger exactly, through real processes.

A customer with $100 and one Provider's three mock nodes (a steady one, one that fails after 5
tokens, one that fails before its first token, one slow) at $500 / $1,000 per 1M tokens, so one
token is 500 / 1,000 micro-USD and every part is a whole number (the platform fee is 5%). After
complete, streamed, cut, failed and abandoned requests, the ledger must hold exactly what the
token counts say, and the audit must pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.coordinator.conftest import create_postgres_database, drop_postgres_database
from tests.e2e.network import Network, network, run_shareai
from tests.e2e.test_network import MODEL, mock_model
from tests.e2e.test_routing import node_id

PRICE_IN, PRICE_OUT = 500, 1000  # micro-USD per token
FEE_PERCENT = 5


def expected_parts(prompt: int, completion: int) -> tuple[int, int]:
    provider = prompt * PRICE_IN + completion * PRICE_OUT
    return provider, provider * FEE_PERCENT // 100


def round_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        return quotient + 1
    return quotient


def split_with_surcharge(base: int, surcharge_pct: int) -> tuple[int, int, int]:
    """docs/settlement.md's rule: cumulative sums rounded half-even, parts are differences."""
    provider = base
    with_builder = round_half_even(base * (100 + surcharge_pct), 100)
    total = round_half_even(base * (100 + surcharge_pct + FEE_PERCENT), 100)
    return provider, with_builder - provider, total - with_builder


def model_lines(**extra: object) -> str:
    options = "".join(f", {key} = {value}" for key, value in extra.items())
    return mock_model(price_in="500", price_out="1000", ttft_ms=10, extra=options)


def get(net: Network, path: str) -> httpx.Response:
    return httpx.get(
        net.base_url + path, headers={"authorization": f"Bearer {net.customer_key}"}, timeout=10
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The coordinator's embedded SQLite default, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    url = asyncio.run(create_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(url))


def test_every_charge_reaches_the_ledger_exactly(tmp_path: Path, database_url: str | None) -> None:
    with network(tmp_path, database_url) as net:
        ids = {
            name: node_id(net.add_node(name, lines))
            for name, lines in {
                "steady": model_lines(),
                "cut": model_lines(failure_rate=1.0, failure_after_tokens=5),
                "dead": model_lines(failure_rate=1.0),
                "slow": mock_model(
                    price_in="500", price_out="1000", ttft_ms=10, tokens_per_s=4, output_tokens=200
                ),
            }.items()
        }
        net.wait_for_nodes(MODEL, 4)
        client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)

        def only(name: str) -> dict[str, object]:
            return {"provider": {"only": [ids[name]]}}

        generations: list[str] = []
        whole = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "bill me"}],
            max_tokens=30,
            extra_body=only("steady"),
        )
        assert whole.usage is not None
        usage = whole.usage.model_dump()
        provider, fee = expected_parts(usage["prompt_tokens"], usage["completion_tokens"])
        assert usage["cost_details"]["provider_micro_usd"] == provider
        assert usage["cost_details"]["platform_fee_micro_usd"] == fee
        assert usage["cost_details"]["total_micro_usd"] == provider + fee
        assert usage["cost"] == pytest.approx((provider + fee) / 1e6)
        generations.append(whole.id)

        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "stream and bill me"}],
                max_tokens=30,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=only("steady"),
            )
        )
        assert chunks[-1].usage is not None
        streamed = chunks[-1].usage.model_dump()
        assert streamed["cost_details"]["total_micro_usd"] == sum(
            expected_parts(streamed["prompt_tokens"], streamed["completion_tokens"])
        )
        generations.append(chunks[-1].id)

        # cut by the node after 5 tokens: billed for what was delivered
        with httpx.stream(
            "POST",
            net.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {net.customer_key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "cut me"}],
                "max_tokens": 30,
                "stream": True,
                **only("cut"),
            },
            timeout=30,
        ) as cut:
            events = [line for line in cut.iter_lines() if line.startswith("data: {")]
        cut_id = json.loads(events[0].removeprefix("data: "))["id"]
        assert "error" in events[-1]
        generations.append(cut_id)

        # failed before any token: no charge at all
        dead = httpx.post(
            net.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {net.customer_key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], **only("dead")},
            timeout=30,
        )
        assert dead.status_code == 502

        # a JSON (not streamed) answer that fails mid-way reaches the customer as an error only:
        # nothing delivered, nothing charged
        broken = httpx.post(
            net.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {net.customer_key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "y"}], **only("cut")},
            timeout=30,
        )
        assert broken.status_code == 502

        # the customer goes away after the first chunk of a slow answer
        with httpx.stream(
            "POST",
            net.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {net.customer_key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "leave early"}],
                "max_tokens": 200,
                "stream": True,
                **only("slow"),
            },
            timeout=30,
        ) as abandoned:
            first = next(line for line in abandoned.iter_lines() if line.startswith("data: {"))
        generations.append(json.loads(first.removeprefix("data: "))["id"])

        records = wait_for_generations(net, generations)
        outcomes = [record["outcome"] for record in records]
        assert outcomes == ["completed", "completed", "cut", "disconnected"]
        assert records[2]["usage"]["completion_tokens"] == 5
        assert 1 <= records[3]["usage"]["completion_tokens"] < 200
        total = provider_total = fee_total = 0
        for record in records:
            usage = record["usage"]
            provider, fee = expected_parts(usage["prompt_tokens"], usage["completion_tokens"])
            assert record["cost"]["provider_micro_usd"] == provider
            assert record["cost"]["platform_fee_micro_usd"] == fee
            total += provider + fee
            provider_total += provider
            fee_total += fee

        account = get(net, "/account").json()
        assert account["balance"]["charged_not_yet_posted"] == 0
        assert account["balance"]["available"] + account["balance"]["held"] == (100_000_000 - total)
        ledger = {key: int(str(value)) for key, value in net.admin("ledger").items()}
        assert ledger["provider_earnings_micro_usd"] == provider_total
        assert ledger["platform_revenue_micro_usd"] == fee_total
        assert ledger["customer_available_micro_usd"] + ledger["customer_held_micro_usd"] == (
            100_000_000 - total
        )
        where = ("--database-url", database_url) if database_url else ()
        audit = run_shareai("admin", "audit", "--data-dir", str(net.data_dir), *where, "--json")
        assert audit.returncode == 0, audit.stdout + audit.stderr

        period = time.strftime("%Y-%m", time.gmtime())
        result = run_shareai(
            "admin", "statement", "--period", period, "--data-dir", str(net.data_dir), *where,
            "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        (line,) = json.loads(result.stdout)
        assert (line["requests"], line["gross_micro_usd"]) == (4, total)
        assert (line["net_micro_usd"], line["fees_micro_usd"]) == (provider_total, fee_total)
        as_csv = run_shareai(
            "admin", "statement", "--period", period, "--data-dir", str(net.data_dir), *where,
            "--csv",
        )  # fmt: skip
        assert as_csv.stdout.splitlines()[0].startswith("payee_kind,account_id,")

        other = get(net, "/generations/chatcmpl-nope")
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"


def wait_for_generations(net: Network, ids: list[str]) -> list[dict[str, Any]]:
    """The generations, once all are posted (the flusher runs every 100 ms)."""
    deadline = time.monotonic() + 15
    while True:
        records: list[dict[str, Any]] = [
            get(net, f"/generations/{generation}").json() for generation in ids
        ]
        if all(record.get("settled") for record in records) or time.monotonic() > deadline:
            assert all(record.get("settled") for record in records), records
            return records
        time.sleep(0.2)


def test_a_customer_without_enough_credits_gets_402_before_any_node_is_used(
    tmp_path: Path,
) -> None:
    with network(tmp_path) as net:
        net.add_node("steady", model_lines())
        net.wait_for_nodes(MODEL, 1)
        poor = net.admin(
            "create-account", "--role", "customer", "--name", "poor", "--credits", "0.001"
        )
        response = httpx.post(
            net.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {poor['api_key']}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 30,
            },
            timeout=30,
        )
        assert response.status_code == 402, response.text
        error = response.json()["error"]
        assert error["code"] == "insufficient_credits"
        assert error["type"] == "insufficient_quota"
        routes = httpx.get(
            f"{net.base_url}/admin/routes?limit=5",
            headers={"authorization": f"Bearer {net.operator_key}"},
            timeout=5,
        ).json()["data"]
        assert all(record["attempts"] == [] for record in routes)  # no node was used


def test_a_builder_app_two_providers_and_every_balance_to_the_unit(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        first = node_id(net.add_node("first", model_lines()))
        second_provider = net.admin("create-account", "--role", "provider", "--name", "second")
        net.provider_key = str(second_provider["api_key"])
        second = node_id(
            net.add_node("second", mock_model(price_in="250", price_out="2000", ttft_ms=10))
        )  # 250 / 2,000 micro-USD per token
        net.wait_for_nodes(MODEL, 2)
        builder = net.admin("create-account", "--role", "builder", "--name", "builder")
        app = httpx.post(
            net.base_url + "/apps",
            headers={"authorization": f"Bearer {builder['api_key']}"},
            json={"name": "chat-ui", "surcharge_percent": "10"},
            timeout=10,
        )
        assert app.status_code == 201, app.text
        app_id = app.json()["id"]
        authorized = httpx.post(
            f"{net.base_url}/apps/{app_id}/authorizations",
            headers={"authorization": f"Bearer {net.customer_key}"},
            timeout=10,
        )
        assert authorized.status_code == 201, authorized.text
        client = OpenAI(base_url=net.base_url, api_key=authorized.json()["api_key"], max_retries=0)
        prices = {first: (PRICE_IN, PRICE_OUT), second: (250, 2000)}
        earned = {first: 0, second: 0}
        surcharge_total = fee_total = 0
        for node, count in ((first, 3), (second, 2)):
            for _ in range(count):
                answer = client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"through the app to {node}"}],
                    max_tokens=20,
                    extra_body={"provider": {"only": [node]}},
                )
                assert answer.usage is not None
                usage = answer.usage.model_dump()
                price_in, price_out = prices[node]
                base = usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
                details = usage["cost_details"]
                _, surcharge, fee = split_with_surcharge(base, 10)
                assert details["provider_micro_usd"] == base
                assert details["builder_surcharge_micro_usd"] == surcharge
                assert details["platform_fee_micro_usd"] == fee
                earned[node] += base
                surcharge_total += surcharge
                fee_total += fee
        total = sum(earned.values()) + surcharge_total + fee_total
        deadline = time.monotonic() + 15
        while get(net, "/account").json()["balance"]["charged_not_yet_posted"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        listing = run_shareai("admin", "list-accounts", "--data-dir", str(net.data_dir), "--json")
        rows = {row["name"]: row for row in json.loads(listing.stdout)}
        assert rows["provider"]["earnings_micro_usd"] == earned[first]
        assert rows["second"]["earnings_micro_usd"] == earned[second]
        assert rows["builder"]["earnings_micro_usd"] == surcharge_total
        customer = rows["customer"]
        assert customer["balance_micro_usd"] + customer["held_micro_usd"] == 100_000_000 - total
        ledger = {key: int(str(value)) for key, value in net.admin("ledger").items()}
        assert ledger["platform_revenue_micro_usd"] == fee_total
        recent = get(net, "/account").json()["recent_usage"]
        assert {usage["app_id"] for usage in recent} == {app_id}
        audit = run_shareai("admin", "audit", "--data-dir", str(net.data_dir), "--json")
        assert audit.returncode == 0, audit.stdout
