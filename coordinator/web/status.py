"""The public network status page and the operator's console."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

__all__ = ["STATUS_HANDLERS"]

STATUS_HANDLERS: list[ControllerRouterHandler] = []
