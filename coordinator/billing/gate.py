"""The credit gate: in-memory reservations against credit leases, posted to the ledger in batches.

A database transaction per request costs milliseconds (docs/benchmarks.md, "Settlement"), so the
request path never waits on one except to open a lease:

* A **lease** is a ledger hold of a chunk of a customer's wallet (``lease_chunk_micro_usd``, or
  all that is left when less) placed by this process. Requests **reserve** their worst-case cost
  from an open lease in memory (atomic: one event loop, no await between check and take), so
  however many requests run at once, their reservations never exceed the lease, and the leases
  never exceed the wallet (the ledger's hold is race-free across connections and processes).
  Not enough in the lease and not enough in the wallet for a new one: :class:`InsufficientCredits`
  (the API's ``402``), before any node is used.
* After the job, :meth:`CreditGate.settle` turns the reservation into the actual charge (never
  more than the reservation) and keeps the request's :class:`GenerationRecord`; or
  :meth:`CreditGate.release` frees it (nothing billed).
* The flusher (:meth:`CreditGate.run`, every ``flush_interval_s``) rotates each lease that has
  charges (a fresh lease replaces it for new requests), and **posts** a retired lease once its
  last request is done: one transaction inserts its generation rows and posts the hold, split by
  payee (the sum of its records' parts), releasing the rest to the wallet. An unused lease is
  released after ``idle_release_s``; every lease is retired before half its TTL.

Crash safety: a lease is a ledger hold with an expiry, so a crash strands no money (the sweep
returns it to the wallet). What a crash loses is the charges of the requests settled since the
last flush (at most ``flush_interval_s`` of traffic, plus requests still in flight): those were
served but are neither charged nor credited, and have no generation row; nothing is charged
twice and no money appears or vanishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.generations import Generation
from coordinator.ledger import (
    DEFAULT_HOLD_TTL_MS,
    Charge,
    Credit,
    InsufficientFunds,
    LedgerError,
    expire_holds,
    place_hold,
    post_hold,
    release_hold,
)

__all__ = [
    "CreditGate",
    "GateTotals",
    "GenerationRecord",
    "InsufficientCredits",
    "Lease",
    "Reservation",
]

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class InsufficientCredits(Exception):
    """The customer cannot afford the request's worst-case cost (the API's 402)."""

    def __init__(self, account_id: str, available_micro_usd: int, needed_micro_usd: int):
        super().__init__(
            f"insufficient credits: this request may cost up to {needed_micro_usd} micro-USD"
            f" and {available_micro_usd} micro-USD are available"
        )
        self.account_id = account_id
        self.available_micro_usd = available_micro_usd
        self.needed_micro_usd = needed_micro_usd


@dataclass
class GenerationRecord:
    """The usage record of one completed request (a row of ``generations`` once posted)."""

    id: str
    request_id: str
    customer_account_id: str
    api_key_id: str | None
    app_id: str | None
    surcharge_version: int | None
    builder_account_id: str | None
    node_id: str
    provider_account_id: str
    model: str
    created_at_ms: int
    ttft_ms: int | None
    total_ms: int
    outcome: str
    finish_reason: str | None
    attempts: int
    hedged: bool
    prompt_tokens: int
    completion_tokens: int
    node_prompt_tokens: int | None
    node_completion_tokens: int | None
    metering: str
    token_mismatch: bool
    price_input_micro_usd_per_1m: int
    price_output_micro_usd_per_1m: int
    charge: Charge
    credits: tuple[Credit, ...]
    receipt_signature: bytes | None = None
    lease_hold_id: str = ""
    posted: bool = False
    requested_model: str | None = None
    route: str | None = None
    route_version: int | None = None
    route_rule: str | None = None

    def to_row(self) -> Generation:
        fields = {
            name: getattr(self, name)
            for name in Generation.__table__.columns.keys()  # noqa: SIM118 - a ColumnCollection
            if name not in {"provider_micro_usd", "builder_micro_usd", "platform_micro_usd"}
        }
        return Generation(
            **fields,
            provider_micro_usd=self.charge.provider_micro_usd,
            builder_micro_usd=self.charge.builder_micro_usd,
            platform_micro_usd=self.charge.platform_micro_usd,
        )

    def to_json(self) -> dict[str, Any]:
        return generation_json(self.to_row(), posted=self.posted)


def generation_json(row: Generation, *, posted: bool = True) -> dict[str, Any]:
    """The public view of a generation (``GET /v1/generations/{id}``)."""
    total = row.provider_micro_usd + row.builder_micro_usd + row.platform_micro_usd
    return {
        "id": row.id,
        "object": "generation",
        "request_id": row.request_id,
        "created_at_ms": row.created_at_ms,
        "model": row.model,
        "requested_model": row.requested_model or row.model,
        "route": (
            {"name": row.route, "version": row.route_version, "rule": row.route_rule}
            if row.route is not None
            else None
        ),
        "node": row.node_id,
        "app_id": row.app_id,
        "outcome": row.outcome,
        "finish_reason": row.finish_reason,
        "attempts": row.attempts,
        "hedged": row.hedged,
        "timings_ms": {"time_to_first_token": row.ttft_ms, "total": row.total_ms},
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.prompt_tokens + row.completion_tokens,
            "node_reported": {
                "prompt_tokens": row.node_prompt_tokens,
                "completion_tokens": row.node_completion_tokens,
            },
            "metering": row.metering,
            "token_mismatch": row.token_mismatch,
        },
        "pricing_micro_usd_per_1m": {
            "input": row.price_input_micro_usd_per_1m,
            "output": row.price_output_micro_usd_per_1m,
            "surcharge_version": row.surcharge_version,
        },
        "cost": cost_json(row.provider_micro_usd, row.builder_micro_usd, row.platform_micro_usd),
        "settled": posted,
        "total_micro_usd": total,
    }


def cost_json(provider: int, builder: int, platform: int) -> dict[str, Any]:
    """An itemised cost in integer micro-USD (and the total as a USD decimal string)."""
    total = provider + builder + platform
    return {
        "total_micro_usd": total,
        "total_usd": f"{total // 1_000_000}.{total % 1_000_000:06d}",
        "provider_micro_usd": provider,
        "builder_surcharge_micro_usd": builder,
        "platform_fee_micro_usd": platform,
    }


@dataclass
class Lease:
    """A ledger hold of part of one customer's wallet, spent by reservations in memory."""

    hold_id: str
    account_id: str
    amount: int
    created_ms: int
    retire_at_ms: int
    reserved: int = 0
    spent: int = 0
    in_flight: int = 0
    retired: bool = False
    records: list[GenerationRecord] = field(default_factory=list)

    @property
    def free(self) -> int:
        return self.amount - self.reserved - self.spent


