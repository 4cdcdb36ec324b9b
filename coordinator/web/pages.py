"""What every console page shares: who is looking, CSRF-checked forms, rendering, errors.

A page handler is a plain Litestar handler that starts with :func:`require_viewer` (the logged-in
account, of one of the roles the page is for) and ends with :func:`page` (a Jinja template with
the viewer, the CSRF token and the navigation in its context). A POST handler reads its fields
with :func:`read_form`, which refuses a form without the session's CSRF token or from another
origin. Errors a person should read are :class:`PageError`; a missing login is
:class:`LoginRequired`, which redirects to ``/login``. Both render as HTML, never JSON (the
handlers are registered on the app by :func:`coordinator.web.page_exception_handlers`).

Pages never take an account id from the URL or a form to decide whose data to show: they use the
viewer's, so a page cannot show another account's data by construction; objects named in a URL
(an app, a node, a key) are looked up *within* the viewer's account.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from litestar import Request, Response
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.context import Services, services_of
from coordinator.db.models import Role
from coordinator.web.sessions import Viewer, viewer_of_token

__all__ = [
    "COOKIE_NAME",
    "MAX_FORM_BYTES",
    "LoginRequired",
    "PageError",
    "check_script_request",
    "console_home",
    "database",
    "login_required_response",
    "page",
    "page_error_response",
    "read_form",
    "require_live_viewer",
    "require_viewer",
    "see_other",
    "viewer_or_none",
]

COOKIE_NAME = "shareai_console"
MAX_FORM_BYTES = 256 * 1024
"""A console form is small; a bigger body is refused before it is parsed."""

_HOMES = {
    Role.OPERATOR: "/console/operator",
    Role.PROVIDER: "/console/provider",
    Role.BUILDER: "/console/builder",
    Role.CUSTOMER: "/console/customer",
}

_NAVIGATION: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.OPERATOR: (
        ("/console/operator", "Network"),
        ("/console/operator/catalogue", "Catalogue"),
    ),
    Role.PROVIDER: (("/console/provider", "My nodes"),),
    Role.BUILDER: (("/console/builder", "My apps"),),
    Role.CUSTOMER: (
        ("/console/customer", "Account"),
        ("/console/customer/playground", "Playground"),
        ("/console/customer/routes", "Task routes"),
        ("/console/customer/usage", "Usage"),
    ),
}


class PageError(Exception):
    """A console error shown to the person as a page: ``status`` and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """No live console session: send the browser to the login page, then back to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def console_home(role: Role) -> str:
    """The page each role lands on after logging in."""
    return _HOMES[role]


def database(services: Services) -> async_sessionmaker[AsyncSession]:
    """The coordinator's database; consoles need one (500 otherwise: a wiring bug)."""
    if services.sessions is None:
        raise PageError(503, "the consoles need the coordinator's database, and none is configured")
    return services.sessions


async def viewer_or_none(request: Request[Any, Any, Any]) -> Viewer | None:
    """The logged-in viewer of this request's cookie, or None."""
    token = request.cookies.get(COOKIE_NAME, "")
    if not token:
        return None
    services = services_of(request)
    if services.sessions is None:
        return None
    async with services.sessions() as session:
        return await viewer_of_token(session, token)


async def require_viewer(request: Request[Any, Any, Any], *roles: Role) -> Viewer:
    """The viewer, who must have one of ``roles``: else :class:`LoginRequired` (no session) or
    a 403 :class:`PageError` (logged in with another role)."""
    viewer = await viewer_or_none(request)
    if viewer is None:
        raise LoginRequired(request.url.path)
    if roles and viewer.role not in roles:
        names = " or ".join(role.value for role in roles)
        raise PageError(
            403,
            f"this page is for {names} accounts; you are logged in as a {viewer.role.value}",
        )
    return viewer


async def require_live_viewer(request: Request[Any, Any, Any], *roles: Role) -> Viewer:
    """:func:`require_viewer` for a fragment that ``live.js`` fetches: without a session it
    answers 401 (a status the script shows as stale numbers), never the login page to swap in."""
    try:
        return await require_viewer(request, *roles)
    except LoginRequired:
        raise PageError(401, "your console session ended: reload the page to log in") from None


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    """Whether the browser says the form came from this site (Origin, else Referer).

    A request with neither header (an old client, a privacy setting) passes this check and
    still needs the CSRF token, which only pages of this site can read.
    """
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            return value != "null" and urlsplit(value).netloc == host
    return True


