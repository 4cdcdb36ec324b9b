"""The coordinator's HTTP API as the node needs it: its key, the Provider's account, enrollment.

- ``GET /v1/hub/info`` (public): the coordinator's key, id, hub path and protocol versions;
- ``GET /v1/me`` (Provider API key): the account the key belongs to;
- ``GET /v1/nodes/enroll`` (one-time enrollment token): the account the token enrolls into;
- ``POST /v1/nodes/enroll`` (Provider API key, or a one-time enrollment token in its place):
  binds a node key to that account, with the proof of possession of
  :class:`protocol.EnrollmentStatement`.

Synchronous (``shareai node init`` and the start of ``shareai node run`` are one-shot calls).
Every failure is an :class:`EnrollmentError` with one line for the Provider.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from node_agent.errors import EnrollmentError
from protocol import SUPPORTED_VERSIONS, EnrollmentStatement, Identity, PublicKey

__all__ = [
    "Enrollment",
    "HubInfo",
    "enroll_node",
    "fetch_account_id",
    "fetch_hub_info",
    "fetch_token_account_id",
    "new_client",
]

_TIMEOUT = httpx.Timeout(15.0, connect=10.0)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class HubInfo:
    coordinator_key: PublicKey
    coordinator_id: str
    hub_path: str
    protocol_versions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Enrollment:
    node_id: str
    account_id: str


def new_client() -> httpx.Client:
    """A client with the timeouts these calls use (the caller closes it)."""
    return httpx.Client(timeout=_TIMEOUT, follow_redirects=False)


def fetch_hub_info(client: httpx.Client, coordinator_url: str) -> HubInfo:
    """The coordinator's public identity. Raises EnrollmentError."""
    body = _call(client, "GET", coordinator_url, "/v1/hub/info")
    try:
        key = PublicKey.from_text(_field(body, "coordinator_key", str))
    except ValueError as error:
        raise EnrollmentError(f"the coordinator's key is not valid: {error}") from None
    coordinator_id = _field(body, "coordinator_id", str)
    if coordinator_id != key.coordinator_id:
        raise EnrollmentError(
            f"the coordinator's id {coordinator_id!r} does not match its key"
            f" (expected {key.coordinator_id})"
        )
    hub_path = _field(body, "hub_path", str)
    if not hub_path.startswith("/"):
        raise EnrollmentError(f"the coordinator's hub_path {hub_path!r} is not a path")
    versions = _field(body, "protocol_versions", list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
        raise EnrollmentError("the coordinator's protocol_versions are not integers")
    if not set(versions) & set(SUPPORTED_VERSIONS):
        raise EnrollmentError(
            f"the coordinator speaks protocol versions {versions}; this agent speaks"
            f" {list(SUPPORTED_VERSIONS)}: upgrade shareai"
        )
    return HubInfo(key, coordinator_id, hub_path, tuple(versions))


def fetch_account_id(client: httpx.Client, coordinator_url: str, api_key: str) -> str:
    """The account of the Provider API key ``api_key``. Raises EnrollmentError."""
    body = _call(client, "GET", coordinator_url, "/v1/me", api_key=api_key)
    role = body.get("role")
    if role is not None and role != "provider":
        raise EnrollmentError(
            f"this API key belongs to a {role} account; enrolling a node needs a Provider key"
        )
    return _field(body, "account_id", str)


def fetch_token_account_id(client: httpx.Client, coordinator_url: str, token: str) -> str:
    """The Provider account a one-time enrollment token (``sai-enroll-...``) enrolls into.
    Raises EnrollmentError (an unknown, used, expired or revoked token says which)."""
    body = _call(client, "GET", coordinator_url, "/v1/nodes/enroll", api_key=token)
    return _field(body, "account_id", str)


def enroll_node(
    client: httpx.Client,
    coordinator_url: str,
    api_key: str,
    *,
    identity: Identity,
    coordinator_key: PublicKey,
    account_id: str,
    now_ms: int | None = None,
) -> Enrollment:
    """Enroll ``identity``'s key under ``account_id`` with a fresh proof, authorised by
    ``api_key``: a Provider API key or a one-time enrollment token. Raises EnrollmentError."""
    issued_at_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    statement = EnrollmentStatement(
        coordinator_key=coordinator_key,
        node_key=identity.public_key,
        account_id=account_id,
        issued_at_ms=issued_at_ms,
    )
    proof = base64.urlsafe_b64encode(statement.sign(identity)).decode("ascii").rstrip("=")
    body = _call(
        client,
        "POST",
        coordinator_url,
        "/v1/nodes/enroll",
        api_key=api_key,
        json={
            "node_key": identity.public_key.to_text(),
            "account_id": account_id,
            "issued_at_ms": issued_at_ms,
            "proof": proof,
        },
    )
    node_id = _field(body, "node_id", str)
    if node_id != identity.public_key.node_id:
        raise EnrollmentError(
            f"the coordinator enrolled node {node_id!r}, but this key's id is"
            f" {identity.public_key.node_id}"
        )
    return Enrollment(node_id=node_id, account_id=_field(body, "account_id", str))


def _call(
    client: httpx.Client,
    method: str,
    coordinator_url: str,
    path: str,
    *,
    api_key: str | None = None,
    json: dict[str, Any] | None = None,
) -> dict[str, Any]:
    url = coordinator_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    try:
        response = client.request(method, url, headers=headers, json=json)
    except httpx.HTTPError as error:
        raise EnrollmentError(
            f"cannot reach the coordinator at {coordinator_url}: {error or type(error).__name__}"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        raise EnrollmentError(f"{method} {path} failed: {_error_text(response, body)}")
    if not isinstance(body, dict):
        raise EnrollmentError(
            f"{method} {path} answered {response.status_code} without a JSON object"
        )
    return body


def _error_text(response: httpx.Response, body: object) -> str:
    status = f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code") or error.get("type")
        message = " ".join(str(error.get("message", "")).split())[:300]
        return f"{status} {code}: {message}" if code else f"{status}: {message}"
    return f"{status} {response.reason_phrase}".strip()


def _field(body: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise EnrollmentError(f"the coordinator's answer lacks a valid {name!r}")
    return value
