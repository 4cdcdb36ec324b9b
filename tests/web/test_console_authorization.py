"""Every console route refuses the wrong role and other accounts' objects.

The routes come from the real app's route table (:func:`coordinator.app.create_app`), so a page
added later is swept without touching this file: every ``GET`` and ``POST`` under
``/console/<role>`` is requested over HTTP from a real coordinator process, with two accounts of
every role made by ``shareai admin create-account``:

- anonymous: ``303`` to ``/login?next=...`` (a live-refresh fragment, whose last segment is
  ``live``, answers ``401`` instead: a script asked, and the login page must not be swapped into
  the page it refreshes);
- logged in with each other role: ``403``, an HTML page, also for a ``POST`` that carries that
  session's valid CSRF token;
- the route's own role: a ``GET`` answers ``200``; a ``POST`` without the session's CSRF token,
  with another session's token, or from another site answers ``403``;
- a route with path parameters must have an entry in :data:`OBJECT_OWNERSHIP`, the fixed
  allow-list of such routes: it names the kind of object each parameter is, the sweep makes one
  for each of two accounts of the role, and the first account asking for the second's object
  (each parameter alone and all together) gets ``404``, with nothing of the other account in
  the answer. A new route with path parameters and no entry fails
  :func:`test_every_console_route_is_known_to_the_sweep`: nobody adds one unchecked.

Every answer of a ``/console/<role>`` route has ``cache-control: no-store``; the session cookie
is ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and ``Secure`` behind HTTPS.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
from litestar.routes import HTTPRoute

from coordinator.app import Services, create_app
from protocol import Identity
from tests.e2e.network import Network, network, run_shareai
from tests.web.conftest import MOCK_MODEL, MOCK_NODE

ROLES = ("operator", "provider", "builder", "customer")
FORM_METHODS = frozenset({"GET", "POST"})
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


# --- the route table --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleRoute:
    path: str
    """As declared, with parameter types: ``/console/customer/keys/{key_id:str}/revoke``."""
    methods: frozenset[str]
    params: tuple[str, ...]

    @property
    def role(self) -> str:
        return self.path.split("/")[2]

    @property
    def fragment(self) -> bool:
        """A live-refresh fragment, fetched by ``live.js`` rather than opened by a person."""
        return self.path.rsplit("/", 1)[-1] == "live"

    def url(self, values: Mapping[str, str]) -> str:
        """The path with ``values`` for its parameters."""
        return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], self.path)


def console_routes() -> list[ConsoleRoute]:
    """Every route under ``/console`` of the app the coordinator serves."""
    with warnings.catch_warnings():
        # Older API handlers declare path parameters in a style Litestar now deprecates; only
        # the route table is read here.
        warnings.simplefilter("ignore")
        # create_app only stores the services on the app: the route table does not use them.
        app = create_app(cast(Services, object()))
    routes = [
        ConsoleRoute(
            route.path,
            frozenset(route.methods) - {"OPTIONS", "HEAD"},
            tuple(route.path_parameters),
        )
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/console/")
    ]
    return sorted(routes, key=lambda r: r.path)


ROUTES = console_routes()
GET_ROUTES = [r for r in ROUTES if "GET" in r.methods]
POST_ROUTES = [r for r in ROUTES if "POST" in r.methods]


# --- the object-ownership table ---------------------------------------------------------------


@dataclass(frozen=True)
class Owned:
    """The route's parameters name an object of one account (``kind``, see :data:`KINDS`):
    another account of the role must get 404. ``rename`` maps a parameter to the kind's field
    when the names differ; ``form`` is what a ``POST`` sends besides the CSRF token, so that
    only the object's owner decides the answer (not a missing field)."""

    kind: str
    rename: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AnyObject:
    """The role may act on any account's object (an operator on any node): only the role
    checks apply. ``why`` says why that is right."""

    why: str