@dataclass
class Reservation:
    lease: Lease
    amount: int
    done: bool = False


@dataclass(frozen=True, slots=True)
class GateTotals:
    """This process's view of one customer's money that the ledger does not show yet."""

    leased_micro_usd: int  # held in the ledger as leases
    reserved_micro_usd: int  # worst cases of requests in flight
    unposted_micro_usd: int  # charged, to be posted at the next flush


class CreditGate:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        lease_chunk_micro_usd: int = 1_000_000,
        lease_ttl_ms: int = DEFAULT_HOLD_TTL_MS,
        flush_interval_s: float = 0.1,
        idle_release_s: float = 30.0,
        expire_every_s: float = 30.0,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._sessions = sessions
        self.lease_chunk_micro_usd = lease_chunk_micro_usd
        self.lease_ttl_ms = lease_ttl_ms
        self.flush_interval_s = flush_interval_s
        self.idle_release_s = idle_release_s
        self.expire_every_s = expire_every_s
        self._clock_ms = clock_ms
        self._current: dict[str, Lease] = {}
        self._retired: list[Lease] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, GenerationRecord] = {}
        self._flush_lock = asyncio.Lock()
        self._last_expiry_s = 0.0
        self.leases_opened = 0
        self.leases_posted = 0
        self.post_failures = 0
        self.refusals = 0
        """Counters for the metrics: failed lease postings, requests refused for credits."""

    # --- the request path -----------------------------------------------------------------

    async def reserve(self, account_id: str, amount_micro_usd: int) -> Reservation:
        """Reserve ``amount_micro_usd`` for one request; raises :class:`InsufficientCredits`."""
        lease = self._current.get(account_id)
        if lease is not None and self._usable(lease, amount_micro_usd):
            return self._take(lease, amount_micro_usd)
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            lease = self._current.get(account_id)  # another request may have opened one
            if lease is not None and self._usable(lease, amount_micro_usd):
                return self._take(lease, amount_micro_usd)
            fresh = await self._open_lease(account_id, amount_micro_usd, lease)
            if lease is not None:
                self._retire(lease)
            self._current[account_id] = fresh
            return self._take(fresh, amount_micro_usd)

    def settle(self, reservation: Reservation, record: GenerationRecord) -> None:
        """The request completed: charge ``record.charge`` (at most the reservation)."""
        if reservation.done:
            raise RuntimeError("a reservation is settled or released once")
        total = record.charge.total_micro_usd
        if total > reservation.amount:
            raise RuntimeError(
                f"charge {total} exceeds the reservation {reservation.amount} for {record.id}"
            )
        lease = reservation.lease
        reservation.done = True
        lease.reserved -= reservation.amount
        lease.in_flight -= 1
        lease.spent += total
        record.lease_hold_id = lease.hold_id
        lease.records.append(record)
        self._pending[record.id] = record

    def release(self, reservation: Reservation) -> None:
        """The request failed before output, or nothing was delivered: no charge."""
        if reservation.done:
            return
        reservation.done = True
        reservation.lease.reserved -= reservation.amount
        reservation.lease.in_flight -= 1

    def pending(self, generation_id: str) -> GenerationRecord | None:
        """A settled record not posted yet (``GET /v1/generations`` before the next flush)."""
        return self._pending.get(generation_id)

    def totals(self, account_id: str) -> GateTotals:
        leases = [lease for lease in self._leases() if lease.account_id == account_id]
        return GateTotals(
            leased_micro_usd=sum(lease.amount for lease in leases),
            reserved_micro_usd=sum(lease.reserved for lease in leases),
            unposted_micro_usd=sum(lease.spent for lease in leases),
        )

    def _leases(self) -> list[Lease]:
        return [*self._current.values(), *self._retired]

    def _usable(self, lease: Lease, amount: int) -> bool:
        return not lease.retired and lease.free >= amount and self._clock_ms() < lease.retire_at_ms

    @staticmethod
    def _take(lease: Lease, amount: int) -> Reservation:
        lease.reserved += amount
        lease.in_flight += 1
        return Reservation(lease, amount)

    async def _open_lease(self, account_id: str, needed: int, current: Lease | None) -> Lease:
        size = max(self.lease_chunk_micro_usd, needed)
        try:
            return await self._place(account_id, size)
        except InsufficientFunds as short:
            available = short.available_micro_usd
        if available >= needed and (available > 0 or needed == 0):  # 0: free nodes serve all
            try:
                return await self._place(account_id, available)
            except InsufficientFunds as short:  # spent elsewhere meanwhile
                available = short.available_micro_usd
        in_leases = current.free if current is not None and not current.retired else 0
        self.refusals += 1
        raise InsufficientCredits(account_id, available + in_leases, needed)

    async def _place(self, account_id: str, amount: int) -> Lease:
        now = self._clock_ms()
        hold_id = f"lease_{secrets.token_hex(12)}"
        async with self._sessions.begin() as session:
            await place_hold(
                session,
                hold_id,
                account_id,
                amount,
                ttl_ms=self.lease_ttl_ms,
                reference=f"credit lease {hold_id}",
                now_ms=now,
            )
        self.leases_opened += 1
        return Lease(hold_id, account_id, amount, now, now + self.lease_ttl_ms // 2)

    def _retire(self, lease: Lease) -> None:
        if not lease.retired:
            lease.retired = True
            if self._current.get(lease.account_id) is lease:
                del self._current[lease.account_id]
            self._retired.append(lease)

    # --- the flusher ----------------------------------------------------------------------

    async def run(self) -> None:
        """Flush forever (a background task of the server); errors are logged, not raised."""
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
                await self._expire_sweep()
            except Exception:
                logger.exception("credit gate flush failed; retrying")

    async def flush(self, *, final: bool = False) -> None:
        """Rotate leases with charges, post retired leases whose requests are done.

        ``final`` (shutdown) retires every lease first.
        """
        async with self._flush_lock:
            now = self._clock_ms()
            for lease in list(self._current.values()):
                if final or now >= lease.retire_at_ms:
                    self._retire(lease)
                elif lease.records:
                    await self._rotate(lease)
                elif lease.in_flight == 0 and now - lease.created_ms > self.idle_release_s * 1000:
                    self._retire(lease)
            for lease in [lease for lease in self._retired if lease.in_flight == 0]:
                if await self._post(lease):
                    self._retired.remove(lease)

    async def _rotate(self, lease: Lease) -> None:
        """Put a fresh lease in front of ``lease`` so ``lease`` can drain and be posted."""
        lock = self._locks.setdefault(lease.account_id, asyncio.Lock())
        async with lock:
            if self._current.get(lease.account_id) is not lease:
                return
            size = min(self.lease_chunk_micro_usd, max(lease.amount, 1))
            try:
                fresh = await self._place(lease.account_id, size)
            except InsufficientFunds:
                if lease.in_flight == 0:  # post it now; the next request opens a new lease
                    self._retire(lease)
                return
            self._retire(lease)
            self._current[lease.account_id] = fresh

    async def _post(self, lease: Lease) -> bool:
        """Write the lease's generations and post its hold (or release an unused one)."""
        now = self._clock_ms()
        credits: dict[str, int] = {}
        for record in lease.records:
            for credit in record.credits:
                credits[credit.account_id] = credits.get(credit.account_id, 0) + (
                    credit.amount_micro_usd
                )
        try:
            async with self._sessions.begin() as session:
                session.add_all(record.to_row() for record in lease.records)
                if lease.records:
                    await post_hold(
                        session,
                        lease.hold_id,
                        [Credit(account, amount) for account, amount in sorted(credits.items())],
                        now_ms=now,
                    )
                else:
                    await release_hold(session, lease.hold_id, now_ms=now)
        except LedgerError:
            self.post_failures += 1
            logger.exception(
                "lease %s of %s could not be posted (%d requests, %d micro-USD): they stay"
                " unbilled",
                lease.hold_id,
                lease.account_id,
                len(lease.records),
                lease.spent,
            )
        except SQLAlchemyError:
            self.post_failures += 1
            logger.exception("posting lease %s failed; will retry", lease.hold_id)
            return False
        for record in lease.records:
            record.posted = True
            self._pending.pop(record.id, None)
        self.leases_posted += 1
        return True

    async def _expire_sweep(self) -> None:
        now_s = time.monotonic()
        if now_s - self._last_expiry_s < self.expire_every_s:
            return
        self._last_expiry_s = now_s
        async with self._sessions.begin() as session:
            expired = await expire_holds(session, now_ms=self._clock_ms())
        if expired:
            logger.warning("expired %d holds left open (a crashed process?)", len(expired))

    async def close(self, *, drain_s: float = 5.0) -> None:
        """Shutdown: retire every lease and post them, waiting up to ``drain_s`` for requests."""
        deadline = time.monotonic() + drain_s
        while True:
            await self.flush(final=True)
            if not self._retired or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for lease in self._retired:
            logger.warning(
                "lease %s still has %d requests in flight at shutdown: it will expire",
                lease.hold_id,
                lease.in_flight,
            )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
