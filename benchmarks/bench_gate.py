"""Hold + settle on the request path: the credit gate against a ledger transaction per request.

For each database (SQLite file, PostgreSQL), one customer with plenty of credits, and 2,000
requests one after another, timing only what the request path waits for:

* **baseline**: the ledger alone, ``place_hold`` before and ``post_hold`` after (two
  transactions per request), as a request would without the gate;
* **gate**: ``CreditGate.reserve`` before and ``Billing``-style ``settle`` after, with the gate's
  flusher running concurrently every 100 ms (rotating leases and posting them, as in the server).
  Its occasional lease opening (a ledger hold) is inside the timings.

    python -m benchmarks.bench_gate [--quick] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

from coordinator.accounts import create_account
from coordinator.billing import CreditGate, GenerationRecord
from coordinator.db import create_engine, create_session_factory, migrate
from coordinator.ledger import Pricing, charge_for, credits_for, place_hold, post_hold
from tests.coordinator.conftest import create_postgres_database, drop_postgres_database

PRICING = Pricing(200_000, 400_000, platform_fee_bps=500)


def _record(n: int, customer: str, provider: str) -> GenerationRecord:
    charge = charge_for(PRICING, 500, 200)
    return GenerationRecord(
        id=f"gen-{n}", request_id=f"req_{n}", customer_account_id=customer, api_key_id=None,
        app_id=None, surcharge_version=None, builder_account_id=None, node_id="nd_bench",
        provider_account_id=provider, model="m", created_at_ms=0, ttft_ms=1, total_ms=2,
        outcome="completed", finish_reason="stop", attempts=1, hedged=False, prompt_tokens=500,
        completion_tokens=200, node_prompt_tokens=500, node_completion_tokens=200,
        metering="node_report_bounded", token_mismatch=False,
        price_input_micro_usd_per_1m=PRICING.input_micro_usd_per_1m,
        price_output_micro_usd_per_1m=PRICING.output_micro_usd_per_1m, charge=charge,
        credits=credits_for(charge, provider_account_id=provider),
    )  # fmt: skip


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90, p99 = ordered[int(len(ordered) * 0.9)], ordered[int(len(ordered) * 0.99)]
    return f"{statistics.median(ordered):9.3f} {p90:9.3f} {p99:9.3f}"


async def _run(url: str, requests: int) -> tuple[list[float], list[float]]:
    await migrate(url)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        customer, _ = await create_account(session, "customer", "bench", 10**12)
        provider, _ = await create_account(session, "provider", "bench-p")
    hold = charge_for(PRICING, 2_000, 1_000).total_micro_usd
    baseline: list[float] = []
    for n in range(requests):
        start = time.perf_counter()
        async with sessions.begin() as session:
            await place_hold(session, f"bench_{n}", customer.id, hold)
        async with sessions.begin() as session:
            await post_hold(session, f"bench_{n}", _record(n, customer.id, provider.id).credits)
        baseline.append((time.perf_counter() - start) * 1000)
    gate = CreditGate(sessions, lease_chunk_micro_usd=hold * 200)
    flusher = asyncio.create_task(gate.run())
    gated: list[float] = []
    for n in range(requests):
        start = time.perf_counter()
        reservation = await gate.reserve(customer.id, hold)
        gate.settle(reservation, _record(n, customer.id, provider.id))
        gated.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0)  # the request's own work happens here; the flusher may run
    flusher.cancel()
    await gate.close()
    await engine.dispose()
    return baseline, gated


async def main_async(databases: list[str], requests: int) -> None:
    print(f"python {platform.python_version()} on {platform.machine()}, {requests} requests")
    print(f"{'database':12} {'path':22} {'median ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    for database in databases:
        if database == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
                baseline, gated = await _run(url, requests)
        else:
            url = await create_postgres_database()
            try:
                baseline, gated = await _run(url, requests)
            finally:
                await drop_postgres_database(url)
        print(f"{database:12} {'ledger hold + post':22} {_summary(baseline)}")
        print(f"{database:12} {'gate reserve + settle':22} {_summary(gated)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    asyncio.run(main_async(args.databases.split(","), 20 if args.quick else 2000))


if __name__ == "__main__":
    main()