OBJECT_OWNERSHIP: dict[str, Owned | AnyObject] = {
    # The customer console: API keys and task routes are the customer's own.
    "/console/customer/keys/{key_id:str}/revoke": Owned("customer_key"),
    "/console/customer/routes/{name:str}": Owned("customer_route"),
    "/console/customer/routes/{name:str}/delete": Owned("customer_route"),
    "/console/customer/routes/{name:str}/dry-run": Owned("customer_route"),
    # The Playground: a customer's generations (usage) are their own.
    "/console/customer/playground/generations/{generation_id:str}": Owned("customer_generation"),
    # The Builder console: apps and their task routes are the Builder's own.
    "/console/builder/apps/{app_id:str}/surcharge": Owned(
        "builder_app", form={"surcharge_percent": "5"}
    ),
    "/console/builder/apps/{app_id:str}/routes": Owned("builder_app"),
    "/console/builder/apps/{app_id:str}/routes/{name:str}": Owned("builder_app_route"),
    "/console/builder/apps/{app_id:str}/routes/{name:str}/delete": Owned("builder_app_route"),
    "/console/builder/apps/{app_id:str}/routes/{name:str}/dry-run": Owned("builder_app_route"),
    # The Provider console: enrollment tokens and nodes are the Provider's own.
    "/console/provider/tokens/{token_id:str}/revoke": Owned("provider_token"),
    "/console/provider/nodes/{node_id:str}/revoke": Owned("provider_node"),
}


# --- accounts and their objects on a real coordinator -----------------------------------------


@dataclass
class Account:
    role: str
    name: str
    account_id: str
    api_key: str
    client: httpx.Client
    csrf_token: str = ""


@dataclass(frozen=True)
class OwnedObject:
    fields: dict[str, str]
    """The object's ids, by the kind's field names."""
    secrets: tuple[str, ...]
    """Strings only its owner may see (names, prefixes): never in another account's answer."""


