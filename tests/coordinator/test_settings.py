"""Coordinator settings: derived defaults, environment, overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.settings import Settings, SettingsError, load_settings


def test_paths_derive_from_the_data_directory() -> None:
    settings = load_settings({}, data_dir=Path("/srv/shareai"))
    assert settings.database_url == "sqlite+aiosqlite:////srv/shareai/coordinator.db"
    assert settings.coordinator_key_file == Path("/srv/shareai/coordinator.key")
    default = load_settings({})
    assert default.data_dir == Path(".shareai")
    assert default.database_url == "sqlite+aiosqlite:///.shareai/coordinator.db"
    assert (default.host, default.port) == ("127.0.0.1", 8000)
    assert default.heartbeat_interval_ms == 15_000


def test_environment_variables_apply_and_explicit_overrides_win() -> None:
    environ = {
        "SHAREAI_DATA_DIR": "/var/lib/shareai",
        "SHAREAI_PORT": "9000",
        "SHAREAI_HEARTBEAT_INTERVAL_MS": "5000",
        "SHAREAI_HOST": "",  # empty counts as unset
    }
    settings = load_settings(environ)
    assert settings.data_dir == Path("/var/lib/shareai")
    assert (settings.port, settings.heartbeat_interval_ms) == (9000, 5000)
    assert settings.host == "127.0.0.1"
    overridden = load_settings(environ, port=9100, database_url=None)
    assert overridden.port == 9100
    assert overridden.database_url == "sqlite+aiosqlite:////var/lib/shareai/coordinator.db"


def test_hedging_by_default_is_an_operator_switch() -> None:
    assert load_settings({}).hedge_by_default is False
    assert load_settings({"SHAREAI_HEDGE_BY_DEFAULT": "true"}).hedge_by_default is True
    with pytest.raises(SettingsError, match="invalid setting hedge_by_default"):
        load_settings({"SHAREAI_HEDGE_BY_DEFAULT": "sometimes"})


def test_database_urls_name_the_async_driver() -> None:
    assert (
        load_settings({}, database_url="postgresql://u:p@db/shareai").database_url
        == "postgresql+asyncpg://u:p@db/shareai"
    )
    assert (
        load_settings({"SHAREAI_DATABASE_URL": "sqlite:///x.db"}).database_url
        == "sqlite+aiosqlite:///x.db"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70_000}, "invalid setting port: Input should be less than or equal to 65535"),
        ({"port": "http"}, "invalid setting port:"),
        ({"heartbeat_interval_ms": 10}, "invalid setting heartbeat_interval_ms:"),
        ({"database_url": "mysql://db/x"}, "unsupported database 'mysql'"),
        ({"database_url": "not a url"}, "invalid database URL"),
        ({"database_url": "sqlite+aiosqlite://"}, "in-memory SQLite database is not supported"),
        ({"database_url": "sqlite:///:memory:"}, "in-memory SQLite database is not supported"),
        ({"colour": "blue"}, "invalid setting colour: Extra inputs are not permitted"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_setting(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({}, **overrides)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    assert Settings(port=0).port == 0  # derived fields need not be given
