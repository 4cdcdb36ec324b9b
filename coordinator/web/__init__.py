"""The coordinator's web pages: the public network status and the consoles.

Server-rendered Jinja templates (``templates/``), one stylesheet and one small live-refresh script
(``static/``), no front-end build step. Each area of pages is a module with its handler list:

- :mod:`coordinator.web.login`: ``/login``, ``/logout``, ``/console``
- :mod:`coordinator.web.signup`: self-serve ``/signup``
- :mod:`coordinator.web.status`: the public status page and the operator's console
- :mod:`coordinator.web.market`: the public marketplace, ``/models``, ``/models/{model}``,
  ``/providers``
- :mod:`coordinator.web.provider`: the Provider console
- :mod:`coordinator.web.builder`: the Builder console
- :mod:`coordinator.web.customer`: the customer console (and task route pages)
- :mod:`coordinator.web.task_routes`: the task route pages of customers and of Builders' apps
- :mod:`coordinator.web.catalogue`: the operator's model catalogue page
- :mod:`coordinator.web.usage`: the customer's usage dashboard and its CSV export

:mod:`coordinator.web.pages` holds what they share (login checks, CSRF, rendering).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from coordinator.web.builder import BUILDER_HANDLERS
from coordinator.web.catalogue import CATALOGUE_PAGE_HANDLERS
from coordinator.web.customer import CUSTOMER_HANDLERS
from coordinator.web.filters import FILTERS
from coordinator.web.login import LOGIN_HANDLERS
from coordinator.web.market import MARKET_PAGE_HANDLERS
from coordinator.web.pages import (
    LoginRequired,
    PageError,
    login_required_response,
    page_error_response,
)
from coordinator.web.provider import PROVIDER_HANDLERS
from coordinator.web.signup import SIGNUP_HANDLERS
from coordinator.web.status import STATUS_HANDLERS
from coordinator.web.usage import USAGE_PAGE_HANDLERS

__all__ = ["WEB_EXCEPTION_HANDLERS", "template_config", "web_handlers"]

_HERE = Path(__file__).parent


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)
    return environment


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(_environment()))


def web_handlers() -> list[ControllerRouterHandler]:
    return [
        create_static_files_router(path="/static", directories=[_HERE / "static"]),
        *LOGIN_HANDLERS,
        *SIGNUP_HANDLERS,
        *STATUS_HANDLERS,
        *MARKET_PAGE_HANDLERS,
        *PROVIDER_HANDLERS,
        *BUILDER_HANDLERS,
        *CUSTOMER_HANDLERS,
        *CATALOGUE_PAGE_HANDLERS,
        *USAGE_PAGE_HANDLERS,
    ]


WEB_EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    PageError: page_error_response,
    LoginRequired: login_required_response,
}