def _one(database: Path, sql: str, *args: str) -> tuple[Any, ...]:
    """One row of the coordinator's SQLite database, read-only (ids the pages do not take as
    input, like a key's id, are read here rather than scraped from the owner's page)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        row = connection.execute(sql, args).fetchone()
    assert row is not None, f"nothing in the database for {sql} {args}"
    return tuple(row)


def _bearer(account: Account) -> dict[str, str]:
    return {"authorization": f"Bearer {account.api_key}"}


def _customer_key(world: World, owner: Account) -> OwnedObject:
    key_id, prefix = _one(
        world.database,
        "SELECT id, prefix FROM api_keys WHERE account_id = ? AND app_id IS NULL",
        owner.account_id,
    )
    return OwnedObject({"key_id": key_id}, (owner.name, prefix))


def _customer_generation(world: World, owner: Account) -> OwnedObject:
    """A request the owner paid for, made with its key through the API (on a mock node that
    the first such object starts)."""
    if not world.net.model_nodes(MOCK_MODEL):
        world.net.add_node("playground-node", MOCK_NODE)
        world.net.wait_for_nodes(MOCK_MODEL, 1)
    world.net.admin("add-credits", "--account", owner.account_id, "--usd", "1")
    response = owner.client.post(
        "/v1/chat/completions",
        json={"model": MOCK_MODEL, "messages": [{"role": "user", "content": owner.name}]},
        headers=_bearer(owner),
    )
    assert response.status_code == 200, response.text
    return OwnedObject({"generation_id": response.json()["id"]}, (owner.name,))


def _route_document(owner: Account) -> dict[str, Any]:
    return {
        "description": f"the private route of {owner.name}",
        "rules": [{"name": "triage", "when": {"task": "triage"}, "models": ["qwen2.5:7b"]}],
        "default": {"models": [LLAMA]},
    }


def _route_name() -> str:
    """A route name that says nothing of its owner (the URL's name is echoed in a 404)."""
    return f"route-{secrets.token_hex(4)}"


def _customer_route(world: World, owner: Account) -> OwnedObject:
    name = _route_name()
    response = owner.client.put(
        f"/v1/routes/{name}", json=_route_document(owner), headers=_bearer(owner)
    )
    assert response.status_code == 200, response.text
    return OwnedObject({"name": name}, (owner.name, f"the private route of {owner.name}"))


def _builder_app(world: World, owner: Account) -> OwnedObject:
    app_name = f"app of {owner.name}"
    response = owner.client.post(
        "/v1/apps", json={"name": app_name, "surcharge_percent": "2"}, headers=_bearer(owner)
    )
    assert response.status_code == 201, response.text
    return OwnedObject({"app_id": response.json()["id"]}, (owner.name, app_name))


def _builder_app_route(world: World, owner: Account) -> OwnedObject:
    app = world.object("builder_app", owner)
    name = _route_name()
    response = owner.client.put(
        f"/v1/apps/{app.fields['app_id']}/routes/{name}",
        json=_route_document(owner),
        headers=_bearer(owner),
    )
    assert response.status_code == 200, response.text
    return OwnedObject(
        app.fields | {"name": name}, (*app.secrets, f"the private route of {owner.name}")
    )


def _provider_token(world: World, owner: Account) -> OwnedObject:
    made = owner.client.post("/console/provider/tokens", data={"csrf_token": owner.csrf_token})
    assert made.status_code == 200, made.text
    token_id, prefix = _one(
        world.database,
        "SELECT id, prefix FROM enrollment_tokens WHERE account_id = ? AND revoked_at_ms IS NULL",
        owner.account_id,
    )
    return OwnedObject({"token_id": token_id}, (owner.name, prefix))


def _provider_node(world: World, owner: Account) -> OwnedObject:
    node_dir = world.net.root / f"node-of-{owner.name}"
    node_dir.mkdir()
    enrolled = run_shareai(
        "node",
        "init",
        "--coordinator",
        world.net.url,
        "--api-key",
        owner.api_key,
        "--key-file",
        str(node_dir / "node.key"),
        "--config",
        str(node_dir / "node.toml"),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    node_id = Identity.load(node_dir / "node.key").public_key.node_id
    return OwnedObject({"node_id": node_id}, (owner.name,))


@dataclass(frozen=True)
class Kind:
    role: str
    """The role whose accounts own such objects."""
    fields: frozenset[str]
    """The ids that name one (route parameters map to these)."""
    make: Callable[[World, Account], OwnedObject]
    """How its owner makes one through the real coordinator: console, API or ``shareai``."""


KINDS: dict[str, Kind] = {
    "customer_key": Kind("customer", frozenset({"key_id"}), _customer_key),
    "customer_route": Kind("customer", frozenset({"name"}), _customer_route),
    "customer_generation": Kind("customer", frozenset({"generation_id"}), _customer_generation),
    "builder_app": Kind("builder", frozenset({"app_id"}), _builder_app),
    "builder_app_route": Kind("builder", frozenset({"app_id", "name"}), _builder_app_route),
    "provider_token": Kind("provider", frozenset({"token_id"}), _provider_token),
    "provider_node": Kind("provider", frozenset({"node_id"}), _provider_node),
}


@dataclass
class World:
    net: Network
    me: dict[str, Account]
    """Per role, the account that asks."""
    other: dict[str, Account]
    """Per role, the account whose objects it must not reach."""
    _objects: dict[tuple[str, str], OwnedObject] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.net.data_dir / "coordinator.db"

    def object(self, kind: str, owner: Account) -> OwnedObject:
        """The ``kind`` object of ``owner``, made on first use."""
        key = (kind, owner.account_id)
        if key not in self._objects:
            made = KINDS[kind].make(self, owner)
            assert made.fields.keys() == KINDS[kind].fields, made
            self._objects[key] = made
        return self._objects[key]


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _log_in(net: Network, role: str, name: str) -> Account:
    made = net.admin("create-account", "--role", role, "--name", name)
    client = httpx.Client(base_url=net.url, timeout=30)
    account = Account(role, name, str(made["account_id"]), str(made["api_key"]), client)
    response = client.post("/login", data={"api_key": account.api_key})
    assert response.status_code == 303, response.text
    home = client.get(response.headers["location"])
    assert home.status_code == 200, f"{role} home page: {home.status_code} {home.text[:500]}"
    found = _CSRF.search(home.text)
    assert found is not None, f"no csrf_token on the {role} home page"
    account.csrf_token = found.group(1)
    return account


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with network(tmp_path_factory.mktemp("authorization")) as net:
        tag = secrets.token_hex(3)
        me = {role: _log_in(net, role, f"{role}-me-{tag}") for role in ROLES}
        other = {role: _log_in(net, role, f"{role}-other-{tag}") for role in ROLES}
        try:
            yield World(net, me, other)
        finally:
            for account in (*me.values(), *other.values()):
                account.client.close()


# --- what every answer must be ----------------------------------------------------------------


def _route_id(route: ConsoleRoute) -> str:
    return route.path


def assert_console_answer(response: httpx.Response, status: int, what: str) -> None:
    assert response.status_code == status, (
        f"{what}: expected {status}, got {response.status_code}: {response.text[:300]}"
    )
    assert response.headers.get("cache-control") == "no-store", (
        f"{what}: a console answer must not be cached (cache-control:"
        f" {response.headers.get('cache-control')!r})"
    )
    if status in (401, 403, 404):
        assert response.headers["content-type"].startswith("text/html"), (
            f"{what}: refusals are HTML pages, got {response.headers['content-type']}"
        )


def post_form(
    client: httpx.Client, url: str, fields: Mapping[str, str], headers: Mapping[str, str] = {}
) -> httpx.Response:
    """POST ``fields`` as a browser sends a form (the content type even when it is empty)."""
    return client.post(
        url,
        content=urlencode(fields),
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )


def _placeholders(route: ConsoleRoute) -> dict[str, str]:
    return dict.fromkeys(route.params, "x")


def _values(world: World, route: ConsoleRoute, owner: Account) -> dict[str, str]:
    """Real ids of ``owner``'s object for the route's parameters (placeholders when the route
    is not about an owned object)."""
    entry = OBJECT_OWNERSHIP.get(route.path)
    if not isinstance(entry, Owned):
        return _placeholders(route)
    fields = world.object(entry.kind, owner).fields
    return {name: fields[entry.rename.get(name, name)] for name in route.params}


def _form(route: ConsoleRoute) -> dict[str, str]:
    entry = OBJECT_OWNERSHIP.get(route.path)
    return dict(entry.form) if isinstance(entry, Owned) else {}


# --- the sweep --------------------------------------------------------------------------------


def test_every_console_route_is_known_to_the_sweep() -> None:
    assert ROUTES, "the app has no console routes: the route table was not read"
    paths = {route.path for route in ROUTES}
    problems: list[str] = []
    for route in ROUTES:
        if route.role not in ROLES:
            problems.append(
                f"{route.path}: console pages live under /console/<role>, one of {ROLES}"
            )
        if not route.methods <= FORM_METHODS:
            problems.append(
                f"{route.path}: {sorted(route.methods - FORM_METHODS)}: console pages are"
                " GET pages and POST forms; this sweep checks nothing else"
            )
        entry = OBJECT_OWNERSHIP.get(route.path)
        if route.params and entry is None:
            problems.append(
                f"{route.path}: its path parameters {list(route.params)} name objects: add it"
                " to OBJECT_OWNERSHIP in tests/web/test_console_authorization.py, with the"
                " kind of object (a new kind gets a factory in KINDS), so that another"
                " account's object is checked to be not found"
            )
        if isinstance(entry, Owned):
            if entry.kind not in KINDS:
                problems.append(f"{route.path}: no kind {entry.kind!r} in KINDS")
                continue
            kind = KINDS[entry.kind]
            if kind.role != route.role:
                problems.append(f"{route.path}: {entry.kind} objects belong to {kind.role}s")
            missing = {entry.rename.get(p, p) for p in route.params} - kind.fields
            if missing:
                problems.append(
                    f"{route.path}: a {entry.kind} has no {sorted(missing)} (use rename)"
                )
    problems.extend(
        f"OBJECT_OWNERSHIP names {path}, which the app does not serve"
        for path in OBJECT_OWNERSHIP
        if path not in paths
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("route", GET_ROUTES, ids=_route_id)
def test_an_anonymous_visitor_is_sent_to_the_login_page(world: World, route: ConsoleRoute) -> None:
    url = route.url(_values(world, route, world.other[route.role]))
    with httpx.Client(base_url=world.net.url) as anonymous:
        response = anonymous.get(url)
    if route.fragment:
        assert_console_answer(response, 401, f"anonymous GET {url} (a live fragment)")
        return
    assert_console_answer(response, 303, f"anonymous GET {url}")
    assert response.headers["location"].startswith("/login?next=/console/")


@pytest.mark.parametrize("route", POST_ROUTES, ids=_route_id)
def test_an_anonymous_form_is_sent_to_the_login_page(world: World, route: ConsoleRoute) -> None:
    url = route.url(_values(world, route, world.other[route.role]))
    with httpx.Client(base_url=world.net.url) as anonymous:
        response = post_form(anonymous, url, _form(route) | {"csrf_token": "x"})
    assert_console_answer(response, 303, f"anonymous POST {url}")
    assert response.headers["location"].startswith("/login")


@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
def test_every_other_role_is_refused(world: World, route: ConsoleRoute) -> None:
    url = route.url(_values(world, route, world.other[route.role]))
    for role in ROLES:
        if role == route.role:
            continue
        intruder = world.me[role]
        if "GET" in route.methods:
            assert_console_answer(intruder.client.get(url), 403, f"{role} GET {url}")
        if "POST" in route.methods:
            # With the intruder's own valid CSRF token: the role alone refuses it.
            data = _form(route) | {"csrf_token": intruder.csrf_token}
            answer = post_form(intruder.client, url, data)
            assert_console_answer(answer, 403, f"{role} POST {url}")


@pytest.mark.parametrize("route", GET_ROUTES, ids=_route_id)
def test_the_routes_own_role_gets_the_page(world: World, route: ConsoleRoute) -> None:
    viewer = world.me[route.role]
    url = route.url(_values(world, route, viewer))
    assert_console_answer(viewer.client.get(url), 200, f"{route.role} GET {url} (its own)")


@pytest.mark.parametrize("route", POST_ROUTES, ids=_route_id)
def test_a_form_without_the_sessions_csrf_token_is_refused(
    world: World, route: ConsoleRoute
) -> None:
    viewer = world.me[route.role]
    url = route.url(_values(world, route, viewer))
    form = _form(route)
    missing = post_form(viewer.client, url, form)
    assert_console_answer(missing, 403, f"POST {url} without csrf_token")
    stolen = world.other[route.role].csrf_token  # another session's token is no token
    wrong = post_form(viewer.client, url, form | {"csrf_token": stolen})
    assert_console_answer(wrong, 403, f"POST {url} with another session's csrf_token")
    cross_site = post_form(
        viewer.client,
        url,
        form | {"csrf_token": viewer.csrf_token},
        headers={"origin": "https://evil.example"},
    )
    assert_console_answer(cross_site, 403, f"POST {url} from another site")


OWNED_ROUTES = [r for r in ROUTES if isinstance(OBJECT_OWNERSHIP.get(r.path), Owned)]


@pytest.mark.parametrize("route", OWNED_ROUTES, ids=_route_id)
def test_another_accounts_object_is_not_found(world: World, route: ConsoleRoute) -> None:
    viewer, owner = world.me[route.role], world.other[route.role]
    entry = OBJECT_OWNERSHIP[route.path]
    assert isinstance(entry, Owned)
    theirs = world.object(entry.kind, owner)
    mine, their_values = _values(world, route, viewer), _values(world, route, owner)
    # All their ids, and each of their ids alone among the viewer's own.
    tries = [their_values] + [
        mine | {name: their_values[name]} for name in route.params if len(route.params) > 1
    ]
    for values in tries:
        url = route.url(values)
        answers = []
        if "GET" in route.methods:
            answers.append(("GET", viewer.client.get(url)))
        if "POST" in route.methods:
            data = _form(route) | {"csrf_token": viewer.csrf_token}
            answers.append(("POST", post_form(viewer.client, url, data)))
        for method, answer in answers:
            assert_console_answer(answer, 404, f"{method} {url}: another {route.role}'s object")
            leaked = [secret for secret in theirs.secrets if secret in answer.text]
            assert not leaked, f"{method} {url} shows the other account's {leaked}"
    # The owner still has the object and reaches it (the 404s were not a broken id).
    if "GET" in route.methods:
        own = owner.client.get(route.url(their_values))
        assert_console_answer(own, 200, f"the owner's GET {route.url(their_values)}")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_owned_object_can_be_made_for_each_account(world: World, kind: str) -> None:
    """The factories work even for kinds no route uses today (a route may use them later)."""
    role = KINDS[kind].role
    mine, theirs = world.object(kind, world.me[role]), world.object(kind, world.other[role])
    assert all(mine.fields[name] != theirs.fields[name] for name in KINDS[kind].fields)
    assert world.other[role].name in theirs.secrets


def test_console_redirects_each_role_to_its_own_home(world: World) -> None:
    with httpx.Client(base_url=world.net.url) as anonymous:
        assert anonymous.get("/console").headers["location"] == "/login"
    for role, account in world.me.items():
        response = account.client.get("/console")
        assert (response.status_code, response.headers["location"]) == (303, f"/console/{role}")


def _set_cookie(response: httpx.Response) -> dict[str, str]:
    (header,) = [h for h in response.headers.get_list("set-cookie") if "shareai_console=" in h]
    name_value, *attributes = (part.strip() for part in header.split(";"))
    parsed = {"value": name_value.partition("=")[2]}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        parsed[key.lower()] = value
    return parsed


def test_the_session_cookie_is_httponly_samesite_lax_and_secure_behind_https(
    world: World,
) -> None:
    key = world.me["customer"].api_key
    with httpx.Client(base_url=world.net.url) as browser:
        plain = _set_cookie(browser.post("/login", data={"api_key": key}))
    assert "httponly" in plain
    assert plain["samesite"].lower() == "lax"
    assert plain["path"] == "/"
    assert 0 < int(plain["max-age"]) <= 12 * 3600
    assert "secure" not in plain  # plain HTTP on loopback: a Secure cookie would never return
    assert key not in plain["value"]
    with httpx.Client(base_url=world.net.url) as browser:
        proxied = browser.post(
            "/login", data={"api_key": key}, headers={"x-forwarded-proto": "https"}
        )
        assert "secure" in _set_cookie(proxied)
