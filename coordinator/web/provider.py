"""The Provider console."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

__all__ = ["PROVIDER_HANDLERS"]

PROVIDER_HANDLERS: list[ControllerRouterHandler] = []
