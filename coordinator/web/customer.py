"""The customer console and task route pages."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

__all__ = ["CUSTOMER_HANDLERS"]

CUSTOMER_HANDLERS: list[ControllerRouterHandler] = []
