"""The operator's model catalogue page."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

__all__ = ["CATALOGUE_PAGE_HANDLERS"]

CATALOGUE_PAGE_HANDLERS: list[ControllerRouterHandler] = []
