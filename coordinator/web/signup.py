"""Self-serve sign-up: ``GET/POST /signup`` (the operator's ``SHAREAI_SIGNUP`` decides).

A person picks a role (customer, provider or builder; never operator), names the account and,
with ``SHAREAI_SIGNUP=invite``, gives an invite code. The answer shows the new API key once (in
the page, never in a URL; the coordinator keeps only its hash) and logs the browser in with the
same session cookie as ``POST /login``. With sign-up off, both methods answer 404.

Abuse control, in memory per coordinator process: at most :data:`SIGNUPS_PER_HOUR` accounts and
:data:`ATTEMPTS_PER_HOUR` attempts (refused codes included, so codes cannot be guessed quickly)
per client address; beyond that, a 429 page. The address is the TCP peer's: behind a proxy, all
clients share the proxy's.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect, Template
from litestar.types import ControllerRouterHandler

from coordinator.accounts import InvalidAccountInput
from coordinator.accounts.invites import (
    SIGNUP_ROLES,
    InviteRefused,
    SignupMode,
    SignupPolicy,
    SignupRefused,
    sign_up,
)
from coordinator.api.context import services_of
from coordinator.db.models import Role
from coordinator.money import format_usd
from coordinator.web.login import session_cookie
from coordinator.web.pages import (
    PageError,
    console_home,
    database,
    page,
    read_form,
    viewer_or_none,
)
from coordinator.web.sessions import open_session

__all__ = ["ATTEMPTS_PER_HOUR", "SIGNUPS_PER_HOUR", "SIGNUP_HANDLERS", "SlidingWindowLimit"]

SIGNUPS_PER_HOUR = 5
ATTEMPTS_PER_HOUR = 30
_HOUR_S = 3600.0
_MAX_TRACKED_CLIENTS = 10_000


class SlidingWindowLimit:
    """At most ``limit`` events per key in any ``window_s`` seconds (``clock``: monotonic s)."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def wait_s(self, key: str) -> float:
        """0 when another event of ``key`` is allowed now, else the seconds until it is."""
        events = self._recent(key, self._clock())
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window_s - self._clock()

    def record(self, key: str) -> None:
        now = self._clock()
        if len(self._events) >= _MAX_TRACKED_CLIENTS:  # keep memory bounded: drop idle keys
            for idle in [k for k, events in self._events.items() if not self._recent(k, now)]:
                del self._events[idle]
        self._events.setdefault(key, deque()).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events


class _SignupLimits:
    def __init__(self) -> None:
        self.signups = SlidingWindowLimit(SIGNUPS_PER_HOUR, _HOUR_S)
        self.attempts = SlidingWindowLimit(ATTEMPTS_PER_HOUR, _HOUR_S)


def _limits(request: Request[Any, Any, Any]) -> _SignupLimits:
    state = request.app.state
    limits = state.get("signup_limits")
    if not isinstance(limits, _SignupLimits):
        limits = _SignupLimits()
        state["signup_limits"] = limits
    return limits


def _policy(request: Request[Any, Any, Any]) -> SignupPolicy:
    policy = services_of(request).signup
    if not policy.enabled:
        raise PageError(
            404, "sign-up is switched off on this network: ask its operator for an account"
        )
    return policy


def _form(
    request: Request[Any, Any, Any],
    policy: SignupPolicy,
    *,
    role: str = Role.CUSTOMER.value,
    name: str = "",
    error: str = "",
    status_code: int = 200,
) -> Template:
    context = {
        "roles": [member.value for member in SIGNUP_ROLES],
        "role": role,
        "name": name,
        "error": error,
        "needs_invite": policy.mode is SignupMode.INVITE,
        "starter_credit_usd": (
            format_usd(policy.starter_credit_micro_usd) if policy.starter_credit_micro_usd else ""
        ),
    }
    return page(request, "signup.html", None, context, status_code=status_code, title="Sign up")


@get("/signup")
async def signup_form(request: Request[Any, Any, Any]) -> Response[Any]:
    policy = _policy(request)
    viewer = await viewer_or_none(request)
    if viewer is not None:
        return Redirect(path=console_home(viewer.role), status_code=303)
    return _form(request, policy)


@post("/signup", status_code=200)
async def signup(request: Request[Any, Any, Any]) -> Response[Any]:
    policy = _policy(request)
    fields = await read_form(request, None)
    client = request.client.host if request.client is not None else "unknown"
    limits = _limits(request)
    wait_s = max(limits.attempts.wait_s(client), limits.signups.wait_s(client))
    if wait_s > 0:
        minutes = max(1, math.ceil(wait_s / 60))
        raise PageError(
            429,
            f"too many sign-ups from your address: try again in {minutes} minute"
            + ("s" if minutes != 1 else ""),
        )
    limits.attempts.record(client)
    role = fields.get("role", "").strip()
    name = fields.get("name", "")
    try:
        async with database(services_of(request)).begin() as session:
            account, raw_key = await sign_up(
                session, policy, role, name, fields.get("invite_code", "")
            )
            token, viewer = await open_session(session, raw_key)
    except InviteRefused as refused:
        return _form(request, policy, role=role, name=name, error=str(refused), status_code=403)
    except (SignupRefused, InvalidAccountInput) as refused:
        return _form(request, policy, role=role, name=name, error=str(refused), status_code=400)
    limits.signups.record(client)
    context = {
        "raw_key": raw_key,
        "account_id": account.id,
        "role": account.role.value,
        "home": console_home(account.role),
        "starter_credit_usd": (
            format_usd(policy.starter_credit_micro_usd)
            if account.role is Role.CUSTOMER and policy.starter_credit_micro_usd
            else ""
        ),
    }
    response = page(request, "signup_done.html", viewer, context, title="Welcome")
    response.set_cookie(session_cookie(request, token))
    return response


SIGNUP_HANDLERS: list[ControllerRouterHandler] = [signup_form, signup]
