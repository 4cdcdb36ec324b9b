"""The charge calculator: itemised, integer, one rounding rule, parts that add up exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.ledger import (
    PLATFORM_REVENUE,
    Charge,
    Credit,
    InvalidLedgerInput,
    Pricing,
    builder_earnings,
    charge_for,
    credits_for,
    hold_amount_for,
    parse_percent,
    provider_earnings,
)
from coordinator.ledger.charges import MAX_PRICE_MICRO_USD_PER_1M, MAX_RATE_BPS, MAX_TOKENS

prices = st.integers(0, MAX_PRICE_MICRO_USD_PER_1M) | st.integers(0, 5_000_000)
rates = st.integers(0, MAX_RATE_BPS) | st.sampled_from([0, 250, 500, 1_000, 1_250])
tokens = st.integers(0, MAX_TOKENS - 1_000) | st.integers(0, 2_000)
pricings = st.builds(Pricing, prices, prices, rates, rates)


def exact_parts(pricing: Pricing, prompt: int, completion: int) -> tuple[Fraction, ...]:
    provider = Fraction(
        prompt * pricing.input_micro_usd_per_1m + completion * pricing.output_micro_usd_per_1m,
        1_000_000,
    )
    return (
        provider,
        provider * pricing.surcharge_bps / 10_000,
        provider * pricing.platform_fee_bps / 10_000,
    )


@given(pricings, tokens, tokens)
def test_the_parts_add_up_to_the_charge_and_each_is_within_a_micro_usd(
    pricing: Pricing, prompt: int, completion: int
) -> None:
    charge = charge_for(pricing, prompt, completion)
    provider, builder, platform = exact_parts(pricing, prompt, completion)
    parts = (charge.provider_micro_usd, charge.builder_micro_usd, charge.platform_micro_usd)
    assert all(isinstance(part, int) and part >= 0 for part in parts)
    assert sum(parts) == charge.total_micro_usd
    # The rule: cumulative sums rounded half to even (Python's round() of a Fraction does that).
    assert charge.total_micro_usd == round(provider + builder + platform)
    assert charge.provider_micro_usd == round(provider)
    assert charge.provider_micro_usd + charge.builder_micro_usd == round(provider + builder)
    assert abs(charge.total_micro_usd - (provider + builder + platform)) <= Fraction(1, 2)
    for part, exact in zip(parts, (provider, builder, platform), strict=True):
        assert abs(part - exact) < 1


@given(pricings, tokens, tokens, tokens)
def test_the_hold_covers_every_charge_up_to_max_tokens(
    pricing: Pricing, prompt: int, used: int, max_tokens: int
) -> None:
    used = min(used, max_tokens)
    held = hold_amount_for(pricing, prompt, max_tokens)
    assert charge_for(pricing, prompt, used).total_micro_usd <= held
    assert held == charge_for(pricing, prompt, max_tokens).total_micro_usd


@given(pricings, tokens, tokens, st.integers(0, 1_000))
def test_more_tokens_never_cost_less(
    pricing: Pricing, prompt: int, completion: int, more: int
) -> None:
    charge = charge_for(pricing, prompt, completion)
    assert charge_for(pricing, prompt + more, completion).total_micro_usd >= charge.total_micro_usd
    assert charge_for(pricing, prompt, completion + more).total_micro_usd >= charge.total_micro_usd


@pytest.mark.parametrize(
    ("pricing", "prompt", "completion", "expected"),
    [
        # $0.20 / $0.60 per million tokens, 1000 in and 500 out: 200 + 300 = 500 micro-USD.
        (Pricing(200_000, 600_000), 1_000, 500, Charge(500, 0, 0)),
        # 10 % surcharge and 5 % fee on top of the provider price.
        (Pricing(200_000, 600_000, 1_000, 500), 1_000, 500, Charge(500, 50, 25)),
        # 2.5 micro-USD rounds to 2 (ties to even), 3.5 to 4.
        (Pricing(2_500_000, 0), 1, 0, Charge(2, 0, 0)),
        (Pricing(3_500_000, 0), 1, 0, Charge(4, 0, 0)),
        # Provider 0.4 -> 0; with the 50 % surcharge 0.6 -> 1; with the 50 % fee 0.8 -> 1.
        (Pricing(400_000, 0, 5_000, 5_000), 1, 0, Charge(0, 1, 0)),
        (Pricing(1_000_000, 1_000_000, 10_000, 10_000), 0, 0, Charge(0, 0, 0)),
    ],
)
def test_worked_examples(pricing: Pricing, prompt: int, completion: int, expected: Charge) -> None:
    assert charge_for(pricing, prompt, completion) == expected


def test_a_charge_becomes_credits_for_provider_builder_and_platform() -> None:
    charge = Charge(500, 50, 25)
    assert credits_for(charge, provider_account_id="acc_p", builder_account_id="acc_b") == (
        Credit(provider_earnings("acc_p"), 500),
        Credit(PLATFORM_REVENUE, 25),
        Credit(builder_earnings("acc_b"), 50),
    )
    assert credits_for(Charge(500, 0, 25), provider_account_id="acc_p") == (
        Credit(provider_earnings("acc_p"), 500),
        Credit(PLATFORM_REVENUE, 25),
    )
    with pytest.raises(InvalidLedgerInput, match="Builder"):
        credits_for(charge, provider_account_id="acc_p")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Pricing(-1, 0),
        lambda: Pricing(0, MAX_PRICE_MICRO_USD_PER_1M + 1),
        lambda: Pricing(0, 0, MAX_RATE_BPS + 1),
        lambda: Pricing(0, 0, 0, -1),
        lambda: Pricing(1.5, 0),  # type: ignore[arg-type]
        lambda: charge_for(Pricing(1, 1), -1, 0),
        lambda: charge_for(Pricing(1, 1), 0, MAX_TOKENS + 1),
        lambda: charge_for(Pricing(1, 1), True, 0),
        lambda: hold_amount_for(Pricing(1, 1), 0, -5),
    ],
)
def test_bad_rates_and_token_counts_are_refused(make: object) -> None:
    assert callable(make)
    with pytest.raises(InvalidLedgerInput):
        make()


@pytest.mark.parametrize(
    ("text", "bps"), [("0", 0), ("2.5", 250), ("12.34", 1_234), ("100", 10_000), (" 7 ", 700)]
)
def test_percentages_parse_exactly_to_basis_points(text: str, bps: int) -> None:
    assert parse_percent(text) == bps


@pytest.mark.parametrize("text", ["", "-1", "100.01", "101", "1.234", "1e2", "NaN", "5%", "1,5"])
def test_bad_percentages_are_refused(text: str) -> None:
    with pytest.raises(InvalidLedgerInput):
        parse_percent(text)
