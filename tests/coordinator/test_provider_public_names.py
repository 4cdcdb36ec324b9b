"""Providers' public names on SQLite and PostgreSQL: validation, uniqueness, the live map."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.accounts import Role, create_account
from coordinator.hub.nodes import NodeRegistry
from coordinator.market.views import provider_profiles
from coordinator.providers import (
    InvalidPublicName,
    NotAProvider,
    PublicNameTaken,
    all_public_names,
    checked_public_name,
    clear_public_name,
    public_name_of,
    set_public_name,
)
from coordinator.providers.sync import apply_public_name, load_public_names
from coordinator.routing import Router, provider_handle
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio


async def new_account(sessions: Sessions, role: Role = Role.PROVIDER, name: str = "Grace") -> str:
    async with sessions.begin() as session:
        account, _ = await create_account(session, role, name)
    return account.id


async def publish(sessions: Sessions, account: str, name: str) -> str:
    async with sessions.begin() as session:
        return await set_public_name(session, account, name)


@pytest.mark.parametrize(
    ("raw", "name"),
    [("  Open Weights Co-op ", "Open Weights Co-op"), ("GP", "GP"), ("é" * 60, "é" * 60)],
)
async def test_a_name_is_trimmed(raw: str, name: str) -> None:
    assert checked_public_name(raw) == name


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "2 to 60 characters"),
        ("  x  ", "2 to 60 characters"),
        ("x" * 61, "2 to 60 characters"),
        ("two\nlines", "printable"),
        ("tab\there", "printable"),
        ("pv_abcdefghijklmnop", "look like an id"),
        ("PV_shouting", "look like an id"),
        ("nd_node", "look like an id"),
        (" acc_123", "look like an id"),
    ],
)
async def test_a_bad_name_is_refused_with_a_reason(raw: str, says: str) -> None:
    with pytest.raises(InvalidPublicName, match=says):
        checked_public_name(raw)


async def test_publish_change_and_clear(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    async with sessions() as session:
        assert await public_name_of(session, provider) is None
    assert await publish(sessions, provider, "  Grace Compute ") == "Grace Compute"
    assert await publish(sessions, provider, "grace compute") == "grace compute"  # own: fine
    async with sessions() as session:
        assert await public_name_of(session, provider) == "grace compute"
        assert await all_public_names(session) == {provider: "grace compute"}
    async with sessions.begin() as session:
        assert await clear_public_name(session, provider) is True
    async with sessions.begin() as session:
        assert await clear_public_name(session, provider) is False
        assert await all_public_names(session) == {}


async def test_names_are_unique_case_insensitively(sessions: Sessions) -> None:
    first, second = await new_account(sessions), await new_account(sessions, name="Linus")
    await publish(sessions, first, "Open Weights")
    with pytest.raises(PublicNameTaken, match="taken"):
        await publish(sessions, second, "OPEN WEIGHTS")
    async with sessions.begin() as session:
        await clear_public_name(session, first)
    assert await publish(sessions, second, "OPEN WEIGHTS") == "OPEN WEIGHTS"  # free again


async def test_concurrent_claims_of_one_name_give_it_to_one(sessions: Sessions) -> None:
    providers = [await new_account(sessions, name=f"p{i}") for i in range(6)]
    results = await asyncio.gather(
        *(publish(sessions, p, "The One") for p in providers), return_exceptions=True
    )
    assert sum(1 for r in results if r == "The One") == 1
    assert all(isinstance(r, PublicNameTaken) for r in results if r != "The One")
    async with sessions() as session:
        assert list((await all_public_names(session)).values()) == ["The One"]


async def test_only_a_provider_has_a_public_name(sessions: Sessions) -> None:
    customer = await new_account(sessions, Role.CUSTOMER)
    with pytest.raises(NotAProvider):
        await publish(sessions, customer, "Customer Co")


async def test_the_registry_and_the_profiles_follow_the_database(sessions: Sessions) -> None:
    provider, anonymous = await new_account(sessions), await new_account(sessions, name="Anon")
    registry = NodeRegistry()
    await publish(sessions, provider, "Grace Compute")
    assert await load_public_names(registry, sessions) is True
    assert registry.public_name(provider) == "Grace Compute"
    assert registry.public_name(anonymous) is None
    router = Router(registry)
    profiles = {
        p.handle: p.to_json()
        for p in provider_profiles(registry, router, {provider: 10, anonymous: 5})
    }
    assert profiles[provider_handle(provider)]["provider_name"] == "Grace Compute"
    assert profiles[provider_handle(anonymous)]["provider_name"] is None
    async with sessions.begin() as session:
        await clear_public_name(session, provider)
    await apply_public_name(registry, sessions, provider)
    assert registry.public_name(provider) is None
