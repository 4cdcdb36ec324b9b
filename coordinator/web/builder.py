"""The Builder console."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

__all__ = ["BUILDER_HANDLERS"]

BUILDER_HANDLERS: list[ControllerRouterHandler] = []
