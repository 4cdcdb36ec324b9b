"""Console login and logout: an API key in, a session cookie out.

``POST /login`` takes the key from a form (never from a URL), opens a console session and sets
the cookie: ``HttpOnly`` (scripts cannot read it), ``SameSite=Lax`` (other sites' forms do not
carry it), ``Secure`` when the request came over HTTPS (directly or through a proxy that says
so with ``X-Forwarded-Proto``), for :data:`SESSION_LIFETIME_MS`. ``POST /logout`` ends it.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from coordinator.api.context import services_of
from coordinator.web.pages import (
    COOKIE_NAME,
    console_home,
    database,
    page,
    read_form,
    viewer_or_none,
)
from coordinator.web.sessions import SESSION_LIFETIME_MS, LoginRefused, end_session, open_session

__all__ = ["LOGIN_HANDLERS", "session_cookie"]


def _safe_next(value: str) -> str:
    """Only a path of this site (``/console...``) is a place to return to after login."""
    if value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return ""


def _https(request: Request[Any, Any, Any]) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def session_cookie(request: Request[Any, Any, Any], token: str) -> Cookie:
    """The console session cookie carrying ``token`` (flags: see the module docstring)."""
    return Cookie(
        key=COOKIE_NAME,
        value=token,
        path="/",
        max_age=SESSION_LIFETIME_MS // 1000,
        httponly=True,
        samesite="lax",
        secure=_https(request),
    )


def _signup_enabled(request: Request[Any, Any, Any]) -> bool:
    return services_of(request).signup.enabled


@get("/login")
async def login_form(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await viewer_or_none(request)
    next_path = _safe_next(request.query_params.get("next", ""))
    if viewer is not None:
        return Redirect(path=next_path or console_home(viewer.role), status_code=303)
    context = {"next": next_path, "error": "", "signup_enabled": _signup_enabled(request)}
    return page(request, "login.html", None, context, title="Log in")


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    fields = await read_form(request, None)
    next_path = _safe_next(fields.get("next", ""))
    raw_key = fields.get("api_key", "").strip()
    if not raw_key:
        return _refused(request, next_path, "enter an API key")
    sessions = database(services_of(request))
    try:
        async with sessions.begin() as session:
            token, viewer = await open_session(session, raw_key)
    except LoginRefused as refused:
        return _refused(request, next_path, str(refused))
    return Redirect(
        path=next_path or console_home(viewer.role),
        status_code=303,
        cookies=[session_cookie(request, token)],
    )


def _refused(request: Request[Any, Any, Any], next_path: str, message: str) -> Template:
    return page(
        request,
        "login.html",
        None,
        {"next": next_path, "error": message, "signup_enabled": _signup_enabled(request)},
        status_code=401,
        title="Log in",
    )


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await viewer_or_none(request)
    if viewer is None:  # already logged out (or expired): nothing to protect
        return Redirect(path="/login", status_code=303)
    await read_form(request, viewer)
    async with database(services_of(request)).begin() as session:
        await end_session(session, request.cookies.get(COOKIE_NAME, ""))
    response = Redirect(path="/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@get("/console")
async def console(request: Request[Any, Any, Any]) -> Response[Any]:
    """The logged-in account's home page (or the login page)."""
    viewer = await viewer_or_none(request)
    if viewer is None:
        return Redirect(path="/login", status_code=303)
    return Redirect(path=console_home(viewer.role), status_code=303)


@get("/")
async def front(request: Request[Any, Any, Any]) -> Response[Any]:
    """The site's front door is the public network status."""
    del request
    return Redirect(path="/status", status_code=303)


LOGIN_HANDLERS = [login_form, login, logout, console, front]
