"""USD text <-> integer micro-USD, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.money import MAX_AMOUNT_MICRO_USD, InvalidUsdAmount, format_usd, parse_usd


@pytest.mark.parametrize(
    ("text", "micro_usd"),
    [
        ("0", 0),
        ("10", 10_000_000),
        ("12.5", 12_500_000),
        ("12.50", 12_500_000),
        ("0.000001", 1),
        ("0.1", 100_000),
        ("007.000100", 7_000_100),
        ("1000000000", MAX_AMOUNT_MICRO_USD),
        ("0.29", 290_000),  # 0.29 is not exact in binary floating point
    ],
)
def test_decimal_strings_convert_exactly(text: str, micro_usd: int) -> None:
    assert parse_usd(text) == micro_usd


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1.0000001",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "1e3",
        "1,000",
        " 1",
        "1 ",
        ".5",
        "5.",
        "$5",
        "0x10",
        "١٢",  # non-ASCII digits
        "1000000000.000001",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(InvalidUsdAmount):
        parse_usd(text)


def test_the_refusal_says_why() -> None:
    with pytest.raises(ValueError, match="at most 6 decimals"):
        parse_usd("0.1234567")


@pytest.mark.parametrize(
    ("micro_usd", "text"),
    [
        (0, "0.00"),
        (1, "0.000001"),
        (12_500_000, "12.50"),
        (1_234_567, "1.234567"),
        (-5, "-0.000005"),
    ],
)
def test_formatting_keeps_two_decimals_and_every_significant_one(micro_usd: int, text: str) -> None:
    assert format_usd(micro_usd) == text


@given(st.integers(min_value=0, max_value=MAX_AMOUNT_MICRO_USD))
def test_format_then_parse_is_the_identity(micro_usd: int) -> None:
    assert parse_usd(format_usd(micro_usd)) == micro_usd