async def read_form(request: Request[Any, Any, Any], viewer: Viewer | None) -> dict[str, str]:
    """The form's fields, after the CSRF checks (403 on failure).

    With a ``viewer``, the form must carry the session's ``csrf_token`` (synchroniser token);
    every form must come from this origin. A field given twice keeps its last value.
    """
    if not _same_origin(request):
        raise PageError(403, "this form was sent from another site, so it was refused")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise PageError(415, "a console form is sent as application/x-www-form-urlencoded")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise PageError(413, f"a console form is at most {MAX_FORM_BYTES // 1024} KiB")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise PageError(413, f"a console form is at most {MAX_FORM_BYTES // 1024} KiB")
    try:
        fields = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "the form could not be read (not UTF-8 form data)") from None
    if viewer is not None and not hmac.compare_digest(
        fields.get("csrf_token", "").encode(), viewer.csrf_token.encode()
    ):
        raise PageError(
            403, "this form is out of date or was not sent from your console; reload the page"
        )
    fields.pop("csrf_token", None)
    return fields


def check_script_request(request: Request[Any, Any, Any], viewer: Viewer) -> None:
    """A console script's request (``fetch``, not a form): it must come from this origin (an
    ``Origin`` header is required: browsers send one with every ``fetch`` POST) and carry the
    session's CSRF token in the ``x-csrf-token`` header. Raises a 403 :class:`PageError`."""
    if not request.headers.get("origin") or not _same_origin(request):
        raise PageError(403, "this request was sent from another site, so it was refused")
    if not hmac.compare_digest(
        request.headers.get("x-csrf-token", "").encode(), viewer.csrf_token.encode()
    ):
        raise PageError(
            403, "this request was not sent from your console (no CSRF token); reload the page"
        )


def navigation(viewer: Viewer | None) -> Iterable[tuple[str, str]]:
    links: list[tuple[str, str]] = [
        ("/models", "Models"),
        ("/providers", "Providers"),
        ("/status", "Network status"),
    ]
    if viewer is not None:
        links.extend(_NAVIGATION[viewer.role])
    return links


def page(
    request: Request[Any, Any, Any],
    template: str,
    viewer: Viewer | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    title: str = "",
) -> Template:
    """Render ``template`` with the shared context: ``viewer``, ``csrf_token``, ``nav``,
    ``title``, ``path`` and ``notice`` (a one-line message passed by :func:`see_other`)."""
    shared: dict[str, Any] = {
        "viewer": viewer,
        "csrf_token": viewer.csrf_token if viewer is not None else "",
        "nav": list(navigation(viewer)),
        "title": title,
        "path": request.url.path,
        "notice": request.query_params.get("notice", "")[:300],
    }
    return Template(
        template_name=template,
        context=shared | dict(context or {}),
        status_code=status_code,
        headers=_NO_STORE,
    )


_NO_STORE = {"cache-control": "no-store", "x-frame-options": "DENY"}


def see_other(path: str, notice: str = "") -> Redirect:
    """After a successful form, go back to ``path`` (303) with a one-line ``notice`` shown."""
    target = path + (("&" if "?" in path else "?") + "notice=" + quote(notice) if notice else "")
    return Redirect(path=target, status_code=303, headers=_NO_STORE)


def page_error_response(request: Request[Any, Any, Any], error: PageError) -> Response[Any]:
    """Exception handler: a :class:`PageError` as an HTML page with its status."""
    return page(
        request,
        "error.html",
        None,
        {"message": error.message, "status": error.status},
        status_code=error.status,
        title="Error",
    )


def login_required_response(request: Request[Any, Any, Any], error: LoginRequired) -> Response[Any]:
    """Exception handler: to the login page, which sends the browser back afterwards."""
    del request
    return Redirect(path="/login?next=" + quote(error.path), status_code=303, headers=_NO_STORE)
